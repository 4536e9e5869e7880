"""The PostgreSQL side of ``storage.autonomy_store``: approvals and the audit log, shared
by replicas.

A mixin of ``PostgresStore`` (it needs ``_acquire`` and ``transaction``).  "Now" is the
server's ``now()``.  Every change that announces itself ends with ``insert_events``
inside the same ``transaction()``.

Races between replicas:

- Deciding is one ``UPDATE ... WHERE state = 'pending' AND expires_at > now()``: of
  concurrent deciders one updates the row; the others wait for its row lock, re-check the
  condition on the committed row (READ COMMITTED) and match nothing.  A loser then locks
  the row (``FOR UPDATE``) to say why, so what it reports cannot change under it.
- The expiry sweep locks due rows with ``FOR UPDATE SKIP LOCKED``: two sweeps take
  disjoint rows instead of waiting, and a row a decider holds is left to the decider (or
  the next sweep).  Each approval expires once.
- ``create_approval`` locks the action row first, so two requests for one action run one
  at a time and the second sees the first's pending approval.

Deciding and the sweep lock the approval row, then its action row.  ``create_approval``
locks the action row and then only reads approvals: while it holds that lock no decider
of that action can commit, so it sees their approval still pending and refuses without
waiting on them; no lock cycle can form.
"""

from __future__ import annotations

import json
import uuid
from contextlib import AbstractAsyncContextManager
from dataclasses import astuple
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from storage.autonomy_store import (
    ACTION_STATE,
    AWAITING_APPROVAL,
    Approval,
    ApprovalEventFor,
    AuditEntry,
    AuditRecord,
    Decision,
    DecisionResult,
    Outcome,
    audit_record,
    check_audit,
    check_decision,
    check_request,
    check_ttl,
    click_audit,
    expiry_audit,
    four_eyes_guard,
    loser_outcome,
)
from storage.postgres_sql import TIME, as_utc, aware, insert_events
from storage.rows import approval_from_row, check_limit

_APPROVAL = ("id, action_id, project, action, requested_by, reason, state, expires_at,"
             " created_at, decided_by, decided_at")  # fmt: skip
# AuditEntry's field order.
_AUDIT = ("actor, actor_kind, action, decision, project, reason, outcome, approval_id,"
          " action_id, details")  # fmt: skip
# Seconds (a float8 parameter) as an interval; postgres_budget uses it too.
SECONDS = "::float8 * interval '1 second'"
_INSERT_APPROVAL = f"""
    INSERT INTO approvals ({_APPROVAL})
    VALUES ($1, $2, $3, $4, $5, $6, 'pending', now() + $7{SECONDS}, now(), NULL, NULL)
    RETURNING {_APPROVAL}"""
# The compare-and-set: only a pending, unexpired row that four-eyes allows changes.
_DECIDE = f"""
    UPDATE approvals SET state = $2, decided_by = $3, decided_at = now()
    WHERE id = $1 AND state = 'pending' AND expires_at > now() AND NOT ($4 AND requested_by = $3)
    RETURNING {_APPROVAL}"""
_LOCK_APPROVAL = f"SELECT {_APPROVAL}, expires_at <= now() FROM approvals WHERE id = $1 FOR UPDATE"
# An expiry is dated at the deadline, not at whoever noticed it.
_EXPIRE_ONE = f"""
    UPDATE approvals SET state = 'expired', decided_at = expires_at
    WHERE id = $1 AND state = 'pending' RETURNING {_APPROVAL}"""
_EXPIRE_DUE = f"""
    WITH due AS (
        SELECT id FROM approvals
        WHERE state = 'pending' AND expires_at <= coalesce($1::timestamptz, now())
        ORDER BY id FOR UPDATE SKIP LOCKED)
    UPDATE approvals a SET state = 'expired', decided_at = a.expires_at
    FROM due WHERE a.id = due.id
    RETURNING {", ".join(f"a.{c}" for c in _APPROVAL.split(", "))}"""
_SET_ACTION_STATE = "UPDATE actions SET state = $2 WHERE id = ANY($1::text[])"
INSERT_AUDIT = f"""
    INSERT INTO audit_log (at, {_AUDIT})
    VALUES (now(), $1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id"""


def json_text(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def audit_args(entry: AuditEntry) -> tuple[Any, ...]:
    check_audit(entry)
    return (*astuple(entry)[:-1], json_text(entry.details))


class PostgresAutonomy:
    if TYPE_CHECKING:  # provided by PostgresStore

        def _acquire(self) -> AbstractAsyncContextManager[asyncpg.Connection]: ...

        async def _fetch(self, sql: str, *params: Any) -> list[asyncpg.Record]: ...

        def transaction(self) -> AbstractAsyncContextManager[asyncpg.Connection]: ...

    # -- approvals ---------------------------------------------------------------------
    async def create_approval(
        self,
        action_id: str,
        project: str,
        action: str,
        requested_by: str,
        reason: str,
        ttl_s: float,
        event_for: ApprovalEventFor,
    ) -> Approval:
        args = (uuid.uuid4().hex, action_id, project, action, requested_by, reason)
        ttl = check_ttl(ttl_s)
        async with self.transaction() as conn:
            found = await conn.fetchrow(
                "SELECT project, action FROM actions WHERE id = $1 FOR UPDATE", action_id
            )
            pending = await conn.fetchval(
                "SELECT true FROM approvals WHERE action_id = $1 AND state = 'pending'", action_id
            )
            check_request(None if found is None else (found[0], found[1]),
                          action_id, project, action, pending is not None)  # fmt: skip
            approval = approval_from_row(await conn.fetchrow(_INSERT_APPROVAL, *args, ttl), TIME)
            await conn.execute(_SET_ACTION_STATE, [action_id], AWAITING_APPROVAL)
            await insert_events(conn, [event_for(approval)])
        return approval

    async def decide_approval(
        self,
        approval_id: str,
        decision: Decision,
        by: str,
        *,
        four_eyes: bool,
        event_for: ApprovalEventFor,
        actor_kind: str = "user",
    ) -> DecisionResult:
        check_decision(decision)
        guard = four_eyes_guard(decision, four_eyes)
        async with self.transaction() as conn:
            row = await conn.fetchrow(_DECIDE, approval_id, decision, by, guard)
            changed = row is not None
            outcome: Outcome = "won"
            approval = None if row is None else approval_from_row(row, TIME)
            if not changed:  # lost: say why, from the row locked as it is now
                found = await conn.fetchrow(_LOCK_APPROVAL, approval_id)
                approval = None if found is None else approval_from_row(found, TIME)
                outcome = loser_outcome(approval, found is not None and found[11])
                if outcome == "expired" and approval is not None and approval.state == "pending":
                    # Found past its deadline before the sweep: expire it here, once.
                    approval = approval_from_row(
                        await conn.fetchrow(_EXPIRE_ONE, approval_id), TIME
                    )
                    changed = True
            entry = click_audit(approval, approval_id, decision, by, actor_kind, outcome)
            await conn.execute(INSERT_AUDIT, *audit_args(entry))
            if changed and approval is not None:
                state = ACTION_STATE[approval.state]
                await conn.execute(_SET_ACTION_STATE, [approval.action_id], state)
                await insert_events(conn, [event_for(approval)])
        return DecisionResult(outcome, approval)

    async def expire_approvals(
        self, event_for: ApprovalEventFor, *, now: datetime | None = None
    ) -> list[Approval]:
        at = None if now is None else aware(now)
        async with self.transaction() as conn:
            rows = await conn.fetch(_EXPIRE_DUE, at)
            expired = sorted(
                (approval_from_row(r, TIME) for r in rows), key=lambda a: (a.expires_at, a.id)
            )
            if expired:
                ids = [a.action_id for a in expired]
                await conn.execute(_SET_ACTION_STATE, ids, ACTION_STATE["expired"])
                await conn.executemany(INSERT_AUDIT, [audit_args(expiry_audit(a)) for a in expired])
                await insert_events(conn, [event_for(a) for a in expired])
        return expired

    async def get_approval(self, approval_id: str) -> Approval | None:
        rows = await self._fetch(f"SELECT {_APPROVAL} FROM approvals WHERE id = $1", approval_id)
        return next((approval_from_row(r, TIME) for r in rows), None)

    async def pending_approvals(self, project: str | None = None) -> list[Approval]:
        rows = await self._fetch(
            f"SELECT {_APPROVAL} FROM approvals WHERE state = 'pending' AND expires_at > now()"
            " AND ($1::text IS NULL OR project = $1) ORDER BY created_at, seq",
            project,
        )
        return [approval_from_row(r, TIME) for r in rows]

    # -- audit log ---------------------------------------------------------------------
    async def append_audit(self, entry: AuditEntry) -> int:
        args = audit_args(entry)
        async with self._acquire() as conn:
            audit_id: int = await conn.fetchval(INSERT_AUDIT, *args)
        return audit_id

    async def list_audit(
        self, *, project: str | None = None, since: datetime | None = None, limit: int = 100
    ) -> list[AuditRecord]:
        check_limit(limit)
        rows = await self._fetch(
            f"SELECT id, at, {_AUDIT} FROM audit_log WHERE ($1::text IS NULL OR project = $1)"
            " AND ($2::timestamptz IS NULL OR at >= $2) ORDER BY id DESC LIMIT $3",
            project,
            None if since is None else aware(since),
            limit,
        )
        return [audit_record(r[0], as_utc(r[1]), r[2:]) for r in rows]

    # -- plumbing (names distinct from the other mixins': they share one class) --------
