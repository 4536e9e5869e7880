"""The SQLite side of ``storage.budget_store``: remediation budget, suspensions, analyses.

A mixin of ``SQLiteStore``.  ``try_take_budget`` counts and records inside one
``_transaction`` (BEGIN IMMEDIATE: SQLite's single writer), so no other writer, even
another process on the same file, can take a slot in between.  "Now" is the store's
injected clock.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aiosqlite

from agents.clock import Clock
from storage.budget_store import (
    Analysis,
    AnalysisEventFor,
    NewAnalysis,
    Suspension,
    SuspensionEventFor,
    check_analysis,
    check_seconds,
)
from storage.rows import analysis_from_row, suspension_from_row
from storage.sqlite_autonomy import append_events, fetch_one, json_text, seconds_us
from storage.sqlite_codec import TIME, to_us

_SUSPENSION = "project, reason, suspended_by, since_us, until_us"
_ANALYSIS = ("id, created_at_us, incident_id, project, engine, diagnosis, recommended_action,"
             " confidence, risk, payload, input_tokens, output_tokens, latency_ms, cost_usd,"
             " requested_by")  # fmt: skip
_COUNT = """
    SELECT count(*) FROM remediation_attempts
    WHERE project = :project AND action = :action AND at_us > :now - :window"""
_INSERT_ATTEMPT = """
    INSERT INTO remediation_attempts (project, action, at_us, actor, action_id)
    VALUES (:project, :action, :now, :actor, :action_id)"""
_SUSPEND = f"""
    INSERT INTO remediation_suspensions ({_SUSPENSION})
    VALUES (:project, :reason, :by, :now, :until)
    ON CONFLICT (project) DO UPDATE SET reason = excluded.reason,
        suspended_by = excluded.suspended_by, since_us = excluded.since_us,
        until_us = excluded.until_us
    RETURNING {_SUSPENSION}"""
_INSERT_ANALYSIS = f"""
    INSERT INTO analyses ({_ANALYSIS})
    VALUES (:id, :now, :incident_id, :project, :engine, :diagnosis, :recommended_action,
            :confidence, :risk, :payload, :input_tokens, :output_tokens, :latency_ms,
            :cost_usd, :requested_by)
    RETURNING {_ANALYSIS}"""


class SQLiteBudget:
    if TYPE_CHECKING:  # provided by SQLiteStore
        _clock: Clock

        def _locked(self) -> AbstractAsyncContextManager[aiosqlite.Connection]: ...

        def _transaction(self) -> AbstractAsyncContextManager[aiosqlite.Connection]: ...

    # -- remediation budget ------------------------------------------------------------
    async def record_attempt(
        self, project: str, action: str, actor: str, action_id: str | None = None
    ) -> None:
        params = {"project": project, "action": action, "now": self._budget_now(),
                  "actor": actor, "action_id": action_id}  # fmt: skip
        async with self._transaction() as tx:
            await tx.execute(_INSERT_ATTEMPT, params)

    async def count_attempts(self, project: str, action: str, window_s: float) -> int:
        params = {"project": project, "action": action, "now": self._budget_now(),
                  "window": seconds_us(check_seconds("window_s", window_s))}  # fmt: skip
        rows = await self._budget_read(_COUNT, params)
        return int(next(iter(rows))[0])

    async def try_take_budget(
        self,
        project: str,
        action: str,
        limit: int,
        window_s: float,
        actor: str,
        action_id: str | None = None,
    ) -> bool:
        window = seconds_us(check_seconds("window_s", window_s))
        params = {"project": project, "action": action, "now": self._budget_now(),
                  "actor": actor, "action_id": action_id, "window": window}  # fmt: skip
        async with self._transaction() as tx:  # the write lock: count and insert are atomic
            used = await fetch_one(tx, _COUNT, params)
            if used is None or used[0] >= limit:
                return False
            await tx.execute(_INSERT_ATTEMPT, params)
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
        now = self._budget_now()
        until = None if for_s is None else now + seconds_us(check_seconds("for_s", for_s))
        params = {"project": project, "reason": reason, "by": by, "now": now, "until": until}
        async with self._transaction() as tx:
            suspension = suspension_from_row(await fetch_one(tx, _SUSPEND, params), TIME)
            await append_events(tx, [event_for(suspension)])
        return suspension

    async def resume_remediation(self, project: str) -> Suspension | None:
        async with self._transaction() as tx:
            row = await fetch_one(
                tx,
                f"DELETE FROM remediation_suspensions WHERE project = :project"
                f" RETURNING {_SUSPENSION}",
                {"project": project},
            )
        return None if row is None else suspension_from_row(row, TIME)

    async def remediation_suspended(
        self, project: str, at: datetime | None = None
    ) -> Suspension | None:
        rows = await self._budget_read(
            f"SELECT {_SUSPENSION} FROM remediation_suspensions WHERE project = :project"
            " AND since_us <= :at AND (until_us IS NULL OR until_us > :at)",
            {"project": project, "at": self._budget_now() if at is None else to_us(at)},
        )
        return next((suspension_from_row(r, TIME) for r in rows), None)

    # -- analyses ----------------------------------------------------------------------
    async def record_analysis(self, new: NewAnalysis, event_for: AnalysisEventFor) -> Analysis:
        check_analysis(new)
        params = asdict(new) | {
            "id": uuid.uuid4().hex,
            "now": self._budget_now(),
            "payload": json_text(new.payload),
        }
        async with self._transaction() as tx:
            analysis = analysis_from_row(await fetch_one(tx, _INSERT_ANALYSIS, params), TIME)
            await append_events(tx, [event_for(analysis)])
        return analysis

    async def analyses_for(self, incident_id: str) -> list[Analysis]:
        rows = await self._budget_read(
            f"SELECT {_ANALYSIS} FROM analyses WHERE incident_id = :id"
            " ORDER BY created_at_us, rowid",
            {"id": incident_id},
        )
        return [analysis_from_row(r, TIME) for r in rows]

    async def tokens_used_since(self, since: datetime, *, incident_id: str | None = None) -> int:
        rows = await self._budget_read(
            "SELECT coalesce(sum(input_tokens + output_tokens), 0) FROM analyses"
            " WHERE created_at_us >= :since AND (:id IS NULL OR incident_id = :id)",
            {"since": to_us(since), "id": incident_id},
        )
        return int(next(iter(rows))[0])

    # -- plumbing (names distinct from the other mixins': they share one class) --------
    def _budget_now(self) -> int:
        return to_us(self._clock.now())

    async def _budget_read(self, sql: str, params: dict[str, Any]) -> Iterable[sqlite3.Row]:
        async with self._locked() as db:
            return await db.execute_fetchall(sql, params)
