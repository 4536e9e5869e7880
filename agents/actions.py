"""Asking for an action: one path for every origin (a Slack command, ``orch`` at a
terminal, the Auto-Fixer, a recommendation of Claude's).

The request and, when it needs one, its approval are stored with their events
(``action.requested``, ``approval.requested``).  Nothing here runs anything: the Action
Executor (``agents.executor``) picks up a request that needs no approval, or the approval
once granted.  Both events carry the incident the action is about, so the incident's
card thread shows the request and the approval card.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from agents.events import (
    ACTION_REQUESTED,
    APPROVAL_DENIED,
    APPROVAL_EXPIRED,
    APPROVAL_GRANTED,
    APPROVAL_REQUESTED,
    Event,
)
from storage.autonomy_store import DEFAULT_APPROVAL_TTL_S, Approval, ApprovalEventFor
from storage.base import Store
from storage.operations_store import ActionEventFor, ActionRequest, AuditFor

# An approval's event type by the state it reached.
APPROVAL_EVENT: Final = {
    "pending": APPROVAL_REQUESTED,
    "granted": APPROVAL_GRANTED,
    "denied": APPROVAL_DENIED,
    "expired": APPROVAL_EXPIRED,
}


# Origins whose requests always wait for a human: the analysis engines.
ADVISORS: Final = frozenset({"claude", "rules"})


@dataclass(frozen=True, slots=True)
class Requested:
    action: ActionRequest
    approval: Approval | None  # None: runs without one


def action_event(incident_id: str | None, source: str) -> ActionEventFor:
    """``action.requested`` from the row as stored."""

    def build(request: ActionRequest) -> Event:
        payload = {"action_id": request.id, "action": request.action,
                   "requested_by": request.requested_by, "reason": request.reason,
                   "needs_approval": request.needs_approval, "origin": request.origin}  # fmt: skip
        return Event(ACTION_REQUESTED, request.created_at, source, payload,
                     request.project, incident_id)  # fmt: skip

    return build


def approval_event(incident_id: str | None, source: str) -> ApprovalEventFor:
    """The event of an approval's current state (requested, granted, denied, expired),
    from the row as stored; ``by`` is who decided (absent while pending and on expiry)."""

    def build(approval: Approval) -> Event:
        payload: dict[str, object] = {
            "approval_id": approval.id, "action_id": approval.action_id,
            "action": approval.action, "requested_by": approval.requested_by,
            "reason": approval.reason, "expires_at": approval.expires_at.isoformat(),
        }  # fmt: skip
        if approval.decided_by is not None:
            payload["by"] = approval.decided_by
        at = approval.decided_at or approval.created_at
        if approval.state == "expired":
            at = approval.expires_at
        return Event(APPROVAL_EVENT[approval.state], at, source, payload,
                     approval.project, incident_id)  # fmt: skip

    return build


async def request_action(
    store: Store,
    project: str,
    action: str,
    *,
    requested_by: str,
    reason: str,
    origin: str,
    needs_approval: bool,
    incident_id: str | None = None,
    source: str = "orch",
    approval_ttl_s: float = DEFAULT_APPROVAL_TTL_S,
    audit: AuditFor | None = None,
) -> Requested:
    """Store the request (and its approval when it needs one), with their events.  What
    an analysis recommends (Claude's or the rule engine's) always needs a human's
    approval, whatever the caller says (DESIGN §6: Claude advises, code decides, people
    approve).

    Two transactions: if orch dies between them, the request waits for an approval that
    was never asked, so it never runs: the safe side.  ``audit``: the row that allows a
    request running at once, written in the request's own transaction."""
    needs_approval = needs_approval or origin in ADVISORS
    request = await store.request_action(
        project, action, requested_by, reason, needs_approval,
        action_event(incident_id, source), incident_id=incident_id, origin=origin,
        audit=None if needs_approval else audit,
    )  # fmt: skip
    if not needs_approval:
        return Requested(request, None)
    approval = await store.create_approval(
        request.id, project, action, requested_by, reason, approval_ttl_s,
        approval_event(incident_id, source),
    )  # fmt: skip
    return Requested(request, approval)
