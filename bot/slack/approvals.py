"""Approve / Deny: the buttons of an approval card, in a thread or on the App Home.

The listener acknowledges at once and decides in the background (``Background``).  A
button carries only the approval id, so nothing in the click is trusted: the approval is
read by id (unknown or tampered: refused), the project and action are read from the
config as it is now (project gone, or an action it no longer allows: refused), and the
clicker is authorised against the group's approvers (``bot.slack.approvers``; a failed
user-group lookup refuses).  Then ``decide_approval`` is the store's compare-and-set, with
four-eyes from the project's policy: of any number of clicks, on any number of replicas,
one decides; the others hear who did and when.  Every click is an audit row: the store
writes one for each ``decide_approval`` call, this module one for each refusal before it.

The clicker gets the answer alone: ephemeral in the card's channel, or, from the App
Home, their Home tab published again with the answer on top.  The card itself is edited
by the notifier from the event the decision stored.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.web.async_client import AsyncWebClient

from agents.approving import Refusal, decide, is_approval_id, preflight, refuse
from bot.slack import replies
from bot.slack.approvers import Approvers
from bot.slack.home import publish_home
from bot.slack.replies import Reply
from bot.slack.services import Services
from bot.slack.work import is_retry, request_key
from storage.autonomy_store import Decision

log = logging.getLogger(__name__)

APPROVE: Final = "approval_approve"
DENY: Final = "approval_deny"
DECISIONS: Final[dict[str, Decision]] = {APPROVE: "granted", DENY: "denied"}
SOURCE: Final = "slack"


def register(app: AsyncApp, services: Services, approvers: Approvers) -> None:
    for action_id, decision in DECISIONS.items():
        app.action(action_id)(_listener(services, approvers, decision))


def _listener(services: Services, approvers: Approvers, decision: Decision) -> Any:
    async def on_click(
        ack: AsyncAck, body: dict[str, Any], request: AsyncBoltRequest, client: AsyncWebClient
    ) -> None:
        await ack()  # within Slack's 3 s, whatever the store and user groups take
        user = (body.get("user") or {}).get("id")
        if not isinstance(user, str) or not user:
            log.warning("an approval click without a user; ignored")
            return
        value = _value(body)

        async def work() -> None:
            reply = await click(services, approvers, value, decision, user)
            await answer(services, client, body, user, reply)

        services.background.submit(request_key(body), is_retry(request.headers), work)

    return on_click


def _value(body: dict[str, Any]) -> str:
    actions = body.get("actions")
    first = actions[0] if isinstance(actions, list) and actions else {}
    value = first.get("value") if isinstance(first, dict) else None
    return value if isinstance(value, str) else ""


async def answer(
    services: Services, client: AsyncWebClient, body: dict[str, Any], user: str, reply: Reply
) -> None:
    """Tell the clicker alone: in the card's channel, or on their App Home."""
    container = body.get("container")
    if isinstance(container, dict) and container.get("type") == "view":
        await publish_home(services, client, user, notice=reply)
        return
    await services.replier.ephemeral(body, reply)


async def click(
    services: Services, approvers: Approvers, value: str, decision: Decision, user: str
) -> Reply:
    """One click on Approve or Deny, from the button's value to the clicker's answer."""
    store = services.store
    approval = await store.get_approval(value) if is_approval_id(value) else None
    if approval is None:
        why = f"no approval {value[:64]!r}"
        await refuse(store, user, decision, None, "not_found", why, value=value)
        return replies.error_reply(
            "That approval does not exist.", "The App Home lists the approvals waiting."
        )
    config = services.config()
    project = preflight(config, approval, decision)  # re-read: the config may be new
    if isinstance(project, Refusal):
        await refuse(store, user, decision, approval, project.outcome, project.why)
        if project.outcome == "project_gone":
            return replies.refused_reply(f"{project.why}; nothing was decided.")
        return replies.refused_reply(
            f"{project.why}; it cannot be approved.", "Deny it, or let it expire."
        )
    verdict = await approvers.check(config, project, user)
    if not verdict.allowed:
        why = verdict.explain(project.name)
        await refuse(store, user, decision, approval, verdict.why, why)
        group = verdict.group or "any group"
        if verdict.why == "no_group":
            return replies.refused_reply(
                f"{project.name} is in no orchestrator group, so nobody approves it in Slack.",
                f"An operator can decide at a terminal: orch approve {approval.id[:8]}",
            )
        if verdict.why == "lookup_failed":
            return replies.refused_reply(
                f"You could not be checked as an approver of {group} just now; nothing was"
                " decided.", "Slack's user groups did not answer. Try again in a moment."
            )  # fmt: skip
        return replies.refused_reply(f"You are not an approver of {group}.")
    result = await decide(store, approval, decision, user, four_eyes=project.policy.four_eyes,
                          actor_kind="user", source=SOURCE)  # fmt: skip
    services.wake()
    log.info("approval %s %s by %s: %s", approval.id, decision, user, result.outcome)
    return replies.decision_reply(result, decision)
