"""The SQLite side of ``storage.autonomy_store``: approvals and the audit log.

A mixin of ``SQLiteStore``.  Every change runs in one ``_transaction`` (BEGIN IMMEDIATE:
SQLite's single writer), so a compare-and-set or an expiry sweep cannot interleave with
another writer, even another process on the same file.  "Now" is the store's injected
clock.  The helpers at the end are shared with ``storage.sqlite_budget``.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aiosqlite

from agents.clock import Clock
from agents.events import Event
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
from storage.rows import approval_from_row, check_limit
from storage.sqlite_codec import SQL, TIME, event_row, from_us, to_us

_APPROVAL = ("id, action_id, project, action, requested_by, reason, state, expires_at_us,"
             " created_at_us, decided_by, decided_at_us")  # fmt: skip
# AuditEntry's field order.
_AUDIT = ("actor, actor_kind, action, decision, project, reason, outcome, approval_id,"
          " action_id, details")  # fmt: skip
_GET = f"SELECT {_APPROVAL} FROM approvals WHERE id = :id"
_INSERT_APPROVAL = f"""
    INSERT INTO approvals ({_APPROVAL})
    VALUES (:id, :action_id, :project, :action, :by, :reason, 'pending', :expires, :now,
            NULL, NULL)
    RETURNING {_APPROVAL}"""
# The compare-and-set: only a pending, unexpired row that four-eyes allows changes.
_DECIDE = f"""
    UPDATE approvals SET state = :decision, decided_by = :by, decided_at_us = :now
    WHERE id = :id AND state = 'pending' AND expires_at_us > :now
      AND NOT (:guard AND requested_by = :by)
    RETURNING {_APPROVAL}"""
# An expiry is dated at the deadline, not at whoever noticed it.
_EXPIRE = f"""
    UPDATE approvals SET state = 'expired', decided_at_us = expires_at_us
    WHERE state = 'pending' AND expires_at_us <= :now AND (:id IS NULL OR id = :id)
    RETURNING {_APPROVAL}"""
_INSERT_AUDIT = f"""
    INSERT INTO audit_log (at_us, {_AUDIT})
    VALUES (:now, :actor, :actor_kind, :action, :decision, :project, :reason, :outcome,
            :approval_id, :action_id, :details)
    RETURNING id"""


def json_text(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class SQLiteAutonomy:
    if TYPE_CHECKING:  # provided by SQLiteStore
        _clock: Clock

        def _locked(self) -> AbstractAsyncContextManager[aiosqlite.Connection]: ...

        def _transaction(self) -> AbstractAsyncContextManager[aiosqlite.Connection]: ...

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
        now = self._auto_now()
        params = {"id": uuid.uuid4().hex, "action_id": action_id, "project": project,
                  "action": action, "by": requested_by, "reason": reason, "now": now,
                  "expires": now + seconds_us(check_ttl(ttl_s))}  # fmt: skip
        async with self._transaction() as tx:
            found = await fetch_one(tx, "SELECT project, action FROM actions WHERE id = :action_id",
                               params)  # fmt: skip
            pending = await fetch_one(
                tx,
                "SELECT 1 FROM approvals WHERE action_id = :action_id AND state = 'pending'",
                params,
            )
            check_request(found, action_id, project, action, pending is not None)
            approval = approval_from_row(await fetch_one(tx, _INSERT_APPROVAL, params), TIME)
            await _set_action_state(tx, action_id, AWAITING_APPROVAL)
            await append_events(tx, [event_for(approval)])
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
        now = self._auto_now()
        params = {"id": approval_id, "decision": decision, "by": by, "now": now,
                  "guard": four_eyes_guard(decision, four_eyes)}  # fmt: skip
        async with self._transaction() as tx:
            row = await fetch_one(tx, _DECIDE, params)
            changed = row is not None
            outcome: Outcome = "won"
            approval = None if row is None else approval_from_row(row, TIME)
            if not changed:  # lost: say why, from the row as it is now
                found = await fetch_one(tx, _GET, params)
                approval = None if found is None else approval_from_row(found, TIME)
                due = approval is not None and to_us(approval.expires_at) <= now
                outcome = loser_outcome(approval, due)
                if outcome == "expired" and approval is not None and approval.state == "pending":
                    # Found past its deadline before the sweep: expire it here, once.
                    approval = approval_from_row(await fetch_one(tx, _EXPIRE, params), TIME)
                    changed = True
            entry = click_audit(approval, approval_id, decision, by, actor_kind, outcome)
            await insert_audit(tx, entry, now)
            if changed and approval is not None:
                await _set_action_state(tx, approval.action_id, ACTION_STATE[approval.state])
                await append_events(tx, [event_for(approval)])
        return DecisionResult(outcome, approval)

    async def expire_approvals(
        self, event_for: ApprovalEventFor, *, now: datetime | None = None
    ) -> list[Approval]:
        at = self._auto_now() if now is None else to_us(now)
        async with self._transaction() as tx:
            rows = await tx.execute_fetchall(_EXPIRE, {"now": at, "id": None})
            expired = sorted(
                (approval_from_row(r, TIME) for r in rows), key=lambda a: (a.expires_at, a.id)
            )
            for approval in expired:
                await _set_action_state(tx, approval.action_id, ACTION_STATE["expired"])
                await insert_audit(tx, expiry_audit(approval), at)
            await append_events(tx, [event_for(a) for a in expired])
        return expired

    async def get_approval(self, approval_id: str) -> Approval | None:
        rows = await self._auto_read(_GET, {"id": approval_id})
        return next((approval_from_row(r, TIME) for r in rows), None)

    async def pending_approvals(self, project: str | None = None) -> list[Approval]:
        rows = await self._auto_read(
            f"SELECT {_APPROVAL} FROM approvals WHERE state = 'pending' AND expires_at_us > :now"
            " AND (:project IS NULL OR project = :project) ORDER BY created_at_us, rowid",
            {"now": self._auto_now(), "project": project},
        )
        return [approval_from_row(r, TIME) for r in rows]

    # -- audit log ---------------------------------------------------------------------
    async def append_audit(self, entry: AuditEntry) -> int:
        async with self._transaction() as tx:
            return await insert_audit(tx, entry, self._auto_now())

    async def list_audit(
        self, *, project: str | None = None, since: datetime | None = None, limit: int = 100
    ) -> list[AuditRecord]:
        check_limit(limit)
        rows = await self._auto_read(
            f"SELECT id, at_us, {_AUDIT} FROM audit_log"
            " WHERE (:project IS NULL OR project = :project)"
            " AND (:since IS NULL OR at_us >= :since) ORDER BY id DESC LIMIT :limit",
            {"project": project, "since": None if since is None else to_us(since), "limit": limit},
        )
        return [audit_record(r[0], from_us(r[1]), r[2:]) for r in rows]

    # -- plumbing (names distinct from the other mixins': they share one class) --------
    def _auto_now(self) -> int:
        return to_us(self._clock.now())

    async def _auto_read(self, sql: str, params: dict[str, Any]) -> Iterable[sqlite3.Row]:
        async with self._locked() as db:
            return await db.execute_fetchall(sql, params)


async def fetch_one(tx: aiosqlite.Connection, sql: str, params: dict[str, Any]) -> Any:
    return next(iter(await tx.execute_fetchall(sql, params)), None)


async def _set_action_state(tx: aiosqlite.Connection, action_id: str, state: str) -> None:
    await tx.execute("UPDATE actions SET state = ? WHERE id = ?", (state, action_id))


async def insert_audit(tx: aiosqlite.Connection, entry: AuditEntry, now: int) -> int:
    check_audit(entry)
    params = asdict(entry) | {"now": now, "details": json_text(entry.details)}
    row = await fetch_one(tx, _INSERT_AUDIT, params)
    return int(row[0])


async def append_events(tx: aiosqlite.Connection, events: Sequence[Event]) -> None:
    # Last in the transaction, as every event insert of the store: the rows they announce
    # are written, and an error in either rolls both back.
    await tx.executemany(SQL.insert_event, [event_row(e) for e in events])


def seconds_us(seconds: float) -> int:
    return round(seconds * 1_000_000)
