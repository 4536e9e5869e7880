"""MetricsAnalyzer: classification and the two-edged hysteresis as a pure state machine,
then the agent's events over the real bus + outbox relay + SQLite store."""

from __future__ import annotations

import pytest

from agents.clock import FakeClock
from agents.events import METRIC_ANOMALY, METRIC_RECOVERED, Event
from agents.metrics_analyzer import MetricsAnalyzer, MetricState, classify, step
from agents.probe_result import Level, ProbeResult
from bot.config import Project, Threshold
from tests.support import Stack, make_project

ERR = Threshold(warn=0.05, crit=0.20)  # the default error_rate threshold


def levels(
    values: list[float], threshold: Threshold = ERR, state: MetricState | None = None
) -> list[str]:
    """The level after each sample."""
    state = state or MetricState()
    out = []
    for value in values:
        state = step(state, value, threshold, open_after=3, close_after=2)
        out.append(state.level)
    return out


# -- the pure parts ---------------------------------------------------------------------
def test_classify_is_strict_in_both_directions() -> None:
    assert [classify(v, ERR) for v in (0.0, 0.05, 0.0501, 0.20, 0.2001)] == [
        "none",
        "none",  # exactly at the limit is still acceptable ("above 5 %" is the problem)
        "warn",
        "warn",
        "crit",
    ]
    low = Threshold(warn=10, crit=2, direction="below")
    assert [classify(v, low) for v in (50, 10, 9.9, 2, 1.9)] == [
        "none",
        "none",
        "warn",
        "warn",
        "crit",
    ]
    assert [classify(v, Threshold(crit=90)) for v in (89, 91)] == ["none", "crit"]
    assert [classify(v, Threshold(warn=80)) for v in (79, 99)] == ["none", "warn"]


def test_raising_needs_three_samples_at_or_beyond_the_new_level() -> None:
    assert levels([0.1, 0.1, 0.01]) == ["none"] * 3
    assert levels([0.1, 0.1, 0.01, 0.1, 0.1, 0.1]) == ["none"] * 5 + ["warn"]
    # crit samples count toward warn too; crit itself needs its own three
    assert levels([0.5, 0.5, 0.5]) == ["none", "none", "crit"]
    assert levels([0.1, 0.5, 0.5, 0.5]) == ["none", "none", "warn", "crit"]
    assert levels([0.1, 0.1, 0.1, 0.5, 0.1, 0.5, 0.5]) == ["none"] * 2 + ["warn"] * 5


def test_lowering_needs_two_samples_below_the_current_level() -> None:
    crit = MetricState()
    for _ in range(3):
        crit = step(crit, 0.5, ERR, open_after=3, close_after=2)
    assert crit.level == "crit"
    assert levels([0.01], state=crit) == ["crit"]
    assert levels([0.01, 0.5, 0.01], state=crit) == ["crit"] * 3
    assert levels([0.01, 0.01], state=crit) == ["crit", "none"]  # straight down
    assert levels([0.1, 0.1, 0.01, 0.01], state=crit) == ["crit", "warn", "warn", "none"]
    assert levels([0.1, 0.01], state=crit) == ["crit", "warn"]  # both below crit


def test_a_level_removed_from_the_threshold_no_longer_holds() -> None:
    warn = MetricState()
    for _ in range(3):
        warn = step(warn, 0.1, ERR, open_after=3, close_after=2)
    assert warn.level == "warn"
    assert step(warn, 0.1, Threshold(crit=0.2), open_after=3, close_after=2).level == "none"


# -- the agent over the real bus, relay and store -----------------------------------------
async def feed(
    analyzer: MetricsAnalyzer,
    project: Project,
    clock: FakeClock,
    samples: list[dict[str, float]],
    level: Level = Level.PASS,
) -> list[Event]:
    out = []
    for metrics in samples:
        result = ProbeResult(project.name, clock.now(), level, 10.0, metrics=metrics)
        out.extend(await analyzer.observe(result, project))
        await clock.advance(10)
    return out


def err(*values: float) -> list[dict[str, float]]:
    return [{"error_rate": v} for v in values]


async def test_error_rate_life_with_exact_events(stack: Stack) -> None:
    project = make_project("chatbot")
    analyzer = MetricsAnalyzer(stack.relay, stack.clock)
    assert await feed(analyzer, project, stack.clock, err(0.1, 0.1, 0.01)) == []
    assert await feed(analyzer, project, stack.clock, err(0.08, 0.09)) == []
    opened_at = stack.clock.now()
    await feed(analyzer, project, stack.clock, err(0.12))  # third in a row
    assert analyzer.level("chatbot", "error_rate") == "warn"
    await feed(analyzer, project, stack.clock, err(0.3, 0.3))
    assert analyzer.level("chatbot", "error_rate") == "warn"
    await feed(analyzer, project, stack.clock, err(0.35))
    assert analyzer.anomalies() == {("chatbot", "error_rate"): "crit"}
    await feed(analyzer, project, stack.clock, err(0.01))  # one under: still crit
    assert analyzer.level("chatbot", "error_rate") == "crit"
    await feed(analyzer, project, stack.clock, err(0.02, 0.01))
    await stack.settle()

    assert [(e.type, e.payload) for e in stack.seen] == [
        (
            METRIC_ANOMALY,
            {"metric": "error_rate", "value": 0.12, "threshold": 0.05, "level": "warn"},
        ),
        (
            METRIC_ANOMALY,
            {"metric": "error_rate", "value": 0.35, "threshold": 0.2, "level": "crit"},
        ),
        (METRIC_RECOVERED, {"metric": "error_rate", "value": 0.02}),
    ]
    assert all(e.source == "metrics-analyzer" and e.project == "chatbot" for e in stack.seen)
    assert stack.seen[0].ts == opened_at
    assert analyzer.anomalies() == {}


async def test_crit_steps_down_to_warn(stack: Stack) -> None:
    project = make_project("chatbot")
    analyzer = MetricsAnalyzer(stack.relay, stack.clock)
    await feed(analyzer, project, stack.clock, err(0.5, 0.5, 0.5, 0.1, 0.1, 0.1))
    await stack.settle()
    assert [(e.type, e.payload["level"]) for e in stack.seen] == [
        (METRIC_ANOMALY, "crit"),
        (METRIC_ANOMALY, "warn"),
    ]
    assert stack.seen[1].payload["threshold"] == 0.05


async def test_direction_below(stack: Stack) -> None:
    rps = {"warn": 10, "crit": 2, "direction": "below"}
    project = make_project("chatbot", thresholds={"requests_per_second": rps})
    analyzer = MetricsAnalyzer(stack.relay, stack.clock)
    samples = [{"requests_per_second": v} for v in (50, 5, 1, 1.5, 1, 40, 30)]
    await feed(analyzer, project, stack.clock, samples)
    await stack.settle()
    assert [(e.type, e.payload) for e in stack.seen] == [
        (
            METRIC_ANOMALY,
            {"metric": "requests_per_second", "value": 1.5, "threshold": 10, "level": "warn"},
        ),
        (
            METRIC_ANOMALY,
            {"metric": "requests_per_second", "value": 1, "threshold": 2, "level": "crit"},
        ),
        (METRIC_RECOVERED, {"metric": "requests_per_second", "value": 30}),
    ]


async def test_missing_metrics_count_neither_way(stack: Stack) -> None:
    project = make_project("chatbot")
    analyzer = MetricsAnalyzer(stack.relay, stack.clock)
    gaps = [{"error_rate": 0.1}, {}, {"cpu_percent": 10.0}, {"error_rate": 0.1}]
    await feed(analyzer, project, stack.clock, gaps)
    await feed(analyzer, project, stack.clock, [{}], level=Level.FAIL)  # a dead service
    await feed(analyzer, project, stack.clock, [{"error_rate": float("nan")}])  # garbage
    assert analyzer.level("chatbot", "error_rate") == "none"
    await feed(analyzer, project, stack.clock, err(0.1))  # third real sample
    await feed(analyzer, project, stack.clock, [{}, {}, {}, {"error_rate": 0.0}])
    await stack.settle()
    assert [e.type for e in stack.seen] == [METRIC_ANOMALY]  # one sample under: still open
    assert analyzer.level("chatbot", "error_rate") == "warn"


async def test_unconfigured_metrics_and_exact_limits_are_ignored(stack: Stack) -> None:
    project = make_project("chatbot")  # default thresholds: error_rate, memory_percent, cpu_percent
    analyzer = MetricsAnalyzer(stack.relay, stack.clock)
    samples = [{"queue_depth": 1e9, "error_rate": 0.05, "memory_percent": 85.0}] * 5
    assert await feed(analyzer, project, stack.clock, samples) == []


async def test_a_fail_probe_with_metrics_still_counts(stack: Stack) -> None:
    project = make_project("chatbot")
    analyzer = MetricsAnalyzer(stack.relay, stack.clock)
    events = await feed(analyzer, project, stack.clock, err(0.1, 0.1, 0.1), level=Level.FAIL)
    assert [e.type for e in events] == [METRIC_ANOMALY]


async def test_several_metrics_are_independent_and_forget_drops_them(stack: Stack) -> None:
    project = make_project("chatbot")
    analyzer = MetricsAnalyzer(stack.relay, stack.clock)
    hot = {"cpu_percent": 99.0, "memory_percent": 90.0, "error_rate": 0.0}
    await feed(analyzer, project, stack.clock, [hot] * 3)
    await stack.settle()
    assert sorted((e.payload["metric"], e.payload["level"]) for e in stack.seen) == [
        ("cpu_percent", "crit"),
        ("memory_percent", "warn"),
    ]
    analyzer.forget("chatbot")
    assert analyzer.anomalies() == {} and analyzer.level("chatbot", "cpu_percent") == "none"


async def test_restore_seeds_a_level_silently(stack: Stack) -> None:
    project = make_project("chatbot")
    analyzer = MetricsAnalyzer(stack.relay, stack.clock)
    analyzer.restore("chatbot", "error_rate", "crit")
    assert analyzer.anomalies("chatbot") == {("chatbot", "error_rate"): "crit"}
    assert await feed(analyzer, project, stack.clock, err(0.3)) == []
    events = await feed(analyzer, project, stack.clock, err(0.0, 0.0))
    assert [(e.type, e.payload) for e in events] == [
        (METRIC_RECOVERED, {"metric": "error_rate", "value": 0.0})
    ]
    with pytest.raises(ValueError):
        analyzer.restore("chatbot", "error_rate", "purple")
