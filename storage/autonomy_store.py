"""Deciding to act on the fleet, in the store: approvals and the audit log (DESIGN §5, §6).
The budgets that limit acting are ``storage.budget_store``.

Tables (``migrations/*/0007_autonomy.sql``):

- ``approvals``: one row per approval asked for an ``actions`` row.  Deciding is a
  compare-and-set (``UPDATE ... WHERE state = 'pending' AND expires_at > now``), so double
  clicks and clicks on two replicas give exactly one decision; the action row's state
  follows (``ACTION_STATE``).  An action has at most one pending approval.
- ``audit_log``: append-only (triggers refuse UPDATE and DELETE, on PostgreSQL for orch's
  own role too).  Deciding and expiring write their rows themselves, in the transaction
  of the change: every click, allowed or refused, is recorded, or nothing happened.

Every state change commits with the event that announces it, built by the caller's
``event_for`` from the row as stored.  Times are database time (PostgreSQL ``now()``; the
SQLite store's injected clock): a replica whose clock is off neither extends nor cuts an
approval's time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal, Protocol

from agents.events import Event

DEFAULT_APPROVAL_TTL_S: Final = 30 * 60.0  # DESIGN §5
Decision = Literal["granted", "denied"]
# won: this call decided.  already_decided: someone else granted or denied it first
# (``approval.decided_by`` / ``decided_at`` / ``state`` say who, when and what).
# expired: too late, nothing runs.  four_eyes: the requester may not approve.
Outcome = Literal["won", "already_decided", "expired", "four_eyes", "not_found"]
# An action's state once its approval leaves ``pending`` (and while it waits).
AWAITING_APPROVAL: Final = "awaiting_approval"
ACTION_STATE: Final[Mapping[str, str]] = {
    "granted": "approved",
    "denied": "denied",
    "expired": "expired",
}
ACTOR_KINDS: Final = ("user", "agent", "operator", "claude")
# Who audits an expiry: nobody clicked, the store's sweep decided.
EXPIRY_ACTOR: Final = "orch"


@dataclass(frozen=True, slots=True)
class Approval:
    id: str
    action_id: str
    project: str
    action: str
    requested_by: str
    reason: str
    state: str  # pending | granted | denied | expired
    expires_at: datetime
    created_at: datetime
    decided_by: str | None = None  # None while pending, and for an expiry
    decided_at: datetime | None = None  # an expiry is dated at expires_at


@dataclass(frozen=True, slots=True)
class DecisionResult:
    outcome: Outcome
    approval: Approval | None  # the row after this call; None when not_found

    @property
    def won(self) -> bool:
        return self.outcome == "won"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit row to append (``at`` and ``id`` come from the store)."""

    actor: str  # a Slack user id, an agent's name, "orch"
    actor_kind: str  # user | agent | operator | claude
    action: str  # restart | pause | approve | ...
    decision: str  # what was decided: allowed | refused | granted | denied | expired ...
    project: str | None = None
    reason: str = ""
    outcome: str = ""  # what came of it: won | four_eyes | succeeded | failed ...
    approval_id: str | None = None
    action_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int  # insertion order
    at: datetime
    entry: AuditEntry


ApprovalEventFor = Callable[[Approval], Event]


def audit_record(audit_id: int, at: datetime, fields: Sequence[Any]) -> AuditRecord:
    """A row of ``audit_log``: columns in AuditEntry's order, details as JSON text."""
    actor, kind, action, decision, project, reason, outcome, approval_id, action_id, details = (
        fields
    )
    entry = AuditEntry(actor, kind, action, decision, project, reason, outcome, approval_id,
                       action_id, json.loads(details))  # fmt: skip
    return AuditRecord(audit_id, at, entry)


def check_decision(decision: str) -> None:
    if decision not in ("granted", "denied"):
        raise ValueError(f"decision must be 'granted' or 'denied', got {decision!r}")


def check_request(found: tuple[str, str] | None, action_id: str, project: str, action: str,
                  has_pending: bool) -> None:  # fmt: skip
    """Why ``create_approval`` refuses: ``found`` is the action row's (project, action)."""
    if found is None:
        raise LookupError(f"no action {action_id!r}")
    if tuple(found) != (project, action):
        raise ValueError(
            f"action {action_id!r} is {found[1]} on {found[0]}, not {action} on {project}"
        )
    if has_pending:
        raise ValueError(f"action {action_id!r} already has a pending approval")


def loser_outcome(approval: Approval | None, due: bool) -> Outcome:
    """Why a decision's compare-and-set matched no row, from the row as it now is."""
    if approval is None:
        return "not_found"
    if approval.state == "expired" or (approval.state == "pending" and due):
        return "expired"
    if approval.state != "pending":
        return "already_decided"
    return "four_eyes"  # pending, not due: the only condition left is four-eyes


def check_audit(entry: AuditEntry) -> None:
    # Checked here so both backends raise ValueError (their CHECKs raise different types).
    if entry.actor_kind not in ACTOR_KINDS:
        raise ValueError(f"actor_kind must be one of {ACTOR_KINDS}, got {entry.actor_kind!r}")


def check_ttl(ttl_s: float) -> float:
    # Zero or less is allowed (an approval already due: tests need no waiting); NaN is not.
    if not math.isfinite(ttl_s):
        raise ValueError(f"ttl_s must be finite, got {ttl_s}")
    return float(ttl_s)


def four_eyes_guard(decision: str, four_eyes: bool) -> bool:
    """Whether the decider must not be the requester.  Only granting is guarded: a
    requester withdrawing (denying) their own request is no risk."""
    return four_eyes and decision == "granted"


def click_audit(approval: Approval | None, approval_id: str, decision: str, by: str,
                actor_kind: str, outcome: str) -> AuditEntry:  # fmt: skip
    """The audit row of one decide_approval call, whatever its outcome."""
    details = {} if approval is None else {"state": approval.state,
                                           "decided_by": approval.decided_by}  # fmt: skip
    return AuditEntry(
        actor=by, actor_kind=actor_kind, action=approval.action if approval else "approve",
        decision=decision, project=approval.project if approval else None,
        reason=approval.reason if approval else "", outcome=outcome,
        approval_id=approval_id, action_id=approval.action_id if approval else None,
        details=details,
    )  # fmt: skip


def expiry_audit(approval: Approval) -> AuditEntry:
    return AuditEntry(
        actor=EXPIRY_ACTOR, actor_kind="agent", action=approval.action, decision="expired",
        project=approval.project, reason=approval.reason, outcome="expired",
        approval_id=approval.id, action_id=approval.action_id,
    )  # fmt: skip


class AutonomyStore(Protocol):
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
        """Ask for approval of action ``action_id`` until db now + ``ttl_s`` (zero or less:
        already due, for tests), with its event; the action becomes ``awaiting_approval``.
        LookupError when the action does not exist; ValueError when its project/action
        differ from the arguments or it already has a pending approval."""
        ...

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
        """Grant or deny, compare-and-set: of concurrent callers exactly one wins.  The
        winner's row, its action's new state, its event and an audit row commit together;
        every other outcome writes only its audit row, except a pending approval found
        past its expiry, which this call expires (with the ``approval.expired`` event
        ``event_for`` builds from the expired row)."""
        ...

    async def expire_approvals(
        self, event_for: ApprovalEventFor, *, now: datetime | None = None
    ) -> list[Approval]:
        """Expire every pending approval due at ``now`` (None: db now) with its event and
        audit row; return them (by expiry).  Concurrent callers expire each one once."""
        ...

    async def get_approval(self, approval_id: str) -> Approval | None: ...

    async def pending_approvals(self, project: str | None = None) -> list[Approval]:
        """Pending and not yet due at db now (still decidable), oldest first."""
        ...

    # -- audit log ---------------------------------------------------------------------
    async def append_audit(self, entry: AuditEntry) -> int:
        """Append one row dated db now; return its id (ids grow with insertion)."""
        ...

    async def list_audit(
        self, *, project: str | None = None, since: datetime | None = None, limit: int = 100
    ) -> list[AuditRecord]:
        """Newest first (by id); ``since`` is inclusive on ``at``."""
        ...
