"""The PostgreSQL side of ``storage.report_store``: report facts and the digest's daily row.

A mixin of ``PostgresStore``.  ``report_facts`` reads in one REPEATABLE READ, read-only
transaction, so its six questions see one committed state; the digest claim is a single
``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` whose row lock makes replicas racing for a
(group, day) get exactly one winner.  "Now" is the server's ``now()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg

from storage.postgres_sql import TIME, as_utc, aware
from storage.report_store import (
    SIGNAL_LIMIT,
    SIGNAL_TYPES,
    ReportFacts,
    check_claim,
    check_window,
    facts_from_rows,
)
from storage.rows import check_limit

_IN = "project = ANY($1::text[])"
_WINDOW = "{col} >= $2 AND {col} < $3"
_INCIDENTS = f"""
    SELECT i.id, i.project, i.condition, i.severity, i.opened_at, i.resolved_at, i.acked_at,
           (SELECT min(a.created_at) FROM actions a WHERE a.incident_id = i.id)
    FROM incidents i
    WHERE i.{_IN} AND i.opened_at < $3 AND (i.resolved_at IS NULL OR i.resolved_at >= $2)
    ORDER BY i.opened_at, i.id"""
_SILENCE_END = "least(ends_at, coalesce(ended_at, ends_at))"
_SILENCES = f"""
    SELECT project, starts_at, {_SILENCE_END} FROM silences
    WHERE {_IN} AND starts_at < $3 AND {_SILENCE_END} > $2 AND {_SILENCE_END} > starts_at
      -- $2 here: the window's start, or the opening of an incident that began before it
    ORDER BY project, starts_at"""
_SIGNALS = f"""
    SELECT project, type, ts, payload FROM events
    WHERE type = ANY($4::text[]) AND {_WINDOW.format(col="ts")} AND {_IN}
    ORDER BY ts DESC, seq DESC LIMIT $5"""
_FIXES = f"""
    SELECT project, count(*), count(*) FILTER (WHERE state = 'verified') FROM actions
    WHERE origin = 'autofix' AND started_at IS NOT NULL
      AND {_WINDOW.format(col="created_at")} AND {_IN}
    GROUP BY project"""
_APPROVALS = f"""
    SELECT project, state, count(*) FROM approvals
    WHERE state IN ('granted', 'denied', 'expired') AND {_WINDOW.format(col="decided_at")}
      AND {_IN}
    GROUP BY project, state"""
_ANALYSES = f"""
    SELECT project, engine, count(*), sum(input_tokens + output_tokens)::bigint,
           sum(cost_usd)::float8
    FROM analyses WHERE {_WINDOW.format(col="created_at")} AND {_IN}
    GROUP BY project, engine"""
_CLAIM = """
    INSERT INTO digest_runs (grp, day, state, claimed_by, claimed_at)
    VALUES ($1, $2, 'claimed', $3, now())
    ON CONFLICT (grp, day) DO UPDATE
        SET claimed_by = excluded.claimed_by, claimed_at = excluded.claimed_at
        WHERE digest_runs.state = 'claimed'
          AND digest_runs.claimed_at <= now() - $4::float8 * interval '1 second'
    RETURNING claimed_by"""
_FINISH = """
    UPDATE digest_runs SET state = 'queued', queued_at = now()
    WHERE grp = $1 AND day = $2 AND claimed_by = $3 AND state = 'claimed'
    RETURNING grp"""


class PostgresReports:
    if TYPE_CHECKING:  # provided by PostgresStore

        def _acquire(self) -> AbstractAsyncContextManager[asyncpg.Connection]: ...

        def transaction(self) -> AbstractAsyncContextManager[asyncpg.Connection]: ...

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
        names, lo, hi = list(projects), aware(since), aware(until)
        async with (
            self._acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            incidents = await conn.fetch(_INCIDENTS, names, lo, hi)
            earliest = min([lo, *(r[4] for r in incidents)])  # incidents opened before `lo`
            silences = await conn.fetch(_SILENCES, names, earliest, hi)
            signals = await conn.fetch(_SIGNALS, names, lo, hi, list(SIGNAL_TYPES),
                                       signal_limit + 1)  # fmt: skip
            fixes = await conn.fetch(_FIXES, names, lo, hi)
            approvals = await conn.fetch(_APPROVALS, names, lo, hi)
            analyses = await conn.fetch(_ANALYSES, names, lo, hi)
        rows = (incidents, silences, signals, fixes, approvals, analyses)
        return facts_from_rows(as_utc(since), as_utc(until), rows, signal_limit, TIME)

    async def claim_digest(self, group: str, day: str, replica_id: str, stale_s: float) -> bool:
        check_claim(group, day, stale_s)
        async with self._acquire() as conn:
            won = await conn.fetchval(_CLAIM, group, day, replica_id, float(stale_s))
        return won is not None

    async def finish_digest(self, group: str, day: str, replica_id: str) -> bool:
        async with self._acquire() as conn:
            return await conn.fetchval(_FINISH, group, day, replica_id) is not None

    async def digest_state(self, group: str, day: str) -> str | None:
        async with self._acquire() as conn:
            state = await conn.fetchval(
                "SELECT state FROM digest_runs WHERE grp = $1 AND day = $2", group, day
            )
        return None if state is None else str(state)
