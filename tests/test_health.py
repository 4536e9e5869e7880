"""HealthMonitor and flap detection: the pure state machines on sequences, then the agent
over the real bus + outbox relay + SQLite store."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from agents import flapping
from agents.clock import FakeClock
from agents.events import PROJECT_FLAPPING, PROJECT_STATUS_CHANGED, Event
from agents.health import HealthMonitor, HealthState, step
from agents.probe_result import Level, ProbeResult
from bot.config import Project
from tests.support import Stack, make_project

P, W, F = Level.PASS, Level.WARN, Level.FAIL
T0 = FakeClock().now()


def probe(
    level: Level, reason: str = "", *, project: str = "email-blast", **kw: Any
) -> ProbeResult:
    if level is not Level.PASS and not reason:
        reason = "GET /health: connection refused" if level is Level.FAIL else "queue deep"
    return ProbeResult(project, kw.pop("ts", T0), level, kw.pop("latency_ms", 12.5), reason, **kw)


def run(
    levels: list[Level], state: HealthState | None = None, *, ft: int = 3, st: int = 2
) -> tuple[HealthState, list[tuple[int, str, str]]]:
    """Feed levels to ``step``; return the final state and (index, from, to) transitions."""
    state = state or HealthState()
    changes = []
    for i, level in enumerate(levels):
        state, change = step(state, probe(level), failure_threshold=ft, success_threshold=st)
        if change is not None:
            changes.append((i, change.old, change.new))
    return state, changes


HEALTHY = HealthState(status="healthy", last=P, same=5, goods=5)


# -- the pure state machine -------------------------------------------------------------
def test_two_fails_then_success_is_no_transition() -> None:
    state, changes = run([F, F, P], HEALTHY)
    assert changes == []
    assert state.status == "healthy" and state.fails == 0


def test_three_fails_make_exactly_one_down() -> None:
    state, changes = run([F, F, F, F, F], HEALTHY)
    assert changes == [(2, "healthy", "down")]
    assert state.fails == 5


def test_down_needs_two_consecutive_good_probes() -> None:
    down, _ = run([F, F, F], HEALTHY)
    assert run([P], down)[1] == []
    assert run([P, F, P], down)[1] == []  # the fail broke the streak
    assert run([P, P], down)[1] == [(1, "down", "healthy")]
    assert run([P, W], down)[1] == [(1, "down", "degraded")]  # the deciding probe's level
    assert run([W, W], down)[1] == [(1, "down", "degraded")]


def test_healthy_degraded_hysteresis() -> None:
    assert run([W], HEALTHY)[1] == []
    assert run([W, P, W], HEALTHY)[1] == []
    assert run([W, F, W], HEALTHY)[1] == []  # a fail in between breaks the warn streak
    degraded, changes = run([W, W, W], HEALTHY)
    assert changes == [(1, "healthy", "degraded")]
    assert run([P], degraded)[1] == []
    assert run([P, W, P], degraded)[1] == []
    assert run([P, P], degraded)[1] == [(1, "degraded", "healthy")]


def test_unknown_decides_at_the_first_good_probe() -> None:
    assert run([P])[1] == [(0, "unknown", "healthy")]
    assert run([W])[1] == [(0, "unknown", "degraded")]
    state, changes = run([F, F])
    assert changes == [] and state.status == "unknown"
    assert run([F, F, F])[1] == [(2, "unknown", "down")]


def test_thresholds_come_from_the_arguments() -> None:
    assert run([F], HEALTHY, ft=1)[1] == [(0, "healthy", "down")]
    down, _ = run([F], HEALTHY, ft=1)
    assert run([P], down, st=1)[1] == [(0, "down", "healthy")]
    assert run([P, P, P], down, st=4)[1] == []


# -- flap detection ---------------------------------------------------------------------
def flap_run(levels: list[Level], window: int = 21) -> tuple[flapping.FlapState, list[Any]]:
    state = flapping.FlapState()
    edges = []
    for i, level in enumerate(levels):
        state, edge = flapping.step(state, level, window=window, start=0.20, stop=0.05)
        if edge is not None:
            edges.append((i + 1, edge))
    return state, edges


def test_percent_state_change_weights() -> None:
    pct = flapping.percent_state_change
    assert pct((P, P), 21) == 0.0
    assert pct((P, F), 21) == pytest.approx(1.2 / 20)  # newest slot weighs 1.2
    assert pct((P, F) * 11, 21) == pytest.approx(1.0)  # every slot changes: 100 %
    oldest_only = (P, F, *([F] * 19))
    assert pct(oldest_only, 21) == pytest.approx(0.8 / 20)  # oldest slot weighs 0.8
    assert pct((F, *([P] * 21)), 21) == 0.0  # older than the window: forgotten
    assert pct((P, W, F), 3) == pytest.approx((0.8 + 1.2) / 2)


def test_alternating_sequence_starts_and_stops_flapping_exactly_once() -> None:
    alternating = [P if i % 2 == 0 else F for i in range(30)]
    state, edges = flap_run([*alternating, *([P] * 25)])
    # 4 changes weigh 1.2+1.179+1.158+1.137 = 4.67 → 23.4 % at the 5th probe (≥ 20 %);
    # after the last change (probe 31) it takes until that change is the oldest in the
    # window (probe 50: 0.8 / 20 = 4 % ≤ 5 %) to stop.
    assert edges == [(5, True), (50, False)]
    assert not state.flapping and state.percent == 0.0


def test_steady_or_single_outage_never_flaps() -> None:
    for levels in ([P] * 60, [F] * 60, [W] * 60, [P] * 10 + [F] * 5 + [P] * 30):
        assert flap_run(levels)[1] == []


# -- the agent over the real bus, relay and store -----------------------------------------
async def feed(
    monitor: HealthMonitor, project: Project, clock: FakeClock, levels: list[Level]
) -> list[Event]:
    """One probe per second (the recheck pace), as the scheduler would."""
    out = []
    for level in levels:
        out.extend(await monitor.observe(probe(level, ts=clock.now()), project))
        await clock.advance(1)
    return out


async def test_three_fails_publish_exactly_one_down_event(stack: Stack) -> None:
    project = make_project()
    monitor = HealthMonitor(stack.relay, stack.clock)
    await feed(monitor, project, stack.clock, [P, F, F])
    await stack.settle()
    assert [e.payload["to"] for e in stack.of_type(PROJECT_STATUS_CHANGED)] == ["healthy"]

    decisive = probe(F, ts=stack.clock.now(), http_status=503, latency_ms=4.25)
    emitted = await monitor.observe(decisive, project)
    await feed(monitor, project, stack.clock, [F, F])
    await stack.settle()
    changes = stack.of_type(PROJECT_STATUS_CHANGED)
    assert len(changes) == 2 and [e.id for e in emitted] == [changes[1].id]
    down = changes[1]
    assert (down.source, down.project, down.ts) == ("health-monitor", "email-blast", decisive.ts)
    assert down.payload == {
        "from": "healthy",
        "to": "down",
        "reason": "GET /health: connection refused",
        "probe": {
            "level": "fail",
            "latency_ms": 4.25,
            "http_status": 503,
            "reason": "GET /health: connection refused",
            "ts": decisive.ts.isoformat(),
        },
    }
    assert monitor.status("email-blast") == "down"
    assert monitor.statuses() == {"email-blast": "down"}


async def test_recovery_needs_two_good_probes(stack: Stack) -> None:
    project = make_project()
    monitor = HealthMonitor(stack.relay, stack.clock)
    await feed(monitor, project, stack.clock, [F, F, F, P])
    await stack.settle()
    assert [(e.payload["from"], e.payload["to"]) for e in stack.seen] == [("unknown", "down")]
    assert monitor.status("email-blast") == "down"
    await feed(monitor, project, stack.clock, [P])
    await stack.settle()
    changes = stack.of_type(PROJECT_STATUS_CHANGED)
    assert [(e.payload["from"], e.payload["to"]) for e in changes] == [
        ("unknown", "down"),
        ("down", "healthy"),
    ]
    assert changes[1].payload["reason"] == "2 good probes"
    assert changes[1].payload["probe"]["level"] == "pass"


async def test_warn_hysteresis_and_reasons(stack: Stack) -> None:
    project = make_project()
    monitor = HealthMonitor(stack.relay, stack.clock)
    await feed(monitor, project, stack.clock, [P, W, P, W, W, W, P, P])
    await stack.settle()
    changes = [
        (e.payload["from"], e.payload["to"], e.payload["reason"])
        for e in stack.of_type(PROJECT_STATUS_CHANGED)
    ]
    assert changes == [
        ("unknown", "healthy", "first probe passed"),
        ("healthy", "degraded", "queue deep"),
        ("degraded", "healthy", "2 pass probes"),
    ]


async def test_needs_recheck_while_a_failure_is_unconfirmed(stack: Stack) -> None:
    project = make_project()
    monitor = HealthMonitor(stack.relay, stack.clock)
    assert monitor.needs_recheck("email-blast") is False  # never probed
    await feed(monitor, project, stack.clock, [F])
    assert monitor.needs_recheck("email-blast") is True  # unknown, first failure
    expected = [False, True, True, False, False, False, False, False]
    observed = []
    for level in [P, F, F, F, F, P, P, P]:
        await feed(monitor, project, stack.clock, [level])
        observed.append(monitor.needs_recheck("email-blast"))
    assert observed == expected  # down is confirmed: back to the normal interval


async def test_flapping_is_announced_on_edges_and_transitions_still_reported(
    stack: Stack,
) -> None:
    # With 1/1 thresholds every alternation is a real transition, so both streams show.
    project = make_project(failure_threshold=1, success_threshold=1)
    monitor = HealthMonitor(stack.relay, stack.clock)
    alternating = [P if i % 2 == 0 else F for i in range(30)]
    await feed(monitor, project, stack.clock, alternating[:4])
    assert not monitor.is_flapping("email-blast")
    await feed(monitor, project, stack.clock, alternating[4:])
    assert monitor.is_flapping("email-blast")
    assert monitor.flap_percent("email-blast") == pytest.approx(1.0)
    await feed(monitor, project, stack.clock, [P] * 25)
    await stack.settle()
    flaps = stack.of_type(PROJECT_FLAPPING)
    assert [e.payload for e in flaps] == [{"started": True}, {"started": False}]
    assert all(e.source == "health-monitor" and e.project == "email-blast" for e in flaps)
    # unknown→healthy, 29 flips, and the first of the steady passes ends on healthy
    assert len(stack.of_type(PROJECT_STATUS_CHANGED)) == 31
    assert not monitor.is_flapping("email-blast")
    # The status change of the 5th probe is published before its flapping edge.
    fifth = [e for e in stack.seen if e.ts == stack.seen[0].ts + _seconds(4)]
    assert [e.type for e in fifth] == [PROJECT_STATUS_CHANGED, PROJECT_FLAPPING]


async def test_steady_fleet_never_flaps(stack: Stack) -> None:
    project = make_project()
    monitor = HealthMonitor(stack.relay, stack.clock)
    await feed(monitor, project, stack.clock, [P] * 30 + [F] * 10 + [P] * 30)
    await stack.settle()
    assert stack.of_type(PROJECT_FLAPPING) == []
    assert [e.payload["to"] for e in stack.seen] == ["healthy", "down", "healthy"]


async def test_restore_and_forget(stack: Stack) -> None:
    project = make_project()
    monitor = HealthMonitor(stack.relay, stack.clock)
    monitor.restore("email-blast", "down")  # e.g. an incident was open at start-up
    await feed(monitor, project, stack.clock, [P])
    assert monitor.status("email-blast") == "down"
    await feed(monitor, project, stack.clock, [P])
    await stack.settle()
    assert [(e.payload["from"], e.payload["to"]) for e in stack.seen] == [("down", "healthy")]
    with pytest.raises(ValueError):
        monitor.restore("email-blast", "sideways")

    monitor.forget("email-blast")
    assert monitor.status("email-blast") == "unknown"
    assert monitor.statuses() == {}
    assert not monitor.is_flapping("email-blast")


async def test_a_failed_emit_leaves_the_state_for_the_next_probe(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project()
    monitor = HealthMonitor(stack.relay, stack.clock)
    await feed(monitor, project, stack.clock, [P, F, F])

    async def store_away(events: Any) -> None:
        raise ConnectionError("store away")

    with monkeypatch.context() as patch:
        patch.setattr(stack.relay, "emit", store_away)
        with pytest.raises(ConnectionError):
            await feed(monitor, project, stack.clock, [F])
    assert monitor.status("email-blast") == "healthy"  # not half-announced
    await feed(monitor, project, stack.clock, [F])
    await stack.settle()
    assert [e.payload["to"] for e in stack.seen] == ["healthy", "down"]


def _seconds(n: float) -> timedelta:
    return timedelta(seconds=n)
