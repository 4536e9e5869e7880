"""orch's own telemetry, one per Runtime: a private ``CollectorRegistry`` (so tests and
several runtimes in one process never share or collide on a metric) holding the probe
instruments, the scrape-time collector and the process's CPU and memory, and the two
answers ``GET /metrics`` gives: the contract's JSON numbers and the Prometheus text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, ProcessCollector, generate_latest

from bot.telemetry.collector import RuntimeCollector
from bot.telemetry.probes import ProbeInstruments, percentile
from bot.telemetry.process import ProcessMeter
from orch_kit import prometheus

if TYPE_CHECKING:
    from bot.runtime import Runtime

HEARTBEAT_RESULTS = ("sent", "failed", "skipped")


class Telemetry:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total & co (Linux)
        self.probes = ProbeInstruments(self.registry, runtime.clock.monotonic)
        self.collector = RuntimeCollector(runtime)
        self.registry.register(self.collector)
        self.process = ProcessMeter()
        heartbeats = Counter(
            "orch_heartbeats",
            "Heartbeats to the dead-man switch: sent, failed, or skipped while unhealthy",
            ["result"],
            registry=self.registry,
        )
        self.heartbeats = {result: heartbeats.labels(result) for result in HEARTBEAT_RESULTS}

    async def contract_numbers(self) -> dict[str, float]:
        """The contract's five numbers about orch itself (a parent orch watches it like any
        project: a probe is a request, a FAIL an error), then orch's own."""
        snap = await self.collector.refresh()
        recent = self.probes.recent()
        lateness = self.collector.lateness_samples()
        numbers: dict[str, float] = {
            "cpu_percent": self.process.cpu_percent(),
            "memory_percent": self.process.memory_percent(),
            "error_rate": round(recent.error_rate, 4),
            "requests_per_second": round(recent.per_second, 3),
            "latency_p95_ms": round(recent.latency_p95_ms, 2),
            "probes_recent": recent.count,
            "projects_polled": len(self._runtime.monitor.projects) if self._runtime.monitor else 0,
            "schedule_lateness_p99_ms": round(percentile(lateness, 99) * 1000.0, 2),
            "dead_letters": self.collector.dead_letters,
            "bus_queued": sum(c.get("queued", 0) for c in self.collector.bus_stats().values()),
        }
        if snap.event_outbox is not None:
            numbers["outbox_depth"] = snap.event_outbox
        if snap.slack_outbox is not None:
            numbers["slack_outbox_depth"] = snap.slack_outbox
        if snap.bus_backlog:
            numbers["bus_lag"] = sum(n["lag"] for n in snap.bus_backlog.values())
            numbers["bus_pending"] = sum(n["pending"] for n in snap.bus_backlog.values())
        return numbers

    async def exposition(self) -> bytes:
        """Prometheus text 0.0.4: the contract's numbers as gauges (as any project's
        /metrics would answer), then every ``orch_*`` and ``process_*`` metric."""
        numbers = await self.contract_numbers()  # also refreshes the collector's snapshot
        return prometheus.render(numbers) + generate_latest(self.registry)
