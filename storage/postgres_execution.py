"""The PostgreSQL side of ``storage.execution_store``: claiming and moving actions.

A mixin of ``PostgresStore``.  Each move is one ``UPDATE ... WHERE state IN (...)``: under
READ COMMITTED a second updater waits for the first's row lock, re-checks the condition
on the committed row and matches nothing, so of concurrent callers (tasks or replicas)
exactly one moves it.  The event is inserted last, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import asyncpg

from storage.execution_store import APPROVED, FINISHED, RUNNING, action_columns, check_move
from storage.operations_store import REQUESTED, ActionEventFor, ActionRequest, AuditFor
from storage.postgres_autonomy import INSERT_AUDIT, audit_args
from storage.postgres_sql import TIME, insert_events
from storage.rows import action_from_row, check_limit

_ACTION = action_columns("")
_START = f"""
    UPDATE actions SET state = '{RUNNING}', executor = $2, started_at = now()
    WHERE id = $1 AND ((state = '{REQUESTED}' AND NOT needs_approval) OR state = '{APPROVED}')
    RETURNING {_ACTION}"""
_MOVE = f"""
    UPDATE actions SET state = $3, outcome = coalesce($4, outcome), error = coalesce($5, error),
        finished_at = CASE WHEN $6 THEN now() ELSE finished_at END
    WHERE id = $1 AND state = ANY($2::text[])
    RETURNING {_ACTION}"""


class PostgresExecution:
    if TYPE_CHECKING:  # provided by PostgresStore

        def _acquire(self) -> AbstractAsyncContextManager[asyncpg.Connection]: ...

        async def _fetch(self, sql: str, *params: Any) -> list[asyncpg.Record]: ...

        def transaction(self) -> AbstractAsyncContextManager[asyncpg.Connection]: ...

    async def start_action(
        self, action_id: str, executor: str, event_for: ActionEventFor
    ) -> ActionRequest | None:
        return await self._moved(event_for, _START, action_id, executor)

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
        return await self._moved(event_for, _MOVE, action_id, list(from_states), to_state,
                                 outcome, error, to_state in FINISHED, audit=audit)  # fmt: skip

    async def incident_actions(self, incident_id: str) -> list[ActionRequest]:
        rows = await self._fetch(
            f"SELECT {_ACTION} FROM actions WHERE incident_id = $1 ORDER BY created_at, seq",
            incident_id,
        )
        return [action_from_row(r, TIME) for r in rows]

    async def actions_in(self, states: Sequence[str], limit: int = 100) -> list[ActionRequest]:
        rows = await self._fetch(
            f"SELECT {_ACTION} FROM actions WHERE state = ANY($1::text[])"
            " ORDER BY created_at, seq LIMIT $2",
            list(states),
            check_limit(limit),
        )
        return [action_from_row(r, TIME) for r in rows]

    # -- plumbing (names distinct from the other mixins': they share one class) --------
    async def _moved(
        self, event_for: ActionEventFor, sql: str, *params: Any, audit: AuditFor | None = None
    ) -> ActionRequest | None:
        async with self.transaction() as conn:
            row = await conn.fetchrow(sql, *params)
            if row is None:
                return None
            action = action_from_row(row, TIME)
            if audit is not None:
                await conn.execute(INSERT_AUDIT, *audit_args(audit(action)))
            await insert_events(conn, [event_for(action)])
        return action
