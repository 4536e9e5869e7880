"""The bolt ``AsyncApp``: built once, served by HTTP and Socket Mode alike.

Everything bolt would otherwise read from the environment is passed explicitly (only
``bot.settings`` reads it).  Two bolt behaviours are pinned here:

- ``process_before_response=True``: bolt awaits the listener before answering.  Our
  listeners only parse, ``ack()`` and hand work to ``Background``, so the answer is still
  immediate, and no listener runs as an untracked task that shutdown cannot await.
- SLACK_CLIENT_ID + SLACK_CLIENT_SECRET in the environment silently switch bolt into
  multi-workspace OAuth mode, where our bot token is ignored; orch refuses to start then.
- Authorization is answered from memory (``BotIdentity``), never over the network.
  bolt's default for a single workspace calls ``auth.test`` inside the request, before
  any listener can ack, once per request until the first answer arrives: a burst on a
  fresh replica made 40 calls, a slow Slack API delayed every ack past Slack's 3 s, and
  a failing one (429) made bolt answer the user with an error.  The request is already
  authenticated by its signature, and the bot's identity is what ``SlackService``'s own
  ``auth.test`` at start found (unknown until then, which only self-event filtering uses).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack import approvals, commands, home
from bot.slack.approvers import Approvers
from bot.slack.services import Services

# bolt copies this logger's level into each of its own loggers.  At INFO bolt logs the raw
# body of every request whose signature fails, at DEBUG every payload; WARNING keeps both
# out of orch's log (request bodies carry response_urls and user text).
BOLT_LOGGER = logging.getLogger("bot.slack.bolt")
BOLT_LOGGER.setLevel(logging.WARNING)


class _NoTokenNotice(logging.Filter):
    """bolt warns "As you gave `client` as well, `token` will be unused" whenever
    SLACK_BOT_TOKEN is in the environment and a client is passed, and that the token
    "will be ignored" when ``authorize`` is given: both on every orch start.  The client
    carries that very token and ``authorize`` hands it back, so both are noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(n in message for n in ("`token` will be unused", "`token` (or SLACK_"))


BOLT_LOGGER.addFilter(_NoTokenNotice())


class SlackSetupError(RuntimeError):
    pass


@dataclass
class BotIdentity:
    """Who the bot is, from ``auth.test``'s answer (``learn``); None until it came."""

    user_id: str | None = None
    bot_id: str | None = None

    def learn(self, user_id: Any, bot_id: Any) -> None:
        self.user_id = user_id if isinstance(user_id, str) else None
        self.bot_id = bot_id if isinstance(bot_id, str) else None


def _authorize_from_memory(
    client: AsyncWebClient, identity: BotIdentity
) -> Callable[..., Awaitable[AuthorizeResult]]:
    async def authorize(
        enterprise_id: str | None, team_id: str | None, user_id: str | None
    ) -> AuthorizeResult:
        return AuthorizeResult(
            enterprise_id=enterprise_id, team_id=team_id, user_id=user_id,
            bot_token=client.token, bot_id=identity.bot_id, bot_user_id=identity.user_id,
        )  # fmt: skip

    return authorize


def build_app(
    client: AsyncWebClient,
    signing_secret: str | None,
    env: Mapping[str, str],
    identity: BotIdentity | None = None,
) -> AsyncApp:
    """``identity``: filled in by whoever calls ``auth.test`` (``SlackService.start``)."""
    if env.get("SLACK_CLIENT_ID") and env.get("SLACK_CLIENT_SECRET"):
        raise SlackSetupError(
            "SLACK_CLIENT_ID and SLACK_CLIENT_SECRET are set: they switch slack-bolt into"
            " multi-workspace OAuth mode, which orch does not use. Unset them."
        )
    app = AsyncApp(
        name="orch",
        client=client,
        # "" rather than None: None makes bolt read SLACK_SIGNING_SECRET itself.  Without a
        # secret the HTTP route is not mounted at all, so "" never verifies anything.
        signing_secret=signing_secret or "",
        logger=BOLT_LOGGER,
        process_before_response=True,
        authorize=_authorize_from_memory(client, identity or BotIdentity()),
    )
    if app.oauth_flow is not None:  # the environment bolt saw differs from our settings
        raise SlackSetupError("slack-bolt started in OAuth mode; unset SLACK_CLIENT_ID/SECRET")
    return app


def register_listeners(app: AsyncApp, services: Services) -> Approvers:
    """Every listener, in this order (DESIGN §8: explicit registration).  The slash
    command and the Approve / Deny buttons share one ``Approvers`` (its user-group cache),
    which is returned."""
    approvers = Approvers(app.client, services.clock)
    commands.register(app, services, approvers)
    approvals.register(app, services, approvers)
    home.register(app, services)
    return approvers
