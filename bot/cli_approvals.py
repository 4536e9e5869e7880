"""``orch approve|deny <id>`` and ``orch approvals``: an operator at a terminal decides an
approval as the buttons do, audited as the OS user (actor kind ``operator``), which is
also how ``make demo`` answers approvals without Slack.  They only write the store: the
running orch publishes the stored event (its outbox relay sweeps), and its Action
Executor runs what was approved.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import datetime
from typing import TYPE_CHECKING

from bot.settings import Settings

if TYPE_CHECKING:
    from bot.config import Config
    from storage.autonomy_store import Approval, Decision, DecisionResult
    from storage.base import Store

APPROVAL_COMMANDS = ("approve", "deny", "approvals")


def os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (a bare container)
        return "unknown-operator"


async def approvals_command(args: argparse.Namespace, settings: Settings) -> int:
    """0 when the decision was this call's; 1 when it was refused, not found, expired or
    already decided; 2 when the configuration is not valid."""
    from bot.config_loader import ConfigError, load_config
    from storage.factory import open_store

    config = None
    if args.command != "approvals":
        try:
            config = load_config(settings.config_path, settings.env, require_secrets=False)
        except ConfigError as exc:
            print(f"orch: the configuration is not valid:\n{exc}", file=sys.stderr)
            return 2
    store = open_store(settings.database_url, settings.sqlite_path)
    await store.open()
    try:
        if config is None:
            return await list_approvals(store)
        decision: Decision = "granted" if args.command == "approve" else "denied"
        return await decide_at_terminal(store, config, args.id, decision, os_user(), args.reason)
    finally:
        await store.close()


async def list_approvals(store: Store) -> int:
    pending = await store.pending_approvals()
    if not pending:
        print("no approvals are waiting")
        return 0
    now = await store.db_now()
    print(f"{'ID':<32}  {'PROJECT':<20} {'ACTION':<12} {'REQUESTED BY':<16} EXPIRES")
    for a in pending:
        left = max(0, int((a.expires_at - now).total_seconds()))
        expires = f"{a.expires_at:%H:%M:%S} UTC (in {left // 60}m {left % 60:02d}s)"
        print(f"{a.id:<32}  {a.project:<20} {a.action:<12} {a.requested_by:<16} {expires}")
    return 0


async def find_approval(store: Store, ref: str) -> tuple[Approval | None, str]:
    """The approval ``ref`` names (its id, or the start of a pending one's id), or why
    not."""
    from bot.slack.approvals import is_approval_id

    if not is_approval_id(ref):
        return None, f"{ref!r} is not an approval id"
    exact = await store.get_approval(ref)
    if exact is not None:
        return exact, ""
    matches = [a for a in await store.pending_approvals() if a.id.startswith(ref)]
    if len(matches) == 1:
        return matches[0], ""
    if not matches:
        return None, f"no pending approval matches {ref}"
    shown = ", ".join(a.id[:8] for a in matches[:5])
    return None, f"{ref} matches {len(matches)} pending approvals ({shown}); type more of the id"


async def decide_at_terminal(
    store: Store, config: Config, ref: str, decision: Decision, user: str, reason: str = ""
) -> int:
    from bot.slack.approvals import decide, refuse

    approval, why = await find_approval(store, ref)
    if approval is None:
        await refuse(store, user, decision, None, "not_found", why, value=ref,
                     actor_kind="operator")  # fmt: skip
        print(f"orch: {why}", file=sys.stderr)
        return 1
    try:
        project = config.project(approval.project)
    except KeyError:
        project = None
    allowed = project is not None and approval.action in project.allowed_actions
    if decision == "granted" and not allowed:  # denying is always safe
        why = f"{approval.project} no longer allows {approval.action} (the configuration changed)"
        await refuse(store, user, decision, approval, "action_not_allowed", why,
                     actor_kind="operator")  # fmt: skip
        print(f"orch: {why}; not approved", file=sys.stderr)
        return 1
    four_eyes = project.policy.four_eyes if project is not None else True
    result = await decide(store, approval, decision, user, four_eyes=four_eyes,
                          actor_kind="operator", source="cli")  # fmt: skip
    if reason:
        await _note(store, user, decision, result, reason)
    print(outcome_line(result, decision, user))
    return 0 if result.won else 1


async def _note(
    store: Store, user: str, decision: Decision, result: DecisionResult, reason: str
) -> None:
    """The operator's --reason, as an audit row of its own next to the decision's."""
    from storage.autonomy_store import AuditEntry

    a = result.approval
    entry = AuditEntry(
        actor=user, actor_kind="operator", action=a.action if a else "approve",
        decision="comment", project=a.project if a else None, reason=reason,
        outcome=result.outcome, approval_id=a.id if a else None,
        action_id=a.action_id if a else None, details={"decision": decision},
    )  # fmt: skip
    await store.append_audit(entry)


def _at(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment is not None else "an unknown time"


def outcome_line(result: DecisionResult, decision: str, user: str) -> str:
    a = result.approval
    if a is None:
        return "no such approval"
    what = f"{a.action} on {a.project}"
    if result.outcome == "won":
        if decision == "granted":
            return f"approved {a.id[:8]} as {user}: {what} runs in the running orch"
        return f"denied {a.id[:8]} as {user}: {what} will not run"
    if result.outcome == "already_decided":
        word = "approved" if a.state == "granted" else "denied"
        return f"{a.id[:8]} was already {word} by {a.decided_by} at {_at(a.decided_at)}"
    if result.outcome == "expired":
        return f"{a.id[:8]} expired at {_at(a.expires_at)}: nothing ran"
    if result.outcome == "four_eyes":
        return f"{a.id[:8]} was requested by {user}: another approver must approve"
    return f"no approval {a.id[:8]}"
