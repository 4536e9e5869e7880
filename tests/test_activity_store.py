"""``storage.activity_store`` on every backend of the contract suite: what the dashboard
and ``GET /api/v1/projects`` / ``/agents`` read for the whole fleet at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agents.events import REMEDIATION_SUSPENDED, Event
from storage.base import ProbeRecord, Store
from storage.budget_store import Suspension
from tests.test_rollups import steady
from tests.test_store_contract import BACKENDS, opened_on

pytestmark = pytest.mark.timeout(60)

T = datetime(2026, 3, 2, tzinfo=UTC)  # an hour boundary
HOUR = timedelta(hours=1)


@pytest.fixture(params=sorted(BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with opened_on(request.param, tmp_path) as opened:
        yield opened


def probe(project: str, at: datetime, level: str = "pass", latency: float = 10.0) -> ProbeRecord:
    return ProbeRecord(project, at, level, latency)


async def _per_hour(
    store: Store, names: list[str], hours: list[datetime], until: datetime
) -> dict[str, list[tuple[datetime, float | None]]]:
    """What ``uptime`` answers for each hour alone: the definition uptime_hours follows."""
    out: dict[str, list[tuple[datetime, float | None]]] = {n: [] for n in names}
    for h in hours:
        answered = await store.uptime(names, h, min(h + HOUR, until))
        for n in names:
            out[n].append((h, answered.get(n)))
    return out


async def test_uptime_hours_mixes_rolled_up_dirty_and_current_hours(store: Store) -> None:
    # a: 3 whole hours, every 10th probe failed; b: the last hour and a half only.
    await store.add_probes(
        steady("a", T, 3, fail_every=10) + steady("b", T + timedelta(minutes=90), 2)
    )
    until = T + timedelta(hours=3, minutes=30)  # the current hour is half over
    await store.rollup_hours(T + 2 * HOUR)  # hours 0 and 1 rolled up; hour 2 and 3 not
    # A late probe makes rolled-up hour 1 dirty again: it must come from raw rows now.
    await store.add_probes([probe("a", T + HOUR + timedelta(seconds=5), "fail")])
    names = ["a", "b", "never"]
    got = await store.uptime_hours(names, T + timedelta(minutes=20), until)
    hours = [T + i * HOUR for i in range(4)]
    assert [h for h, _ in got["a"]] == hours  # first_hour is floored; the current one last
    assert got == await _per_hour(store, names, hours, until)
    assert got["never"] == [(h, None) for h in hours]
    assert [u for _, u in got["b"]][:1] == [None]  # b was not probed in hour 0
    assert got["a"][0][1] == pytest.approx(90.0)


async def test_uptime_hours_edges(store: Store) -> None:
    await store.add_probes(steady("a", T, 1))
    assert await store.uptime_hours([], T, T + HOUR) == {}
    assert await store.uptime_hours(["a"], T, T) == {"a": []}
    # until exactly on an hour: that hour is not in the window
    got = await store.uptime_hours(["a"], T, T + HOUR)
    assert got == {"a": [(T, 100.0)]}
    await store.rollup_hours(T + 2 * HOUR)
    assert await store.uptime_hours(["a"], T - HOUR, T + 2 * HOUR) == {
        "a": [(T - HOUR, None), (T, 100.0), (T + HOUR, None)]
    }
    with pytest.raises(ValueError, match="naive"):
        await store.uptime_hours(["a"], T.replace(tzinfo=None), T + HOUR)


async def test_last_probes_is_each_projects_newest(store: Store) -> None:
    await store.add_probes([
        probe("a", T, latency=11.0), probe("a", T + timedelta(seconds=10), "fail", 5000.0),
        probe("b", T + timedelta(seconds=3), latency=42.5), probe("c", T, latency=1.0),
    ])  # fmt: skip
    got = await store.last_probes(["a", "b", "never"])
    assert sorted(got) == ["a", "b"]
    assert (got["a"].ts, got["a"].level, got["a"].latency_ms) == (
        T + timedelta(seconds=10), "fail", 5000.0)  # fmt: skip
    assert got["b"].latency_ms == 42.5 and got["b"].ts == T + timedelta(seconds=3)
    assert await store.last_probes([]) == {}


async def test_event_activity_counts_per_source_since(store: Store) -> None:
    def ev(source: str, minutes: float) -> Event:
        return Event("project.status_changed", T + timedelta(minutes=minutes), source)

    await store.append_events([ev("health-monitor", m) for m in (0, 1, 2, 3)]
                              + [ev("incidents", 2.5), ev("executor", -30)])  # fmt: skip
    got = await store.event_activity(T + timedelta(minutes=1))
    assert [(a.source, a.events, a.last_at) for a in got] == [
        ("health-monitor", 3, T + timedelta(minutes=3)),
        ("incidents", 1, T + timedelta(minutes=2.5)),
    ]
    assert await store.event_activity(T + HOUR) == []


def _suspended(row: Suspension) -> Event:
    return Event(REMEDIATION_SUSPENDED, row.since, "test", {"reason": row.reason}, row.project)


async def test_active_suspensions_lists_those_in_force(store: Store) -> None:
    await store.suspend_remediation("b", "budget_exhausted", "auto-fixer", _suspended)
    await store.suspend_remediation("a", "paused", "U0OPS", _suspended, for_s=600)
    now = datetime.now(UTC)
    assert [(s.project, s.reason, s.by) for s in await store.active_suspensions()] == [
        ("a", "paused", "U0OPS"), ("b", "budget_exhausted", "auto-fixer"),
    ]  # fmt: skip
    later = await store.active_suspensions(now + timedelta(hours=1))
    assert [s.project for s in later] == ["b"]  # a's ran out
    assert await store.active_suspensions(now - timedelta(hours=1)) == []  # not yet
    await store.resume_remediation("b")
    assert [s.project for s in await store.active_suspensions()] == ["a"]


async def test_last_job_runs_per_job(store: Store) -> None:
    before = datetime.now(UTC) - timedelta(minutes=5)
    for job, key in (("rollup", "h1"), ("rollup", "h2"), ("digest", "2026-03-02")):
        assert await store.claim_job_run(job, key, "r1")
    got = await store.last_job_runs(before)
    assert sorted(got) == ["digest", "rollup"]
    assert all(before < when <= datetime.now(UTC) + timedelta(seconds=5) for when in got.values())
    assert await store.last_job_runs(datetime.now(UTC) + timedelta(hours=1)) == {}
