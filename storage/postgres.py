"""The production store: PostgreSQL through an asyncpg pool (DESIGN §1, §4).

Several replicas share one database, so every guarantee lives in the engine, not in this
process: the partial unique index decides which replica opens an incident, the primary
key of ``consumed_events`` which consumer claims an event, an advisory lock who migrates,
and another advisory lock makes event ``seq`` order equal commit order
(``storage.postgres_sql.insert_events`` explains why that is needed).  Probes and metric
samples are written with one COPY per batch.  Statements live in ``storage.postgres_sql``,
connecting in ``storage.postgres_connect``, migrating in ``storage.postgres_migrate``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from agents.clock import Clock, SystemClock
from agents.events import Event
from storage.base import EventFor, Incident, MetricSample, ProbeRecord
from storage.migrate import load_migrations
from storage.postgres_activity import PostgresActivity
from storage.postgres_autonomy import PostgresAutonomy
from storage.postgres_buckets import mark_buckets
from storage.postgres_budget import PostgresBudget
from storage.postgres_connect import create_pool
from storage.postgres_coordination import PostgresCoordination
from storage.postgres_execution import PostgresExecution
from storage.postgres_links import PostgresIncidentLinks
from storage.postgres_migrate import apply_migrations
from storage.postgres_operations import PostgresOperations
from storage.postgres_reports import PostgresReports
from storage.postgres_rollups import PostgresRollups, mark_dirty
from storage.postgres_slack import PostgresSlack
from storage.postgres_sql import (
    PROBE_COLUMNS,
    SAMPLE_COLUMNS,
    SQL,
    TIME,
    aware,
    insert_events,
    probe_rows,
    sample_from_row,
    sample_rows,
)
from storage.rows import (
    check_limit,
    event_from_row,
    incident_from_row,
    open_incident_params,
    probe_from_row,
)

TABLES = ("probes", "metric_samples", "events", "incidents")


# roll-ups, retention, uptime: postgres_rollups; leases, jobs: postgres_coordination
# Slack outbox: postgres_slack; silences, acks, action requests: postgres_operations
# approvals, audit log: postgres_autonomy; remediation budget, analyses: postgres_budget
# running actions: postgres_execution
class PostgresStore(
    PostgresRollups,
    PostgresCoordination,
    PostgresSlack,
    PostgresOperations,
    PostgresAutonomy,
    PostgresBudget,
    PostgresExecution,
    PostgresReports,
    PostgresActivity,
    PostgresIncidentLinks,
):
    def __init__(
        self,
        dsn: str,
        *,
        clock: Clock | None = None,
        auto_migrate: bool = True,
        min_size: int = 1,
        max_size: int = 10,
        schema: str | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        """``dsn`` is a ``postgresql://`` URL; it is kept only to connect and never shown.
        ``schema`` puts every table in that schema (created by ``migrate`` if missing),
        through the connections' ``search_path``.  ``clock`` stamps ``published_at``,
        ``consumed_at`` and ``applied_at``.  ``auto_migrate=False`` makes ``open`` only
        connect, for ``orch migrate`` and tests that call ``migrate`` themselves."""
        self._dsn = dsn
        self._clock = clock or SystemClock()
        self._auto_migrate = auto_migrate
        self._min_size = min_size
        self._max_size = max_size
        self._schema = schema
        self._connect_timeout = connect_timeout
        self._pool: asyncpg.Pool | None = None

    # -- lifecycle ---------------------------------------------------------------------
    async def open(self) -> None:
        if self._pool is not None:
            raise RuntimeError("PostgresStore is already open")
        pool = await create_pool(
            self._dsn,
            min_size=self._min_size,
            max_size=self._max_size,
            schema=self._schema,
            connect_timeout=self._connect_timeout,
        )
        self._pool = pool
        try:
            if self._auto_migrate:
                await self.migrate()
        except BaseException:
            self._pool = None
            await pool.close()  # a failed open leaks no connection
            raise

    async def close(self) -> None:
        """Idempotent.  Waits for operations in flight to give their connections back."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def migrate(self) -> list[int]:
        async with self._acquire() as conn:
            return await apply_migrations(
                conn, load_migrations("postgres"), schema=self._schema, clock=self._clock
            )

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection inside a transaction, committed on exit, rolled back on error.

        For state changes that live outside this class but must commit with their event:
        write the state, then call ``storage.postgres_sql.insert_events(conn, events)``
        last (never insert into ``events`` directly: that would break commit order).
        """
        async with self._acquire() as conn, conn.transaction():
            yield conn

    # -- time series -------------------------------------------------------------------
    async def add_probes(self, probes: Sequence[ProbeRecord]) -> None:
        rows = probe_rows(probes)  # encode first: a bad row writes nothing
        if rows:
            async with self.transaction() as conn:  # for writes that must commit with them
                await _copy(conn, "probes", rows, PROBE_COLUMNS)
                await mark_dirty(conn, ((r[0], r[1]) for r in rows))  # (project, ts)
                await mark_buckets(conn, [r[1] for r in rows])  # storage.postgres_buckets

    async def add_metric_samples(self, samples: Sequence[MetricSample]) -> None:
        rows = sample_rows(samples)  # a row per probe instant, holding its samples
        if rows:
            async with self.transaction() as conn:
                await _copy(conn, "metric_samples", rows, SAMPLE_COLUMNS)
                await mark_dirty(conn, ((r[0], r[1]) for r in rows))  # (project, ts)

    async def recent_probes(self, project: str, limit: int = 50) -> list[ProbeRecord]:
        rows = await self._fetch(SQL.recent_probes, project, check_limit(limit))
        return [probe_from_row(r, TIME) for r in rows]

    async def metric_series(self, project: str, metric: str, since: datetime) -> list[MetricSample]:
        rows = await self._fetch(SQL.metric_series, project, metric, aware(since))
        return [sample_from_row(r) for r in rows]

    # -- events (the outbox) -----------------------------------------------------------
    async def append_events(self, events: Sequence[Event]) -> None:
        if events:
            async with self.transaction() as conn:
                await insert_events(conn, events)

    async def unpublished_events(self, limit: int = 500) -> list[Event]:
        rows = await self._fetch(SQL.unpublished_events, check_limit(limit))
        return [event_from_row(r, TIME) for r in rows]

    async def mark_published(self, ids: Sequence[str]) -> None:
        if ids:
            async with self._acquire() as conn:
                await conn.execute(SQL.mark_published, self._clock.now(), list(ids))

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
            params.append(project)
            where.append(f"project = ${len(params)}")
        if types is not None:
            params.append(list(types))
            where.append(f"type = ANY(${len(params)}::text[])")
        if since is not None:
            params.append(aware(since))
            where.append(f"ts >= ${len(params)}")
        params.append(check_limit(limit))
        rows = await self._fetch(SQL.list_events(where, f"${len(params)}"), *params)
        return [event_from_row(r, TIME) for r in reversed(rows)]

    # -- incidents ---------------------------------------------------------------------
    async def open_incident(self, incident: Incident, event_for: EventFor) -> Incident | None:
        params = open_incident_params(incident, aware)
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
        params = (aware(resolved_at), fingerprint)
        return await self._change_incident(SQL.resolve_incident, params, event_for)

    async def get_open_incident(self, fingerprint: str) -> Incident | None:
        rows = await self._fetch(SQL.get_open_incident, fingerprint)
        return incident_from_row(rows[0], TIME) if rows else None

    async def list_incidents(
        self, *, project: str | None = None, open_only: bool = False, limit: int = 100
    ) -> list[Incident]:
        where: list[str] = []
        params: list[Any] = []
        if project is not None:
            params.append(project)
            where.append(f"project = ${len(params)}")
        if open_only:
            where.append("state = 'open'")
        params.append(check_limit(limit))
        rows = await self._fetch(SQL.list_incidents(where, f"${len(params)}"), *params)
        return [incident_from_row(r, TIME) for r in rows]

    async def claim_event(self, role: str, event_id: str) -> bool:
        async with self._acquire() as conn:
            won = await conn.fetchval(SQL.claim_event, role, event_id, self._clock.now())
        return won is True

    async def claim_events(self, role: str, event_ids: Sequence[str]) -> set[str]:
        ids = list(dict.fromkeys(event_ids))
        if not ids:
            return set()
        rows = await self._fetch(SQL.claim_events, role, ids, self._clock.now())
        return {r[0] for r in rows}

    async def claimed_ids(self, role: str, event_ids: Sequence[str]) -> set[str]:
        if not event_ids:
            return set()
        rows = await self._fetch(SQL.claimed_ids, role, list(dict.fromkeys(event_ids)))
        return {r[0] for r in rows}

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
        params: list[Any] = [role, aware(since)]
        where = ["e.ts >= $2", "e.published_at IS NOT NULL"]
        if published_before is not None:
            params.append(aware(published_before))
            where.append(f"e.published_at < ${len(params)}")
        if types is not None:
            params.append(list(types))
            where.append(f"e.type = ANY(${len(params)}::text[])")
        params.append(check_limit(limit))
        rows = await self._fetch(SQL.unclaimed_events(where, f"${len(params)}"), *params)
        return [event_from_row(r, TIME) for r in rows]

    async def count_rows(self) -> dict[str, int]:
        rows = await self._fetch(SQL.count_rows)
        return {table: int(n) for table, n in zip(TABLES, rows[0], strict=True)}

    # -- plumbing ----------------------------------------------------------------------
    async def _change_incident(
        self, sql: str, params: tuple[Any, ...], event_for: EventFor
    ) -> Incident | None:
        """Run one incident statement with RETURNING and, when it touched a row, append the
        event built from that row, all in one transaction.  ``event_for`` raising (or any
        other error) rolls back both."""
        async with self.transaction() as conn:
            row = await conn.fetchrow(sql, *params)
            if row is None:
                return None
            stored = incident_from_row(row, TIME)
            await insert_events(conn, [event_for(stored)])  # last: see insert_events
        return stored

    async def _fetch(self, sql: str, *params: Any) -> list[asyncpg.Record]:
        async with self._acquire() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *params)
        return rows

    @contextlib.asynccontextmanager
    async def _acquire(self) -> AsyncIterator[asyncpg.Connection]:
        if self._pool is None:
            raise RuntimeError("PostgresStore is not open")
        async with self._pool.acquire() as conn:
            yield conn


async def _copy(
    conn: asyncpg.Connection, table: str, rows: list[tuple[Any, ...]], columns: Sequence[str]
) -> None:
    # One COPY per batch: about twice the rate of INSERT ... unnest (DESIGN §9).
    await conn.copy_records_to_table(table, records=rows, columns=list(columns))
