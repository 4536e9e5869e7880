"""How replicas share work through the store: leases, heartbeats, once-only jobs.

Several ``orch run`` processes on one PostgreSQL divide the fleet with leases (DESIGN §1:
no home-made consensus, the database decides).  A lease is a named row with an owner and
an expiry; taking one is atomic in the engine, so of replicas racing for a name exactly
one wins.  Every expiry and TTL is measured in *database* time (PostgreSQL's ``now()``;
for the single-process SQLite store, its injected clock), never in a replica's clock: a
replica whose clock is minutes off still neither extends nor cuts a lease.

``storage.postgres_coordination`` and ``storage.sqlite_coordination`` implement this as
mixins of the two stores; ``agents.coordination.LeaseKeeper`` drives it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Lease:
    name: str
    owner: str | None  # None: free (released, or never taken)
    fence: int  # +1 at every acquisition: (name, fence) identifies one holding
    expires_at: datetime | None  # database time; None while free


class CoordinationStore(Protocol):
    async def db_now(self) -> datetime:
        """The database's current time, timezone-aware UTC."""
        ...

    async def replica_heartbeat(self, replica_id: str, ttl_s: float, pool: str = "") -> int:
        """Record that ``replica_id`` is alive until db now + ``ttl_s``, forget replicas
        whose heartbeat expired, and return how many replicas are alive (this one too)
        among those whose id starts with ``pool`` (one orchestrator group's processes
        share its projects only among themselves; "" counts every replica)."""
        ...

    async def retire_replica(self, replica_id: str) -> None:
        """Release every lease of ``replica_id`` and remove its heartbeat row, in one
        transaction: the others count one replica fewer at once (graceful stop)."""
        ...

    async def acquire_leases(
        self, replica_id: str, names: Sequence[str], ttl_s: float, max_new: int
    ) -> list[str]:
        """Take at most ``max_new`` of ``names`` that are free or expired, for ``ttl_s``;
        return the names taken (sorted).  Atomic: of callers racing for a name exactly one
        gets it.  Names the caller already holds are not returned."""
        ...

    async def renew_leases(self, replica_id: str, ttl_s: float) -> list[str]:
        """Extend every unexpired lease of ``replica_id`` to db now + ``ttl_s``; return
        them (sorted).  An expired lease is not renewed, even if nobody took it yet: it
        was lost, and taking it again is ``acquire_leases``'s job."""
        ...

    async def release_leases(self, replica_id: str, names: Sequence[str] | None = None) -> None:
        """Free the leases of ``replica_id`` among ``names`` (None: all of them)."""
        ...

    async def held_leases(self, replica_id: str) -> list[str]:
        """The unexpired leases of ``replica_id`` (sorted)."""
        ...

    async def lease_owners(self) -> dict[str, str]:
        """Name -> owner of every unexpired lease (tests, dashboards)."""
        ...

    async def leases(self, names: Sequence[str]) -> list[Lease]:
        """The rows of ``names`` that exist, sorted by name; an expired one still shows
        its last owner and expiry (compare with ``db_now``)."""
        ...

    async def claim_job_run(self, job: str, period_key: str, replica_id: str) -> bool:
        """True for exactly one caller per (job, period_key), across replicas and time."""
        ...

    async def announced_statuses(self, projects: Sequence[str]) -> dict[str, str]:
        """The ``to`` of each project's newest ``project.status_changed`` event: what the
        fleet last announced, for a replica taking a project over from another.  Projects
        never announced are absent."""
        ...


def statuses_from_payloads(rows: Iterable[tuple[str, str]]) -> dict[str, str]:
    """(project, status event payload as stored) -> {project: payload["to"]}.

    Decoded in Python, not in SQL: payloads are stored as JSON text that may hold NaN,
    which PostgreSQL's json type refuses."""
    found: dict[str, str] = {}
    for project, payload in rows:
        to = json.loads(payload).get("to")
        if isinstance(to, str):
            found[project] = to
    return found
