"""``/orch reload``: read projects.yml again now (``bot.config_reload``).

Only an approver (of any orchestrator group this orch knows) may ask: a reload can add
or remove what orch watches and who approves.  The asker gets the outcome; a refused file
also reaches the group channels through the ``config.reloaded`` event (``bot.notifier``).
"""

from __future__ import annotations

import logging

from bot.slack import replies
from bot.slack.approvers import Approvers
from bot.slack.command_parser import Command
from bot.slack.replies import Reply
from bot.slack.services import Services

log = logging.getLogger(__name__)

MAX_ERRORS_SHOWN = 5


async def reload_config(
    services: Services, command: Command, user: str, *, approvers: Approvers | None = None
) -> Reply:
    config = services.config()
    if services.reload is None:
        return replies.error_reply("This orch cannot reload its configuration.")
    allowed = False
    if approvers is not None:
        for group in sorted(config.orchestrators):
            if (await approvers.check_group(config, group, user)).allowed:
                allowed = True
                break
    if not allowed:
        log.info("/orch reload refused for %s: not an approver", user)
        return replies.refused_reply(
            "Only an approver of an orchestrator group may reload the configuration.",
            "Nothing was changed.",
        )
    outcome = await services.reload("/orch reload", user)
    if outcome.result == "unchanged":
        return replies.notice_reply("ℹ️", "projects.yml has no change to apply; nothing to do.")
    if outcome.result == "refused":
        shown = list(outcome.errors[:MAX_ERRORS_SHOWN])
        more = len(outcome.errors) - len(shown)
        if more > 0:
            shown.append(f"… and {more} more")
        return replies.error_reply(
            "projects.yml was refused; orch keeps running the previous configuration.",
            "\n".join(shown),
        )
    change = outcome.change
    parts = [
        f"{label} {', '.join(names)}"
        for label, names in (
            ("added", change.added),
            ("removed", change.removed),
            ("changed", change.changed),
            ("groups changed:", change.groups),
        )
        if names
    ]
    summary = "; ".join(parts) or "settings changed"
    return replies.notice_reply("🔄", f"Configuration reloaded: {summary}.")
