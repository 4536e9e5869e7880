"""The PostgreSQL side of ``storage.budget_store``: remediation budget, suspensions and
analyses, shared by replicas.

A mixin of ``PostgresStore`` (it needs ``_acquire`` and ``transaction``).  Every window
and expiry is measured from the server's ``now()``, never a replica's clock.  The budget
takes a transaction-scoped advisory lock per project before counting, so "count, then
record if below the limit" is atomic across replicas; ``record_attempt`` takes it too, so
an operator's restart is never missed by a count running beside it.
"""

from __future__ import annotations

import uuid
from contextlib import AbstractAsyncContextManager
from dataclasses import astuple
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from storage.budget_store import (
    Analysis,
    AnalysisEventFor,
    NewAnalysis,
    Suspension,
    SuspensionEventFor,
    check_analysis,
    check_seconds,
)
from storage.postgres_autonomy import SECONDS, json_text
from storage.postgres_sql import TIME, aware, insert_events
from storage.rows import analysis_from_row, suspension_from_row

_SUSPENSION = "project, reason, suspended_by, since, until"
_ANALYSIS = ("id, created_at, incident_id, project, engine, diagnosis, recommended_action,"
             " confidence, risk, payload, input_tokens, output_tokens, latency_ms, cost_usd,"
             " requested_by")  # fmt: skip
# Key 1 is the table's oid (separate orch schemas in one database do not contend), key 2
# the project's hash; a hash collision only makes two projects wait for each other.
_LOCK_BUDGET = (
    "SELECT pg_advisory_xact_lock('remediation_attempts'::regclass::oid::int4, hashtext($1))"
)
_COUNT = f"""
    SELECT count(*) FROM remediation_attempts
    WHERE project = $1 AND action = $2 AND at > now() - $3{SECONDS}"""
_INSERT_ATTEMPT = """
    INSERT INTO remediation_attempts (project, action, at, actor, action_id)
    VALUES ($1, $2, now(), $3, $4)"""
_SUSPEND = f"""
    INSERT INTO remediation_suspensions ({_SUSPENSION})
    VALUES ($1, $2, $3, now(), now() + $4{SECONDS})
    ON CONFLICT (project) DO UPDATE SET reason = excluded.reason,
        suspended_by = excluded.suspended_by, since = excluded.since, until = excluded.until
    RETURNING {_SUSPENSION}"""
_AT = "coalesce($2::timestamptz, now())"
_INSERT_ANALYSIS = f"""
    INSERT INTO analyses ({_ANALYSIS})
    VALUES ($1, now(), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
    RETURNING {_ANALYSIS}"""


class PostgresBudget:
    if TYPE_CHECKING:  # provided by PostgresStore

        def _acquire(self) -> AbstractAsyncContextManager[asyncpg.Connection]: ...

        async def _fetch(self, sql: str, *params: Any) -> list[asyncpg.Record]: ...

        def transaction(self) -> AbstractAsyncContextManager[asyncpg.Connection]: ...

    # -- remediation budget ------------------------------------------------------------
    async def record_attempt(
        self, project: str, action: str, actor: str, action_id: str | None = None
    ) -> None:
        async with self.transaction() as conn:
            await conn.execute(_LOCK_BUDGET, project)
            await conn.execute(_INSERT_ATTEMPT, project, action, actor, action_id)

    async def count_attempts(self, project: str, action: str, window_s: float) -> int:
        window = check_seconds("window_s", window_s)
        async with self._acquire() as conn:
            used: int = await conn.fetchval(_COUNT, project, action, window)
        return used

    async def try_take_budget(
        self,
        project: str,
        action: str,
        limit: int,
        window_s: float,
        actor: str,
        action_id: str | None = None,
    ) -> bool:
        window = check_seconds("window_s", window_s)
        async with self.transaction() as conn:
            await conn.execute(_LOCK_BUDGET, project)
            # READ COMMITTED: this statement's snapshot, taken after the lock was granted,
            # holds every attempt committed by the previous holder.
            if await conn.fetchval(_COUNT, project, action, window) >= limit:
                return False
            await conn.execute(_INSERT_ATTEMPT, project, action, actor, action_id)
        return True

    async def suspend_remediation(
        self,
        project: str,
        reason: str,
        by: str,
        event_for: SuspensionEventFor,
        *,
        for_s: float | None = None,
    ) -> Suspension:
        until_s = None if for_s is None else check_seconds("for_s", for_s)
        async with self.transaction() as conn:
            suspension = suspension_from_row(
                await conn.fetchrow(_SUSPEND, project, reason, by, until_s), TIME
            )
            await insert_events(conn, [event_for(suspension)])
        return suspension

    async def resume_remediation(self, project: str) -> Suspension | None:
        rows = await self._fetch(
            f"DELETE FROM remediation_suspensions WHERE project = $1 RETURNING {_SUSPENSION}",
            project,
        )
        return next((suspension_from_row(r, TIME) for r in rows), None)

    async def remediation_suspended(
        self, project: str, at: datetime | None = None
    ) -> Suspension | None:
        rows = await self._fetch(
            f"SELECT {_SUSPENSION} FROM remediation_suspensions WHERE project = $1"
            f" AND since <= {_AT} AND (until IS NULL OR until > {_AT})",
            project,
            None if at is None else aware(at),
        )
        return next((suspension_from_row(r, TIME) for r in rows), None)

    # -- analyses ----------------------------------------------------------------------
    async def record_analysis(self, new: NewAnalysis, event_for: AnalysisEventFor) -> Analysis:
        check_analysis(new)
        fields = list(astuple(new))
        fields[7] = json_text(new.payload)
        async with self.transaction() as conn:
            row = await conn.fetchrow(_INSERT_ANALYSIS, uuid.uuid4().hex, *fields)
            analysis = analysis_from_row(row, TIME)
            await insert_events(conn, [event_for(analysis)])
        return analysis

    async def analyses_for(self, incident_id: str) -> list[Analysis]:
        rows = await self._fetch(
            f"SELECT {_ANALYSIS} FROM analyses WHERE incident_id = $1 ORDER BY created_at, seq",
            incident_id,
        )
        return [analysis_from_row(r, TIME) for r in rows]

    async def tokens_used_since(self, since: datetime, *, incident_id: str | None = None) -> int:
        rows = await self._fetch(
            "SELECT coalesce(sum(input_tokens + output_tokens), 0) FROM analyses"
            " WHERE created_at >= $1 AND ($2::text IS NULL OR incident_id = $2)",
            aware(since),
            incident_id,
        )
        return int(rows[0][0])

    # -- plumbing (names distinct from the other mixins': they share one class) --------
