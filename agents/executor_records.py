"""What the Action Executor writes: each state change of an action with its event, in one
transaction (``storage.execution_store``), and one audit row per finished action, in the
transaction that finishes it.  The
relay is woken after each change so the event goes out at once."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final

from agents.clock import Clock
from agents.events import ACTION_STARTED, Event
from storage.autonomy_store import AuditEntry
from storage.base import Store
from storage.execution_store import RUNNING
from storage.operations_store import ActionEventFor, ActionRequest, AuditFor

log = logging.getLogger(__name__)

SOURCE: Final = "executor"
ACTOR_KIND: Final = {"user": "user", "operator": "operator", "autofix": "agent", "rules": "agent",
                     "claude": "claude"}  # fmt: skip


class ActionRecords:
    def __init__(
        self, store: Store, clock: Clock, wake: Callable[[], None], replica_id: str
    ) -> None:
        self._store = store
        self._clock = clock
        self._wake = wake
        self._replica = replica_id
        self.finished: Counter[tuple[str, str]] = Counter()  # (action, outcome) -> count

    def event_for(
        self, kind: str, *, error: bool = False, extra: dict[str, Any] | None = None
    ) -> ActionEventFor:
        def build(row: ActionRequest) -> Event:
            payload: dict[str, Any] = {"action_id": row.id, "action": row.action,
                                       "origin": row.origin}  # fmt: skip
            if row.outcome:
                payload["outcome"] = row.outcome
            if error and row.error:
                payload["error"] = row.error
            payload.update(extra or {})
            ts: datetime = row.finished_at or self._clock.now()
            if kind == ACTION_STARTED and row.state == RUNNING and row.started_at:
                ts = row.started_at
            return Event(kind, ts, SOURCE, payload, row.project, row.incident_id)

        return build

    async def move(
        self,
        action: ActionRequest,
        from_states: Sequence[str],
        to_state: str,
        kind: str,
        *,
        outcome: str | None = None,
        error: str | None = None,
        extra: dict[str, Any] | None = None,
        audit: AuditFor | None = None,
    ) -> ActionRequest | None:
        """Compare-and-set ``action`` from one of ``from_states`` to ``to_state`` with its
        ``kind`` event (and ``audit``'s row, in the same transaction); None when someone
        else moved it first."""
        row = await self._store.move_action(
            action.id, from_states, to_state,
            self.event_for(kind, error=error is not None, extra=extra),
            outcome=outcome, error=error, audit=audit,
        )  # fmt: skip
        if row is not None:
            self._wake()
        return row

    async def finish(
        self,
        action: ActionRequest,
        from_states: Sequence[str],
        to_state: str,
        kind: str,
        *,
        outcome: str | None = None,
        error: str | None = None,
        extra: dict[str, Any] | None = None,
        decision: str = "allowed",
        output: str = "",
    ) -> ActionRequest | None:
        """``move`` to a final state with the action's audit row, written together: a
        finished action never lacks its row, whatever fails between two writes (issue
        10.1).  If the database is away the action stays where it was, and whoever
        finishes it later (this replica or its heir) writes both."""
        final = await self.move(action, from_states, to_state, kind, outcome=outcome,
                                error=error, extra=extra,
                                audit=self._audit_row(decision, output))  # fmt: skip
        if final is not None:
            # Every finished action passes here once: orch's /metrics counts them.
            counted = "refused" if decision == "refused" else final.state
            self.finished[final.action, counted] += 1
        return final

    def _audit_row(self, decision: str, output: str) -> AuditFor:
        def build(final: ActionRequest) -> AuditEntry:
            details: dict[str, Any] = {"outcome": final.outcome, "error": final.error,
                                       "executor": self._replica}  # fmt: skip
            if output:
                details["output"] = output[-1000:]
            return AuditEntry(
                actor=final.requested_by, actor_kind=ACTOR_KIND.get(final.origin, "agent"),
                action=final.action, decision=decision, project=final.project,
                reason=final.reason, outcome=final.state, action_id=final.id, details=details,
            )  # fmt: skip

        return build
