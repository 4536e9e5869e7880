"""The numbers orch's parts already keep, read at scrape time (prometheus_client's
custom-collector API): nothing here runs per probe or per event.

``refresh`` awaits the few that need a round trip (the store's outbox depths, Redis's
group backlog) with a short timeout; ``collect`` (synchronous, as prometheus_client wants)
then reads those and the in-memory counters of the bus, the monitor, the Slack outbox,
Claude and the executor.  A source that fails costs its own metrics for that scrape, never
the scrape: ``orch_telemetry_source_errors_total`` says which.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from bot.telemetry.probes import percentile

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)
T = TypeVar("T")

# Outbox depths are counted by reading at most this many rows: enough to tell a backlog
# from a hiccup without the scrape itself becoming a load on a struggling store.
DEPTH_CAP = 1000
REFRESH_TIMEOUT_S = 2.0
# Claude outcomes that mean no request went out (agents.claude_advisor reasons).
CLAUDE_NOT_SENT = frozenset({"not_configured", "prompt", "circuit_open", "call_cap"})
LATENESS_QUANTILES = (0.5, 0.9, 0.99)


@dataclass
class Snapshot:
    """What ``refresh`` fetched; a value stays None when its source failed or is absent."""

    event_outbox: int | None = None
    slack_outbox: int | None = None
    bus_backlog: dict[str, dict[str, int]] = field(default_factory=dict)
    dead_letter_stream: int | None = None


class RuntimeCollector:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self.snapshot = Snapshot()
        self.source_errors: dict[str, int] = {}
        self.dead_letters = 0  # events dead-lettered by this process (Runtime._dead_letter)

    # -- the async half -----------------------------------------------------------------
    async def refresh(self) -> Snapshot:
        rt = self._runtime
        snap = Snapshot()
        events = await self._read("event_outbox", rt.store.unpublished_events(DEPTH_CAP))
        snap.event_outbox = len(events) if events is not None else None
        if rt.slack_outbox is not None:
            rows = await self._read(
                "slack_outbox", rt.store.slack_rows(state="pending", limit=DEPTH_CAP)
            )
            snap.slack_outbox = len(rows) if rows is not None else None
        backlog = getattr(rt.bus, "backlog", None)
        if backlog is not None:
            answer = await self._read("bus", backlog())
            if answer is not None:
                snap.bus_backlog, snap.dead_letter_stream = answer
        self.snapshot = snap
        return snap

    async def _read(self, source: str, call: Awaitable[T]) -> T | None:
        try:
            async with asyncio.timeout(REFRESH_TIMEOUT_S):
                return await call
        except Exception as exc:  # a slow or absent store must not fail the scrape
            self.source_errors[source] = self.source_errors.get(source, 0) + 1
            log.warning("metrics: reading %s failed (%s)", source, type(exc).__name__)
            return None

    # -- the sync half (prometheus_client calls this) -----------------------------------
    def collect(self) -> Iterator[Metric]:
        yield from self._bus()
        yield from self._lateness()
        yield from self._outboxes()
        yield from self._slack()
        yield from self._claude()
        yield from self._remediations()
        yield counter(
            "orch_telemetry_source_errors",
            "Scrapes where reading a source failed (its metrics were left out)",
            "source",
            self.source_errors,
        )

    def _bus(self) -> Iterator[Metric]:
        handled: dict[tuple[str, str], int] = {}
        queued: dict[str, int] = {}
        for role, counts in self.bus_stats().items():
            for outcome, value in counts.items():
                if outcome == "queued":
                    queued[role] = value
                else:
                    handled[role, outcome] = value
        yield counter(
            "orch_bus_events",
            "Events this process's bus consumers handled, by role and outcome",
            ("role", "outcome"),
            handled,
        )
        yield gauge("orch_bus_queued", "Events received by a role, not yet handled", "role", queued)
        yield CounterMetricFamily(
            "orch_dead_letters",
            "Events a consumer role gave up on in this process (each one escalated)",
            value=self.dead_letters,
        )
        backlog = self.snapshot.bus_backlog
        if backlog:
            for what, meaning in (
                ("lag", "Redis: entries not yet delivered to a role's consumer group"),
                ("pending", "Redis: entries delivered to a role's group, not yet acknowledged"),
            ):
                numbers = {role: n[what] for role, n in backlog.items()}
                yield gauge(f"orch_bus_{what}_events", meaning, "role", numbers)
        if self.snapshot.dead_letter_stream is not None:
            yield GaugeMetricFamily(
                "orch_bus_dead_letter_stream_length",
                "Redis: entries kept in the dead-letter stream (all replicas)",
                value=self.snapshot.dead_letter_stream,
            )

    def bus_stats(self) -> dict[str, dict[str, int]]:
        """Per role, what this process's consumers did (both buses keep these counts)."""
        stats = getattr(self._runtime.bus, "stats", None)
        return stats() if stats is not None else {}

    def _lateness(self) -> Iterator[Metric]:
        samples = self.lateness_samples()
        yield gauge(
            "orch_schedule_lateness_seconds",
            "How late probes started against their schedule, over the monitor's recent probes",
            "quantile",
            {str(q): percentile(samples, q * 100) for q in LATENESS_QUANTILES},
        )

    def lateness_samples(self) -> list[float]:
        monitor = self._runtime.monitor
        return sorted(monitor.lateness.snapshot()) if monitor is not None else []

    def _outboxes(self) -> Iterator[Metric]:
        depths = {"events": self.snapshot.event_outbox, "slack": self.snapshot.slack_outbox}
        yield gauge(
            "orch_outbox_depth",
            f"Rows waiting in an outbox (counted up to {DEPTH_CAP})",
            "outbox",
            {name: depth for name, depth in depths.items() if depth is not None},
        )
        yield CounterMetricFamily(
            "orch_events_relayed",
            "Events the outbox relay published to the bus",
            value=self._runtime.relay.published,
        )

    def _slack(self) -> Iterator[Metric]:
        outbox = self._runtime.slack_outbox
        if outbox is None:
            return
        yield counter(
            "orch_slack_writes", "Slack outbox rows settled or retried", "outcome", outbox.stats
        )
        yield counter(
            "orch_slack_api_errors",
            "Failed Slack Web API calls by kind (rate_limited is HTTP 429)",
            "kind",
            outbox.api_errors,
        )
        yield CounterMetricFamily(
            "orch_slack_rate_limited",
            "Slack Web API calls answered 429 (the channel waited Retry-After)",
            value=outbox.api_errors["rate_limited"],
        )

    def _claude(self) -> Iterator[Metric]:
        advisor = self._runtime.acting.advisor
        if advisor is None:
            return
        outcomes = advisor.outcomes
        yield counter(
            "orch_claude_calls",
            'Requests to Claude, by outcome ("ok" or why there was no analysis)',
            "outcome",
            {k: v for k, v in outcomes.items() if k not in CLAUDE_NOT_SENT},
        )
        yield counter(
            "orch_claude_skipped",
            "Analyses asked of Claude but not sent, by reason",
            "reason",
            {k: v for k, v in outcomes.items() if k in CLAUDE_NOT_SENT},
        )
        yield counter(
            "orch_claude_tokens",
            "Tokens Claude's answers used",
            "direction",
            {d: advisor.tokens[d] for d in ("input", "output")},
        )
        yield CounterMetricFamily(
            "orch_claude_cost_usd",
            "What Claude's answers cost at list prices",
            value=advisor.spent_usd,
        )

    def _remediations(self) -> Iterator[Metric]:
        yield counter(
            "orch_remediations",
            "Actions this process finished, by action and outcome (verified, failed, refused)",
            ("action", "outcome"),
            self._runtime.acting.executor.finished,
        )


LabelValues = str | tuple[str, ...]


def counter(
    name: str, meaning: str, labels: LabelValues, values: Mapping[Any, float]
) -> CounterMetricFamily:
    """A counter family with one sample per entry of ``values`` (keys: label values)."""
    return _filled(CounterMetricFamily(name, meaning, labels=_names(labels)), values)


def gauge(
    name: str, meaning: str, labels: LabelValues, values: Mapping[Any, float]
) -> GaugeMetricFamily:
    return _filled(GaugeMetricFamily(name, meaning, labels=_names(labels)), values)


def _names(labels: LabelValues) -> list[str]:
    return [labels] if isinstance(labels, str) else list(labels)


F = TypeVar("F", CounterMetricFamily, GaugeMetricFamily)


def _filled(family: F, values: Mapping[Any, float]) -> F:
    for key in sorted(values):
        family.add_metric([key] if isinstance(key, str) else list(key), values[key])
    return family
