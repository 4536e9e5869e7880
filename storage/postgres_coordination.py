"""The PostgreSQL side of ``storage.coordination``: leases, heartbeats, once-only jobs.

A mixin of ``PostgresStore`` (it needs only ``_acquire``).  Every time is the server's
``now()``; the replicas' clocks never enter a comparison.  Each operation is one
statement (atomic on its own) except ``retire_replica`` and the row creation before an
acquisition.

Taking leases uses ``SELECT ... FOR UPDATE SKIP LOCKED``: replicas acquiring at once lock
disjoint rows instead of queueing behind each other, and a row that another transaction
changed meanwhile is re-checked on its newest version (READ COMMITTED's re-evaluation of
locked rows), so a lease taken or renewed a moment ago is never taken twice.  The rows
that lease names need are created first, in their own short statement, in name order:
two replicas inserting overlapping sets wait for each other at most once, never in a
cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg

from agents.events import PROJECT_STATUS_CHANGED
from storage.coordination import Lease, statuses_from_payloads
from storage.postgres_sql import as_utc, opt_utc

_TTL = "now() + $2::float8 * interval '1 second'"
_LIVE = "expires_at >= now()"  # not expired; ``expires_at < now()`` is expired

_HEARTBEAT = f"""
    WITH gone AS (DELETE FROM replicas WHERE expires_at < now() AND replica_id <> $1),
         me AS (INSERT INTO replicas (replica_id, started_at, heartbeat_at, expires_at)
                VALUES ($1, now(), now(), {_TTL})
                ON CONFLICT (replica_id) DO UPDATE
                SET heartbeat_at = excluded.heartbeat_at, expires_at = excluded.expires_at)
    -- The snapshot predates both CTEs: count the others still alive, plus this one.
    SELECT 1 + count(*) FROM replicas
    WHERE replica_id <> $1 AND {_LIVE} AND left(replica_id, length($3)) = $3"""
_ENSURE_ROWS = """
    INSERT INTO leases (name)
    SELECT n FROM unnest($1::text[]) AS t(n)
    WHERE NOT EXISTS (SELECT 1 FROM leases WHERE name = t.n)
    ORDER BY n
    ON CONFLICT (name) DO NOTHING"""
_ACQUIRE = """
    WITH free AS (
        SELECT name FROM leases
        WHERE name = ANY($3::text[]) AND (owner IS NULL OR expires_at < now())
        ORDER BY name LIMIT $4
        FOR UPDATE SKIP LOCKED)
    UPDATE leases l
    SET owner = $1, expires_at = now() + $2::float8 * interval '1 second',
        fence = l.fence + 1, acquired_at = now()
    FROM free WHERE l.name = free.name
    RETURNING l.name"""
_RENEW = f"UPDATE leases SET expires_at = {_TTL} WHERE owner = $1 AND {_LIVE} RETURNING name"
_RELEASE_ALL = "UPDATE leases SET owner = NULL, expires_at = NULL WHERE owner = $1"
_RELEASE = _RELEASE_ALL + " AND name = ANY($2::text[])"
_CLAIM_JOB = """
    INSERT INTO job_runs (job, period_key, replica_id, claimed_at) VALUES ($1, $2, $3, now())
    ON CONFLICT DO NOTHING RETURNING true"""
# Per project the newest status event through events_project_ts (project, ts, seq).
_ANNOUNCED = """
    SELECT p.name, e.payload FROM unnest($1::text[]) AS p(name)
    CROSS JOIN LATERAL (
        SELECT payload FROM events WHERE project = p.name AND type = $2
        ORDER BY seq DESC LIMIT 1) e"""


class PostgresCoordination:
    if TYPE_CHECKING:  # provided by PostgresStore

        def _acquire(self) -> AbstractAsyncContextManager[asyncpg.Connection]: ...

    async def db_now(self) -> datetime:
        async with self._acquire() as conn:
            now: datetime = await conn.fetchval("SELECT now()")
        return as_utc(now)

    async def replica_heartbeat(self, replica_id: str, ttl_s: float, pool: str = "") -> int:
        async with self._acquire() as conn:
            live: int = await conn.fetchval(_HEARTBEAT, replica_id, float(ttl_s), pool)
        return live

    async def retire_replica(self, replica_id: str) -> None:
        async with self._acquire() as conn, conn.transaction():
            await conn.execute(_RELEASE_ALL, replica_id)
            await conn.execute("DELETE FROM replicas WHERE replica_id = $1", replica_id)

    async def acquire_leases(
        self, replica_id: str, names: Sequence[str], ttl_s: float, max_new: int
    ) -> list[str]:
        wanted = sorted(set(names))
        if not wanted or max_new <= 0:
            return []
        async with self._acquire() as conn:
            await conn.execute(_ENSURE_ROWS, wanted)
            rows = await conn.fetch(_ACQUIRE, replica_id, float(ttl_s), wanted, max_new)
        return sorted(r[0] for r in rows)

    async def renew_leases(self, replica_id: str, ttl_s: float) -> list[str]:
        async with self._acquire() as conn:
            rows = await conn.fetch(_RENEW, replica_id, float(ttl_s))
        return sorted(r[0] for r in rows)

    async def release_leases(self, replica_id: str, names: Sequence[str] | None = None) -> None:
        async with self._acquire() as conn:
            if names is None:
                await conn.execute(_RELEASE_ALL, replica_id)
            elif names:
                await conn.execute(_RELEASE, replica_id, list(names))

    async def held_leases(self, replica_id: str) -> list[str]:
        async with self._acquire() as conn:
            rows = await conn.fetch(
                f"SELECT name FROM leases WHERE owner = $1 AND {_LIVE} ORDER BY name", replica_id
            )
        return [r[0] for r in rows]

    async def lease_owners(self) -> dict[str, str]:
        async with self._acquire() as conn:
            rows = await conn.fetch(
                f"SELECT name, owner FROM leases WHERE owner IS NOT NULL AND {_LIVE}"
            )
        return {r[0]: r[1] for r in rows}

    async def leases(self, names: Sequence[str]) -> list[Lease]:
        async with self._acquire() as conn:
            rows = await conn.fetch(
                "SELECT name, owner, fence, expires_at FROM leases"
                " WHERE name = ANY($1::text[]) ORDER BY name",
                list(names),
            )
        return [Lease(r[0], r[1], r[2], opt_utc(r[3])) for r in rows]

    async def claim_job_run(self, job: str, period_key: str, replica_id: str) -> bool:
        async with self._acquire() as conn:
            won = await conn.fetchval(_CLAIM_JOB, job, period_key, replica_id)
        return won is True

    async def announced_statuses(self, projects: Sequence[str]) -> dict[str, str]:
        if not projects:
            return {}
        async with self._acquire() as conn:
            rows = await conn.fetch(_ANNOUNCED, list(projects), PROJECT_STATUS_CHANGED)
        return statuses_from_payloads((r[0], r[1]) for r in rows)
