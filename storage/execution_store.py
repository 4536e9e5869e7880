"""Running actions, in the store: the execution states of an ``actions`` row (DESIGN §4).

An action moves through these states; every move is a compare-and-set (``UPDATE ...
WHERE state IN (...)``) that commits with the event announcing it, so a redelivered event
or a second replica finds the row already moved and does nothing::

    requested ──(needs approval)──> awaiting_approval ──> approved | denied | expired
        │                                                   │
        └──────────────(runnable)───────────────────────────┴──> running
    running ──> verifying ──> verified | failed        running ──> failed

``running``: an executor claimed it and is calling ``/control`` (or the command adapter);
``verifying``: the call was accepted, or its outcome is unknown, and the executor re-probes
the project until it is healthy or a deadline passes.  ``outcome`` keeps what the project
answered (accepted | refused | unknown), ``error`` why it failed, for people.

Columns added by ``migrations/*/0010_execution.sql``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol

from storage.autonomy_store import ACTION_STATE, AWAITING_APPROVAL
from storage.operations_store import REQUESTED, ActionEventFor, ActionRequest, AuditFor

APPROVED: Final = ACTION_STATE["granted"]
RUNNING: Final = "running"
VERIFYING: Final = "verifying"
VERIFIED: Final = "verified"
FAILED: Final = "failed"
DENIED: Final = ACTION_STATE["denied"]
EXPIRED: Final = ACTION_STATE["expired"]

# Not finished yet: a project with one of these has an action in flight.
IN_FLIGHT: Final = frozenset({REQUESTED, AWAITING_APPROVAL, APPROVED, RUNNING, VERIFYING})
FINISHED: Final = frozenset({VERIFIED, FAILED, DENIED, EXPIRED})
# Who decided to act.  ``autofix`` is orch's Auto-Fixer; ``claude`` and ``rules`` are the
# two analysis engines recommending (always through a human's approval); the others are
# people.
ORIGINS: Final = ("user", "operator", "autofix", "claude", "rules")
OUTCOMES: Final = ("accepted", "refused", "unknown")


def action_columns(time_suffix: str) -> str:
    """The ``actions`` columns in ``ActionRequest``'s order; SQLite names its instants
    ``*_us``, PostgreSQL plain."""
    t = time_suffix
    return (
        f"id, project, action, requested_by, reason, state, needs_approval, created_at{t},"
        f" incident_id, origin, outcome, error, executor, started_at{t}, finished_at{t}"
    )


def check_origin(origin: str) -> str:
    if origin not in ORIGINS:
        raise ValueError(f"origin must be one of {ORIGINS}, got {origin!r}")
    return origin


def check_move(to_state: str, outcome: str | None) -> None:
    """Refused alike on both backends, before anything is written."""
    if to_state not in (VERIFYING, VERIFIED, FAILED):
        raise ValueError(f"an action can move to verifying, verified or failed, not {to_state!r}")
    if outcome is not None and outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")


class ExecutionStore(Protocol):
    async def start_action(
        self, action_id: str, executor: str, event_for: ActionEventFor
    ) -> ActionRequest | None:
        """Claim a runnable action (``requested`` without needing approval, or
        ``approved``) for ``executor``: it becomes ``running`` (started now) with its
        ``action.started`` event.  None, with nothing written, when it is not runnable (not
        found, already claimed, waiting for or refused approval): of concurrent callers
        exactly one gets the row."""
        ...

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
        """Move the action from one of ``from_states`` to ``to_state`` (verifying,
        verified or failed; the last two stamp ``finished_at``), setting ``outcome`` and
        ``error`` where given, with its event, and ``audit``'s row when given (a finished
        action and its audit row are written together or not at all).  None, with nothing
        written, when the row is not in ``from_states``."""
        ...

    async def incident_actions(self, incident_id: str) -> list[ActionRequest]:
        """The actions about ``incident_id``, oldest first."""
        ...

    async def actions_in(self, states: Sequence[str], limit: int = 100) -> list[ActionRequest]:
        """Actions in ``states``, oldest first (the executor's sweep for work an event
        did not bring, e.g. an approval granted by ``orch approve`` in another process)."""
        ...
