"""What orch's own probes did: counters and a latency histogram for Prometheus, and a
short window of recent probes for the contract's JSON numbers (rate, error share, p95).

``observe`` runs once per probe (``Runtime.result_listeners``), up to ~1000 times a
second at 5,000 projects, so it only adds to plain numbers and appends one tuple to a
bounded deque; ``collect`` turns the numbers into Prometheus families at scrape time
(prometheus_client's own Counter and Histogram take a thread lock on every update,
which showed in the per-probe profile).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from agents.probe_result import Level, ProbeResult

# Seconds; from a loopback answer (~1 ms) to the default 5 s probe timeout and past it.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
WINDOW_S = 60.0  # "recently", for the JSON numbers
# Bounds the memory of the window: at 5,000 projects polled every 10 s (500 probes/s) it
# still covers the full minute; beyond that the window shortens (and says so: ``span``).
WINDOW_CAPACITY = 50_000


@dataclass(frozen=True, slots=True)
class RecentProbes:
    """The probes of the last ``span_s`` seconds, summarised."""

    count: int
    failed: int
    span_s: float
    latency_p95_ms: float

    @property
    def per_second(self) -> float:
        return self.count / self.span_s if self.span_s > 0 else 0.0

    @property
    def error_rate(self) -> float:
        return self.failed / self.count if self.count else 0.0


class ProbeInstruments:
    """Counts probes by result and their latencies; registered as a custom collector."""

    def __init__(
        self,
        registry: CollectorRegistry,
        monotonic: Callable[[], float],
        *,
        window_s: float = WINDOW_S,
        capacity: int = WINDOW_CAPACITY,
    ) -> None:
        self._by_level = dict.fromkeys(Level, 0)
        # Per bucket (the last is +Inf), not yet cumulative: an observation adds to one.
        self._buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self._latency_sum = 0.0
        self._monotonic = monotonic
        self._window_s = window_s
        self._started = monotonic()
        # (monotonic time, latency ms, failed): appended per probe, pruned when read.
        self._recent: deque[tuple[float, float, bool]] = deque(maxlen=capacity)
        registry.register(self)

    def observe(self, result: ProbeResult) -> None:
        level = result.level
        self._by_level[level] += 1
        latency_ms = result.latency_ms
        seconds = latency_ms / 1000.0
        # A bucket counts latencies up to and including its bound ("le").
        self._buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self._latency_sum += seconds
        self._recent.append((self._monotonic(), latency_ms, level is Level.FAIL))

    def collect(self) -> Iterator[Metric]:
        results = CounterMetricFamily(
            "orch_probes", "Probes made by this process, by result", labels=["result"]
        )
        for level, count in self._by_level.items():
            results.add_metric([level.value], count)
        yield results
        cumulative, buckets = 0, []
        for bound, count in zip((*LATENCY_BUCKETS, math.inf), self._buckets, strict=True):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))
        yield HistogramMetricFamily(
            "orch_probe_latency_seconds",
            "Probe latency (request to last body byte; the timeout for one that hung)",
            buckets=buckets,
            sum_value=self._latency_sum,
        )

    def recent(self) -> RecentProbes:
        now = self._monotonic()
        recent = self._recent
        horizon = now - self._window_s
        while recent and recent[0][0] < horizon:
            recent.popleft()
        if len(recent) == recent.maxlen:
            span = now - recent[0][0]  # the deque is full: it holds less than the window
        else:
            span = min(self._window_s, now - self._started)
        latencies = sorted(r[1] for r in recent)
        failed = sum(1 for r in recent if r[2])
        return RecentProbes(len(recent), failed, span, percentile(latencies, 95))


def percentile(ordered: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list; 0.0 for an empty one."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]
