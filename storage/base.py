"""The Store protocol: the record of truth (DESIGN §4).

SQLite (embedded) and PostgreSQL (production) implement it and pass one contract suite
(``tests/test_store_contract.py``).  A state change and the event that announces it commit
in one transaction; events are written unpublished and the outbox relay publishes them.
All datetimes in and out are timezone-aware UTC: any aware datetime is accepted and comes
back as the same instant in UTC, exact to the microsecond; a naive one raises ValueError.
Every ``since`` is inclusive; a negative ``limit`` raises ValueError; between equal
timestamps the later insert counts as the newer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from agents.events import Event
from storage.activity_store import ActivityStore
from storage.autonomy_store import AutonomyStore
from storage.budget_store import BudgetStore
from storage.coordination import CoordinationStore
from storage.execution_store import ExecutionStore
from storage.incident_links import IncidentLinkStore
from storage.operations_store import OperationsStore
from storage.report_store import ReportStore
from storage.slack_store import SlackStore


@dataclass(frozen=True, slots=True)
class ProbeRecord:
    project: str
    ts: datetime
    level: str  # pass | warn | fail
    latency_ms: float
    reason: str = ""
    http_status: int | None = None
    probe: str = "health"


@dataclass(frozen=True, slots=True)
class MetricSample:
    project: str
    ts: datetime
    metric: str
    value: float


@dataclass(frozen=True, slots=True)
class Incident:
    id: str
    fingerprint: str  # project:condition, e.g. email-blast:down, chatbot:metric:error_rate
    project: str
    condition: str  # down | metric:<name>
    severity: str  # critical | warning
    summary: str
    opened_at: datetime
    state: str = "open"  # open | resolved
    resolved_at: datetime | None = None
    duration_s: float | None = None
    # The incident of a declared dependency this outage is folded into (its root cause,
    # agents.dependencies); None for an incident of its own.
    caused_by: str | None = None


@dataclass(frozen=True, slots=True)
class ProbeHour:
    """One project's probes in one UTC hour, rolled up (definitions: ``storage.rollups``)."""

    project: str
    hour: datetime  # the hour's start
    probes: int
    failed: int
    observed_s: float  # time covered by probe verdicts (at most 3600)
    up_s: float  # the part of observed_s whose verdict was not ``fail``
    latency_avg_ms: float | None  # over the non-failed probes; None when every probe failed
    latency_max_ms: float | None


@dataclass(frozen=True, slots=True)
class MetricHour:
    """One metric of one project in one UTC hour: its finite samples summarised."""

    project: str
    metric: str
    hour: datetime
    n: int
    min: float
    avg: float
    max: float


# Builds the announcing event from the incident row as stored (inside the transaction).
EventFor = Callable[[Incident], Event]


# leases, heartbeats, jobs: storage.coordination; the Slack outbox: storage.slack_store
# silences, acks, action requests: storage.operations_store; approvals, audit log:
# storage.autonomy_store; remediation budget, suspensions, analyses: storage.budget_store;
# running actions: storage.execution_store; digest facts and runs: storage.report_store
# the fleet and the agents at a glance (dashboard): storage.activity_store
# incidents folded into a dependency's (depends_on): storage.incident_links
class Store(
    CoordinationStore,
    SlackStore,
    OperationsStore,
    AutonomyStore,
    BudgetStore,
    ExecutionStore,
    ReportStore,
    ActivityStore,
    IncidentLinkStore,
    Protocol,
):
    async def open(self) -> None:
        """Connect and apply pending migrations."""
        ...

    async def close(self) -> None:
        """Idempotent."""
        ...

    async def migrate(self) -> list[int]:
        """Apply pending migrations; return the versions applied (empty when up to date)."""
        ...

    # -- time series -------------------------------------------------------------------
    async def add_probes(self, probes: Sequence[ProbeRecord]) -> None:
        """All rows in one transaction (all or nothing)."""
        ...

    async def add_metric_samples(self, samples: Sequence[MetricSample]) -> None:
        """All rows in one transaction; a NaN value round-trips as NaN."""
        ...

    async def recent_probes(self, project: str, limit: int = 50) -> list[ProbeRecord]:
        """Newest first."""
        ...

    async def metric_series(self, project: str, metric: str, since: datetime) -> list[MetricSample]:
        """Oldest first."""
        ...

    # -- events (the outbox) -----------------------------------------------------------
    async def append_events(self, events: Sequence[Event]) -> None:
        """Store events unpublished; an id already stored is ignored (idempotent)."""
        ...

    async def unpublished_events(self, limit: int = 500) -> list[Event]:
        """In commit order."""
        ...

    async def mark_published(self, ids: Sequence[str]) -> None: ...

    async def list_events(
        self,
        *,
        project: str | None = None,
        types: Sequence[str] | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[Event]:
        """Oldest first among the newest ``limit`` (by ts) that match, published or not.
        ``types=[]`` matches nothing; None means every type."""
        ...

    # -- incidents ---------------------------------------------------------------------
    async def open_incident(self, incident: Incident, event_for: EventFor) -> Incident | None:
        """Insert ``incident`` (which must be state='open', unresolved) and its event in one
        transaction. None (nothing written, ``event_for`` not called) when an incident with
        that fingerprint is already open."""
        ...

    async def update_incident(
        self, fingerprint: str, severity: str, summary: str, event_for: EventFor
    ) -> Incident | None:
        """Change the open incident's severity/summary with its event; None if none open."""
        ...

    async def resolve_incident(
        self, fingerprint: str, resolved_at: datetime, event_for: EventFor
    ) -> Incident | None:
        """Resolve the open incident (duration = resolved_at - opened_at) with its event;
        None when no incident with that fingerprint is open."""
        ...

    async def get_open_incident(self, fingerprint: str) -> Incident | None: ...

    async def list_incidents(
        self, *, project: str | None = None, open_only: bool = False, limit: int = 100
    ) -> list[Incident]:
        """Newest opened first."""
        ...

    async def claim_event(self, role: str, event_id: str) -> bool:
        """Record that consumer ``role`` handles ``event_id``; False when it already had.

        Bus consumers call it after their handler's effects are stored (and before
        acknowledging), so a redelivered event is skipped by every replica of that role.
        """
        ...

    async def claim_events(self, role: str, event_ids: Sequence[str]) -> set[str]:
        """``claim_event`` for many ids in one transaction (all or nothing); returns the
        ids claimed by this call (those ``role`` had not claimed before; duplicates in
        ``event_ids`` count once).  The Redis bus claims a whole read batch at once: one
        commit per batch instead of one per event is what lets a role keep up with
        1,000 events/s."""
        ...

    async def claimed_ids(self, role: str, event_ids: Sequence[str]) -> set[str]:
        """The subset of ``event_ids`` that ``role`` has claimed (read-only).

        A consumer checks this before running a handler on a (re)delivered entry: checking
        with ``claim_event`` itself would record the claim before the effects exist.
        """
        ...

    async def unclaimed_events(
        self,
        role: str,
        since: datetime,
        *,
        types: Sequence[str] | None = None,
        published_before: datetime | None = None,
        limit: int = 500,
    ) -> list[Event]:
        """Published events with ``ts >= since`` (and ``published_at < published_before``
        when given) of ``types`` (None: every type; ``[]``: none) that ``role`` has not
        claimed, in commit order (as ``unpublished_events``), at most ``limit``.

        The bus reconciler republishes these when the bus lost entries (Redis restarted
        empty).  Unpublished rows are excluded: they are still the relay's job.
        """
        ...

    async def count_rows(self) -> dict[str, int]:
        """Row counts per table (probes, metric_samples, events, incidents)."""
        ...

    # -- roll-ups, retention, availability (definitions: storage.rollups) ---------------
    async def rollup_hours(self, until: datetime) -> int:
        """Re-compute the roll-ups of every hour that ended by ``until`` and has raw rows
        written since it was last rolled up (late rows included); return how many
        (project, hour) pairs were rolled up.  Idempotent: a second call returns 0."""
        ...

    async def rollup_buckets(self, until: datetime) -> int:
        """Bring up to date whatever the store keeps to answer ``uptime`` for hours not
        rolled up yet (PostgreSQL: 5-minute buckets, ``storage.postgres_buckets``), for the
        buckets that ended by ``until``; return how many (project, bucket) pairs it
        recomputed.  Meant to run every minute.  Speed only: ``uptime``'s answers are the
        same whether or not it ran.  A store that reads those hours raw returns 0."""
        ...

    async def apply_retention(
        self, now: datetime, raw_days: float = 7, rollup_days: float = 400
    ) -> dict[str, int]:
        """Delete raw probes/samples of whole hours older than ``raw_days`` (only hours
        already rolled up) and roll-ups of whole UTC days older than ``rollup_days``; return
        rows deleted per table (probes, metric_samples, probe_hourly, probe_daily,
        metric_hourly).  Events and incidents are kept.  Idempotent.  ValueError unless
        0 < raw_days <= rollup_days."""
        ...

    async def uptime(
        self, projects: Sequence[str] | None, since: datetime, until: datetime
    ) -> dict[str, float]:
        """Uptime % (0-100, time-weighted) per project over ``[since, until)``, from roll-ups
        and the raw rows they do not cover yet.  ``projects=None``: every project; a project
        without observed time in the window is absent."""
        ...

    async def downtime(self, project: str, since: datetime, until: datetime) -> float:
        """Seconds of ``down`` incidents inside ``[since, until)`` (each clipped to the
        window; an open one lasts until ``until``)."""
        ...

    async def mttr(self, project: str, since: datetime, until: datetime) -> float | None:
        """Mean duration in seconds of the ``down`` incidents resolved in ``[since, until)``
        (whole durations, not clipped); None when there are none."""
        ...

    async def probe_hours(self, project: str, since: datetime, until: datetime) -> list[ProbeHour]:
        """Roll-ups of the hours starting in ``[since, until)``, oldest first."""
        ...

    async def metric_hours(
        self, project: str, metric: str, since: datetime, until: datetime
    ) -> list[MetricHour]:
        """Roll-ups of one metric for the hours starting in ``[since, until)``, oldest first."""
        ...
