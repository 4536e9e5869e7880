"""The SQLite side of ``storage.report_store``: report facts and the digest's daily row.

A mixin of ``SQLiteStore``.  ``report_facts`` reads in one snapshot (``_snapshot``, from
``storage.sqlite_rollups``); the project list travels as one JSON parameter
(``json_each``), so a fleet of any size is one statement per question.  "Now" for the
digest claim is the store's injected clock.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aiosqlite

from agents.clock import Clock
from storage.report_store import (
    SIGNAL_LIMIT,
    SIGNAL_TYPES,
    ReportFacts,
    check_claim,
    check_window,
    facts_from_rows,
)
from storage.rows import check_limit
from storage.sqlite_codec import TIME, from_us, to_us

_IN = "project IN (SELECT value FROM json_each(:projects))"
_WINDOW = "{col} >= :since AND {col} < :until"
_INCIDENTS = f"""
    SELECT i.id, i.project, i.condition, i.severity, i.opened_at_us, i.resolved_at_us,
           i.acked_at_us,
           (SELECT min(a.created_at_us) FROM actions a WHERE a.incident_id = i.id)
    FROM incidents i
    WHERE i.{_IN} AND i.opened_at_us < :until
      AND (i.resolved_at_us IS NULL OR i.resolved_at_us >= :since)
    ORDER BY i.opened_at_us, i.id"""
_SILENCE_END = "min(ends_at_us, coalesce(ended_at_us, ends_at_us))"
_SILENCES = f"""
    SELECT project, starts_at_us, {_SILENCE_END} FROM silences
    WHERE {_IN} AND starts_at_us < :until AND {_SILENCE_END} > :from
      AND {_SILENCE_END} > starts_at_us
    ORDER BY project, starts_at_us"""
_SIGNALS = f"""
    SELECT project, type, ts_us, payload FROM events
    WHERE type IN ({", ".join(f"'{t}'" for t in SIGNAL_TYPES)})
      AND {_WINDOW.format(col="ts_us")} AND {_IN}
    ORDER BY ts_us DESC, seq DESC LIMIT :limit"""
_FIXES = f"""
    SELECT project, count(*), sum(CASE WHEN state = 'verified' THEN 1 ELSE 0 END)
    FROM actions
    WHERE origin = 'autofix' AND started_at_us IS NOT NULL
      AND {_WINDOW.format(col="created_at_us")} AND {_IN}
    GROUP BY project"""
_APPROVALS = f"""
    SELECT project, state, count(*) FROM approvals
    WHERE state IN ('granted', 'denied', 'expired')
      AND {_WINDOW.format(col="decided_at_us")} AND {_IN}
    GROUP BY project, state"""
_ANALYSES = f"""
    SELECT project, engine, count(*), sum(input_tokens + output_tokens), sum(cost_usd)
    FROM analyses WHERE {_WINDOW.format(col="created_at_us")} AND {_IN}
    GROUP BY project, engine"""
_CLAIM = """
    INSERT INTO digest_runs (grp, day, state, claimed_by, claimed_at_us)
    VALUES (:grp, :day, 'claimed', :replica, :now)
    ON CONFLICT (grp, day) DO UPDATE
        SET claimed_by = excluded.claimed_by, claimed_at_us = excluded.claimed_at_us
        WHERE digest_runs.state = 'claimed' AND digest_runs.claimed_at_us <= :stale
    RETURNING claimed_by"""
_FINISH = """
    UPDATE digest_runs SET state = 'queued', queued_at_us = :now
    WHERE grp = :grp AND day = :day AND claimed_by = :replica AND state = 'claimed'
    RETURNING grp"""


class SQLiteReports:
    if TYPE_CHECKING:  # provided by SQLiteStore (and SQLiteRollups)
        _clock: Clock

        def _locked(self) -> AbstractAsyncContextManager[aiosqlite.Connection]: ...

        def _transaction(self) -> AbstractAsyncContextManager[aiosqlite.Connection]: ...

        def _snapshot(self) -> AbstractAsyncContextManager[aiosqlite.Connection]: ...

    async def report_facts(
        self,
        projects: Sequence[str],
        since: datetime,
        until: datetime,
        *,
        signal_limit: int = SIGNAL_LIMIT,
    ) -> ReportFacts:
        check_window(since, until)
        check_limit(signal_limit)
        lo, hi = to_us(since), to_us(until)
        params = {"projects": json.dumps(list(projects)), "since": lo, "until": hi,
                  "limit": signal_limit + 1}  # fmt: skip
        async with self._snapshot() as db:
            incidents = await _all(db, _INCIDENTS, params)
            earliest = min([lo, *(r[4] for r in incidents)])  # incidents opened before `since`
            silences = await _all(db, _SILENCES, {**params, "from": earliest})
            signals = await _all(db, _SIGNALS, params)
            fixes = await _all(db, _FIXES, params)
            approvals = await _all(db, _APPROVALS, params)
            analyses = await _all(db, _ANALYSES, params)
        rows = (incidents, silences, signals, fixes, approvals, analyses)
        return facts_from_rows(from_us(lo), from_us(hi), rows, signal_limit, TIME)

    async def claim_digest(self, group: str, day: str, replica_id: str, stale_s: float) -> bool:
        check_claim(group, day, stale_s)
        now = to_us(self._clock.now())
        params = {"grp": group, "day": day, "replica": replica_id, "now": now,
                  "stale": now - round(stale_s * 1_000_000)}  # fmt: skip
        async with self._transaction() as tx:
            return bool(await _all(tx, _CLAIM, params))

    async def finish_digest(self, group: str, day: str, replica_id: str) -> bool:
        params = {"grp": group, "day": day, "replica": replica_id,
                  "now": to_us(self._clock.now())}  # fmt: skip
        async with self._transaction() as tx:
            return bool(await _all(tx, _FINISH, params))

    async def digest_state(self, group: str, day: str) -> str | None:
        async with self._locked() as db:
            rows = await _all(
                db, "SELECT state FROM digest_runs WHERE grp = :grp AND day = :day",
                {"grp": group, "day": day},
            )  # fmt: skip
        return str(rows[0][0]) if rows else None


async def _all(db: aiosqlite.Connection, sql: str, params: dict[str, Any]) -> list[sqlite3.Row]:
    return list(await db.execute_fetchall(sql, params))
