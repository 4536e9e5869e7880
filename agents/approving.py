"""Deciding an approval, whoever decides: a Slack click (``bot.slack.approvals``), an
operator at a terminal (``bot.cli_approvals``) or a call to the HTTP API (``bot.api``).

Each front end reads the approval by id, checks it against the configuration as it is now
(``preflight``), authorises the person its own way, then calls ``decide``: the store's
compare-and-set, which writes the decision's audit row and event in one transaction.  A
request refused before any decision is attempted gets its audit row from ``refuse``, so
every attempt, allowed or not, is recorded.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from agents.actions import approval_event
from storage.autonomy_store import Approval, AuditEntry, Decision, DecisionResult
from storage.base import Store

if TYPE_CHECKING:  # agents stay importable without the config models
    from bot.config import Config, Project

log = logging.getLogger(__name__)

# What an approval id may look like (the templates' ``opaque``), checked before the store
# sees it; anything else is a tampered value.
_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def is_approval_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Refusal:
    outcome: str  # project_gone | action_not_allowed (the audit row's outcome)
    why: str  # for people


def preflight(config: Config, approval: Approval, decision: Decision) -> Project | Refusal:
    """The approval's project as configured now, or why the decision is refused before
    it is attempted: the project is gone, or granting an action it no longer allows."""
    try:
        project = config.project(approval.project)
    except KeyError:
        return Refusal("project_gone", f"{approval.project} is no longer configured")
    if decision == "granted" and approval.action not in project.allowed_actions:
        action = approval.action.replace("_", "-")
        return Refusal("action_not_allowed", f"{project.name} no longer allows {action}")
    return project


async def decide(
    store: Store,
    approval: Approval,
    decision: Decision,
    by: str,
    *,
    four_eyes: bool,
    actor_kind: str,
    source: str,
) -> DecisionResult:
    """The compare-and-set, with the event of the approval's new state threaded into the
    incident its action is about (the store writes the audit row)."""
    action = await store.get_action(approval.action_id)
    incident_id = action.incident_id if action is not None else None
    return await store.decide_approval(
        approval.id, decision, by, four_eyes=four_eyes,
        event_for=approval_event(incident_id, source), actor_kind=actor_kind,
    )  # fmt: skip


async def refuse(
    store: Store,
    user: str,
    decision: Decision,
    approval: Approval | None,
    outcome: str,
    why: str,
    *,
    value: str = "",
    actor_kind: str = "user",
    extra: Mapping[str, Any] | None = None,
) -> None:
    """The audit row of an attempt refused before any decision was attempted; ``extra``
    goes into its details (e.g. which front end, which API user)."""
    details: dict[str, Any] = {"click": decision, **(extra or {})}
    if approval is None:
        details["value"] = value[:200]
    entry = AuditEntry(
        actor=user, actor_kind=actor_kind,
        action=approval.action if approval else "approve", decision="refused",
        project=approval.project if approval else None, reason=why, outcome=outcome,
        approval_id=approval.id if approval else (value[:64] or None),
        action_id=approval.action_id if approval else None, details=details,
    )  # fmt: skip
    await store.append_audit(entry)
    log.info("approval attempt by %s refused: %s", user, outcome)


async def note(
    store: Store,
    user: str,
    actor_kind: str,
    decision: Decision,
    result: DecisionResult,
    reason: str,
    *,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """A decider's reason, as an audit row of its own next to the decision's."""
    a = result.approval
    entry = AuditEntry(
        actor=user, actor_kind=actor_kind, action=a.action if a else "approve",
        decision="comment", project=a.project if a else None, reason=reason,
        outcome=result.outcome, approval_id=a.id if a else None,
        action_id=a.action_id if a else None, details={"decision": decision, **(extra or {})},
    )  # fmt: skip
    await store.append_audit(entry)
