"""The embedded store: SQLite through aiosqlite (DESIGN §1, §4).

One connection, one worker thread (aiosqlite's).  Every operation takes ``self._lock``:
statements from different tasks would otherwise interleave on the shared connection, so a
task could write inside, or read the uncommitted rows of, another task's transaction.
Transactions are explicit (``isolation_level=None`` turns off the sqlite3 module's implicit
ones) and start with BEGIN IMMEDIATE, which takes SQLite's write lock up front: a second
process on the same file waits on ``busy_timeout`` instead of failing to upgrade a read
lock half way through.  Timestamps are INTEGER microseconds since the epoch
(``storage.sqlite_codec``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite

from agents.clock import Clock, SystemClock
from agents.events import Event
from storage.base import EventFor, Incident, MetricSample, ProbeRecord
from storage.migrate import load_migrations, pending
from storage.rows import (
    check_limit,
    event_from_row,
    incident_from_row,
    open_incident_params,
    probe_from_row,
)
from storage.sqlite_activity import SQLiteActivity
from storage.sqlite_autonomy import SQLiteAutonomy
from storage.sqlite_budget import SQLiteBudget
from storage.sqlite_codec import (
    EVENT_COLUMNS,
    SQL,
    TIME,
    event_row,
    probe_row,
    sample_from_row,
    sample_row,
    split_statements,
    to_us,
)
from storage.sqlite_coordination import SQLiteCoordination
from storage.sqlite_execution import SQLiteExecution
from storage.sqlite_links import SQLiteIncidentLinks
from storage.sqlite_operations import SQLiteOperations
from storage.sqlite_reports import SQLiteReports
from storage.sqlite_rollups import SQLiteRollups, mark_dirty
from storage.sqlite_slack import SQLiteSlack

# UPDATE/INSERT ... RETURNING (3.35) carries the row the announcing event is built from.
MIN_SQLITE = (3, 35, 0)
TABLES = ("probes", "metric_samples", "events", "incidents")
_ID_CHUNK = 500  # ids per IN (...) list; SQLite's default parameter limit is 32766


# roll-ups, retention, uptime: storage.sqlite_rollups; leases, jobs: storage.sqlite_coordination
# Slack outbox: sqlite_slack; silences, acks, action requests: sqlite_operations
# approvals, audit log: sqlite_autonomy; remediation budget, analyses: sqlite_budget
class SQLiteStore(
    SQLiteRollups,
    SQLiteCoordination,
    SQLiteSlack,
    SQLiteOperations,
    SQLiteAutonomy,
    SQLiteBudget,
    SQLiteExecution,
    SQLiteReports,
    SQLiteActivity,
    SQLiteIncidentLinks,
):
    def __init__(
        self,
        path: str | Path,
        *,
        clock: Clock | None = None,
        busy_timeout_s: float = 5.0,
        auto_migrate: bool = True,
    ) -> None:
        """``path`` may be ``":memory:"`` (a private database that lives as long as the
        store is open).  ``clock`` stamps ``published_at``.  ``auto_migrate=False`` makes
        ``open`` only connect, so tests and tools can call ``migrate`` themselves."""
        self._path = str(path)
        self._clock = clock or SystemClock()
        self._busy_timeout_ms = int(busy_timeout_s * 1000)
        self._auto_migrate = auto_migrate
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------------
    async def open(self) -> None:
        if self._db is not None:
            raise RuntimeError("SQLiteStore is already open")
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise RuntimeError(
                f"SQLite {sqlite3.sqlite_version} is too old; orch needs "
                f"{'.'.join(map(str, MIN_SQLITE))} or newer (RETURNING)"
            )
        db = await aiosqlite.connect(self._path, isolation_level=None)
        try:
            # WAL: readers never block the writer; NORMAL: durable across process crashes,
            # may lose the last commits on power loss, which WAL keeps consistent.
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = NORMAL")
            await db.execute("PRAGMA foreign_keys = ON")
            await db.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            self._db = db
            if self._auto_migrate:
                await self.migrate()
        except BaseException:
            self._db = None
            await db.close()  # stops aiosqlite's thread; a failed open leaks nothing
            raise

    async def close(self) -> None:
        """Idempotent."""
        async with self._lock:  # let a running transaction finish first
            db, self._db = self._db, None
            if db is not None:
                await db.close()

    async def migrate(self) -> list[int]:
        async with self._locked() as db:
            await db.execute(SQL.create_schema_migrations)
            rows = await db.execute_fetchall("SELECT version FROM schema_migrations")
        applied: list[int] = []
        for migration in pending(load_migrations("sqlite"), (r[0] for r in rows)):
            async with self._transaction() as tx:
                # Re-check under the write lock: another process may have applied it.
                done = await tx.execute_fetchall(
                    "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
                )
                if done:
                    continue
                for statement in split_statements(migration.sql):
                    await tx.execute(statement)
                await tx.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, self._clock.now().isoformat()),
                )
            applied.append(migration.version)
        return applied

    # -- time series -------------------------------------------------------------------
    async def add_probes(self, probes: Sequence[ProbeRecord]) -> None:
        rows = [probe_row(p) for p in probes]  # encode first: a bad row writes nothing
        if rows:
            async with self._transaction() as tx:
                await tx.executemany(SQL.insert_probe, rows)
                await mark_dirty(tx, ((r[0], r[1]) for r in rows))  # (project, ts_us)

    async def add_metric_samples(self, samples: Sequence[MetricSample]) -> None:
        rows = [sample_row(s) for s in samples]
        if rows:
            async with self._transaction() as tx:
                await tx.executemany(SQL.insert_sample, rows)
                await mark_dirty(tx, ((r[0], r[2]) for r in rows))  # (project, ts_us)

    async def recent_probes(self, project: str, limit: int = 50) -> list[ProbeRecord]:
        rows = await self._fetch(SQL.recent_probes, (project, check_limit(limit)))
        return [probe_from_row(r, TIME) for r in rows]

    async def metric_series(self, project: str, metric: str, since: datetime) -> list[MetricSample]:
        rows = await self._fetch(SQL.metric_series, (project, metric, to_us(since)))
        return [sample_from_row(r) for r in rows]

    # -- events (the outbox) -----------------------------------------------------------
    async def append_events(self, events: Sequence[Event]) -> None:
        rows = [event_row(e) for e in events]
        if rows:
            async with self._transaction() as tx:
                await tx.executemany(SQL.insert_event, rows)

    async def unpublished_events(self, limit: int = 500) -> list[Event]:
        rows = await self._fetch(SQL.unpublished_events, (check_limit(limit),))
        return [event_from_row(r, TIME) for r in rows]

    async def mark_published(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        now = to_us(self._clock.now())
        async with self._transaction() as tx:
            await tx.executemany(SQL.mark_published, [(now, i) for i in ids])

    async def list_events(
        self,
        *,
        project: str | None = None,
        types: Sequence[str] | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[Event]:
        if types is not None and not types:
            return []  # an empty type filter matches nothing
        where: list[str] = []
        params: list[Any] = []
        if project is not None:
            where.append("project = ?")
            params.append(project)
        if types is not None:
            where.append(f"type IN ({', '.join('?' * len(types))})")
            params.extend(types)
        if since is not None:
            where.append("ts_us >= ?")
            params.append(to_us(since))
        rows = await self._fetch(SQL.list_events(where), (*params, check_limit(limit)))
        return [event_from_row(r, TIME) for r in reversed(list(rows))]

    # -- incidents ---------------------------------------------------------------------
    async def open_incident(self, incident: Incident, event_for: EventFor) -> Incident | None:
        params = open_incident_params(incident, to_us)
        # The partial unique index decides; ON CONFLICT ... DO NOTHING returns no row.
        return await self._change_incident(SQL.open_incident, params, event_for)

    async def update_incident(
        self, fingerprint: str, severity: str, summary: str, event_for: EventFor
    ) -> Incident | None:
        params = (severity, summary, fingerprint)
        return await self._change_incident(SQL.update_incident, params, event_for)

    async def resolve_incident(
        self, fingerprint: str, resolved_at: datetime, event_for: EventFor
    ) -> Incident | None:
        at = to_us(resolved_at)
        return await self._change_incident(SQL.resolve_incident, (at, at, fingerprint), event_for)

    async def get_open_incident(self, fingerprint: str) -> Incident | None:
        rows = list(await self._fetch(SQL.get_open_incident, (fingerprint,)))
        return incident_from_row(rows[0], TIME) if rows else None

    async def list_incidents(
        self, *, project: str | None = None, open_only: bool = False, limit: int = 100
    ) -> list[Incident]:
        where: list[str] = []
        params: list[Any] = []
        if project is not None:
            where.append("project = ?")
            params.append(project)
        if open_only:
            where.append("state = 'open'")
        rows = await self._fetch(SQL.list_incidents(where), (*params, check_limit(limit)))
        return [incident_from_row(r, TIME) for r in rows]

    async def claim_event(self, role: str, event_id: str) -> bool:
        async with self._transaction() as tx:
            cursor = await tx.execute(
                "INSERT INTO consumed_events (role, event_id, consumed_at_us) VALUES (?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (role, event_id, to_us(self._clock.now())),
            )
            return cursor.rowcount == 1

    async def claim_events(self, role: str, event_ids: Sequence[str]) -> set[str]:
        ids = list(dict.fromkeys(event_ids))
        if not ids:
            return set()
        now = to_us(self._clock.now())
        async with self._transaction() as tx:
            # Under BEGIN IMMEDIATE no other writer can claim between the read and the
            # insert, so "not there before" is exactly "claimed by this call".
            before: set[str] = set()
            for start in range(0, len(ids), _ID_CHUNK):
                chunk = ids[start : start + _ID_CHUNK]
                rows = await tx.execute_fetchall(
                    "SELECT event_id FROM consumed_events WHERE role = ?"
                    f" AND event_id IN ({', '.join('?' * len(chunk))})",
                    (role, *chunk),
                )
                before.update(r[0] for r in rows)
            fresh = [i for i in ids if i not in before]
            await tx.executemany(
                "INSERT INTO consumed_events (role, event_id, consumed_at_us) VALUES (?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                [(role, i, now) for i in fresh],
            )
        return set(fresh)

    async def claimed_ids(self, role: str, event_ids: Sequence[str]) -> set[str]:
        ids = list(dict.fromkeys(event_ids))
        found: set[str] = set()
        for start in range(0, len(ids), _ID_CHUNK):  # stay under SQLite's parameter limit
            chunk = ids[start : start + _ID_CHUNK]
            rows = await self._fetch(
                "SELECT event_id FROM consumed_events WHERE role = ?"
                f" AND event_id IN ({', '.join('?' * len(chunk))})",
                (role, *chunk),
            )
            found.update(r[0] for r in rows)
        return found

    async def unclaimed_events(
        self,
        role: str,
        since: datetime,
        *,
        types: Sequence[str] | None = None,
        published_before: datetime | None = None,
        limit: int = 500,
    ) -> list[Event]:
        if types is not None and not types:
            return []
        where = ["e.ts_us >= ?", "e.published_at_us IS NOT NULL"]
        params: list[Any] = [to_us(since)]
        if published_before is not None:
            where.append("e.published_at_us < ?")
            params.append(to_us(published_before))
        if types is not None:
            where.append(f"e.type IN ({', '.join('?' * len(types))})")
            params.extend(types)
        columns = ", ".join(f"e.{c.strip()}" for c in EVENT_COLUMNS.split(","))
        rows = await self._fetch(
            f"SELECT {columns} FROM events e WHERE {' AND '.join(where)}"
            " AND NOT EXISTS (SELECT 1 FROM consumed_events c"
            " WHERE c.role = ? AND c.event_id = e.id) ORDER BY e.seq LIMIT ?",
            (*params, role, check_limit(limit)),
        )
        return [event_from_row(r, TIME) for r in rows]

    async def count_rows(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for table in TABLES:  # fixed names, never input
            rows = list(await self._fetch(f"SELECT count(*) FROM {table}", ()))
            counts[table] = int(rows[0][0])
        return counts

    # -- plumbing ----------------------------------------------------------------------
    async def _change_incident(
        self, sql: str, params: tuple[Any, ...], event_for: EventFor
    ) -> Incident | None:
        """Run one incident statement with RETURNING and, when it touched a row, append the
        event built from that row, all in one transaction.  ``event_for`` raising (or any
        other error) rolls back both."""
        async with self._transaction() as tx:
            rows = list(await tx.execute_fetchall(sql, params))
            if not rows:
                return None
            stored = incident_from_row(rows[0], TIME)
            await tx.executemany(SQL.insert_event, [event_row(event_for(stored))])
        return stored

    @contextlib.asynccontextmanager
    async def _locked(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            # Checked under the lock: close() may have run while we waited for it.
            if self._db is None:
                raise RuntimeError("SQLiteStore is not open")
            yield self._db

    async def _fetch(self, sql: str, params: Iterable[Any]) -> Iterable[sqlite3.Row]:
        async with self._locked() as db:
            return await db.execute_fetchall(sql, tuple(params))

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._locked() as db:
            try:
                # BEGIN is inside the try: if we are cancelled while it waits, it still
                # runs on aiosqlite's thread, and the ROLLBACK queued after it undoes it.
                await db.execute("BEGIN IMMEDIATE")
                yield db
                await db.execute("COMMIT")
            except BaseException:
                # Queued behind any statement still running for a cancelled caller, so it
                # rolls back that statement's transaction too.
                with contextlib.suppress(sqlite3.OperationalError):  # no transaction left
                    await db.execute("ROLLBACK")
                raise
