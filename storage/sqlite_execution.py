"""The SQLite side of ``storage.execution_store``: claiming and moving actions.

A mixin of ``SQLiteStore``.  Each move is one ``_transaction`` (BEGIN IMMEDIATE: SQLite's
single writer) holding the compare-and-set ``UPDATE ... WHERE state IN (...)`` and the
event, so of two callers (two tasks, or two processes on one file) exactly one moves it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import aiosqlite

from agents.clock import Clock
from storage.execution_store import (
    APPROVED,
    FINISHED,
    RUNNING,
    action_columns,
    check_move,
)
from storage.operations_store import REQUESTED, ActionEventFor, ActionRequest, AuditFor
from storage.rows import action_from_row, check_limit
from storage.sqlite_autonomy import append_events, fetch_one, insert_audit
from storage.sqlite_codec import TIME, to_us

_ACTION = action_columns("_us")
_START = f"""
    UPDATE actions SET state = '{RUNNING}', executor = :executor, started_at_us = :now
    WHERE id = :id AND ((state = '{REQUESTED}' AND needs_approval = 0) OR state = '{APPROVED}')
    RETURNING {_ACTION}"""
_MOVE = f"""
    UPDATE actions SET state = :to, outcome = coalesce(:outcome, outcome),
        error = coalesce(:error, error),
        finished_at_us = CASE WHEN :finished THEN :now ELSE finished_at_us END
    WHERE id = :id AND state IN (SELECT value FROM json_each(:from))
    RETURNING {_ACTION}"""


class SQLiteExecution:
    if TYPE_CHECKING:  # provided by SQLiteStore
        _clock: Clock

        def _locked(self) -> AbstractAsyncContextManager[aiosqlite.Connection]: ...

        def _transaction(self) -> AbstractAsyncContextManager[aiosqlite.Connection]: ...

    async def start_action(
        self, action_id: str, executor: str, event_for: ActionEventFor
    ) -> ActionRequest | None:
        params = {"id": action_id, "executor": executor, "now": to_us(self._clock.now())}
        return await self._moved(_START, params, event_for)

    async def move_action(
        self,
        action_id: str,
        from_states: Sequence[str],
        to_state: str,
        event_for: ActionEventFor,
        *,
        outcome: str | None = None,
        error: str | None = None,
        audit: AuditFor | None = None,
    ) -> ActionRequest | None:
        check_move(to_state, outcome)
        params = {"id": action_id, "to": to_state, "from": json.dumps(list(from_states)),
                  "outcome": outcome, "error": error, "finished": to_state in FINISHED,
                  "now": to_us(self._clock.now())}  # fmt: skip
        return await self._moved(_MOVE, params, event_for, audit)

    async def incident_actions(self, incident_id: str) -> list[ActionRequest]:
        rows = await self._exec_read(
            f"SELECT {_ACTION} FROM actions WHERE incident_id = :id ORDER BY created_at_us, rowid",
            {"id": incident_id},
        )
        return [action_from_row(r, TIME) for r in rows]

    async def actions_in(self, states: Sequence[str], limit: int = 100) -> list[ActionRequest]:
        rows = await self._exec_read(
            f"SELECT {_ACTION} FROM actions WHERE state IN (SELECT value FROM json_each(:s))"
            " ORDER BY created_at_us, rowid LIMIT :limit",
            {"s": json.dumps(list(states)), "limit": check_limit(limit)},
        )
        return [action_from_row(r, TIME) for r in rows]

    # -- plumbing (names distinct from the other mixins': they share one class) --------
    async def _moved(
        self,
        sql: str,
        params: dict[str, Any],
        event_for: ActionEventFor,
        audit: AuditFor | None = None,
    ) -> ActionRequest | None:
        async with self._transaction() as tx:
            row = await fetch_one(tx, sql, params)
            if row is None:
                return None
            action = action_from_row(row, TIME)
            if audit is not None:
                await insert_audit(tx, audit(action), to_us(self._clock.now()))
            await append_events(tx, [event_for(action)])
        return action

    async def _exec_read(self, sql: str, params: dict[str, Any]) -> Iterable[sqlite3.Row]:
        async with self._locked() as db:
            return await db.execute_fetchall(sql, params)
