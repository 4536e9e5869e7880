"""The SQLite side of ``storage.coordination``: leases, heartbeats, once-only jobs.

A mixin of ``SQLiteStore``.  SQLite is the embedded, single-process store, so its
"database time" is the store's injected clock (tests move it with a ``FakeClock``).
Writers serialise on SQLite's write lock (BEGIN IMMEDIATE), so a read-then-update inside
one ``_transaction`` is atomic even against another process on the same file.  Name lists
travel as one JSON parameter (``json_each``), which no parameter limit can break.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aiosqlite

from agents.clock import Clock
from agents.events import PROJECT_STATUS_CHANGED
from storage.coordination import Lease, statuses_from_payloads
from storage.sqlite_codec import from_us, opt_from_us, to_us

_NAMES = "IN (SELECT value FROM json_each(:names))"
_LIVE = "expires_us >= :now"  # not expired; ``expires_us < :now`` is expired

_ACQUIRE = f"""
    UPDATE leases SET owner = :me, expires_us = :until, fence = fence + 1, acquired_us = :now
    WHERE name IN (SELECT name FROM leases
                   WHERE name {_NAMES} AND (owner IS NULL OR expires_us < :now)
                   ORDER BY name LIMIT :max)
    RETURNING name"""
_RENEW = f"UPDATE leases SET expires_us = :until WHERE owner = :me AND {_LIVE} RETURNING name"
_RELEASE_ALL = "UPDATE leases SET owner = NULL, expires_us = NULL WHERE owner = :me"
_ANNOUNCED = """
    SELECT p.value, (SELECT payload FROM events e WHERE e.project = p.value AND e.type = :type
                     ORDER BY e.seq DESC LIMIT 1)
    FROM json_each(:names) p"""


class SQLiteCoordination:
    if TYPE_CHECKING:  # provided by SQLiteStore
        _clock: Clock

        def _locked(self) -> AbstractAsyncContextManager[aiosqlite.Connection]: ...

        def _transaction(self) -> AbstractAsyncContextManager[aiosqlite.Connection]: ...

    async def db_now(self) -> datetime:
        return from_us(self._now())

    async def replica_heartbeat(self, replica_id: str, ttl_s: float, pool: str = "") -> int:
        now = self._now()
        params = {"me": replica_id, "now": now, "until": now + _us(ttl_s), "pool": pool}
        async with self._transaction() as tx:
            await tx.execute(
                "DELETE FROM replicas WHERE expires_us < :now AND replica_id <> :me", params
            )
            await tx.execute(
                "INSERT INTO replicas (replica_id, started_us, heartbeat_us, expires_us)"
                " VALUES (:me, :now, :now, :until) ON CONFLICT (replica_id) DO UPDATE"
                " SET heartbeat_us = excluded.heartbeat_us, expires_us = excluded.expires_us",
                params,
            )
            rows = await tx.execute_fetchall(
                f"SELECT count(*) FROM replicas WHERE {_LIVE}"
                " AND substr(replica_id, 1, length(:pool)) = :pool",
                params,
            )
        return int(next(iter(rows))[0])

    async def retire_replica(self, replica_id: str) -> None:
        async with self._transaction() as tx:
            await tx.execute(_RELEASE_ALL, {"me": replica_id})
            await tx.execute("DELETE FROM replicas WHERE replica_id = ?", (replica_id,))

    async def acquire_leases(
        self, replica_id: str, names: Sequence[str], ttl_s: float, max_new: int
    ) -> list[str]:
        wanted = sorted(set(names))
        if not wanted or max_new <= 0:
            return []
        now = self._now()
        params = {"me": replica_id, "now": now, "until": now + _us(ttl_s), "max": max_new}
        params["names"] = json.dumps(wanted)
        async with self._transaction() as tx:
            await tx.execute(
                # WHERE true: SQLite needs it to parse ON CONFLICT after a SELECT.
                "INSERT INTO leases (name) SELECT value FROM json_each(:names) WHERE true"
                " ON CONFLICT (name) DO NOTHING",
                params,
            )
            rows = await tx.execute_fetchall(_ACQUIRE, params)
        return sorted(r[0] for r in rows)

    async def renew_leases(self, replica_id: str, ttl_s: float) -> list[str]:
        now = self._now()
        async with self._transaction() as tx:
            rows = await tx.execute_fetchall(
                _RENEW, {"me": replica_id, "now": now, "until": now + _us(ttl_s)}
            )
        return sorted(r[0] for r in rows)

    async def release_leases(self, replica_id: str, names: Sequence[str] | None = None) -> None:
        if names is not None and not names:
            return
        async with self._transaction() as tx:
            if names is None:
                await tx.execute(_RELEASE_ALL, {"me": replica_id})
            else:
                await tx.execute(
                    f"{_RELEASE_ALL} AND name {_NAMES}",
                    {"me": replica_id, "names": json.dumps(list(names))},
                )

    async def held_leases(self, replica_id: str) -> list[str]:
        rows = await self._read(
            f"SELECT name FROM leases WHERE owner = :me AND {_LIVE} ORDER BY name",
            {"me": replica_id, "now": self._now()},
        )
        return [r[0] for r in rows]

    async def lease_owners(self) -> dict[str, str]:
        rows = await self._read(
            f"SELECT name, owner FROM leases WHERE owner IS NOT NULL AND {_LIVE}",
            {"now": self._now()},
        )
        return {r[0]: r[1] for r in rows}

    async def leases(self, names: Sequence[str]) -> list[Lease]:
        rows = await self._read(
            f"SELECT name, owner, fence, expires_us FROM leases WHERE name {_NAMES} ORDER BY name",
            {"names": json.dumps(list(names))},
        )
        return [Lease(r[0], r[1], r[2], opt_from_us(r[3])) for r in rows]

    async def claim_job_run(self, job: str, period_key: str, replica_id: str) -> bool:
        async with self._transaction() as tx:
            cursor = await tx.execute(
                "INSERT INTO job_runs (job, period_key, replica_id, claimed_us)"
                " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (job, period_key, replica_id, self._now()),
            )
            return cursor.rowcount == 1

    async def announced_statuses(self, projects: Sequence[str]) -> dict[str, str]:
        if not projects:
            return {}
        rows = await self._read(
            _ANNOUNCED, {"names": json.dumps(list(projects)), "type": PROJECT_STATUS_CHANGED}
        )
        return statuses_from_payloads((r[0], r[1]) for r in rows if r[1] is not None)

    async def _read(self, sql: str, params: dict[str, Any]) -> Iterable[sqlite3.Row]:
        # Named parameters: the store's ``_fetch`` takes positional ones only.
        async with self._locked() as db:
            return await db.execute_fetchall(sql, params)

    def _now(self) -> int:
        return to_us(self._clock.now())


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)
