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


# Builds the announcing event from the incident row as stored (inside the transaction).
EventFor = Callable[[Incident], Event]


class Store(Protocol):
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

    async def count_rows(self) -> dict[str, int]:
        """Row counts per table (probes, metric_samples, events, incidents)."""
        ...
