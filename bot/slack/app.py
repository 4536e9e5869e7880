"""The bolt ``AsyncApp``: built once, served by HTTP and Socket Mode alike.

Everything bolt would otherwise read from the environment is passed explicitly (only
``bot.settings`` reads it).  Two bolt behaviours are pinned here:

- ``process_before_response=True``: bolt awaits the listener before answering.  Our
  listeners only parse, ``ack()`` and hand work to ``Background``, so the answer is still
  immediate, and no listener runs as an untracked task that shutdown cannot await.
- SLACK_CLIENT_ID + SLACK_CLIENT_SECRET in the environment silently switch bolt into
  multi-workspace OAuth mode, where our bot token is ignored; orch refuses to start then.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from slack_bolt.async_app import AsyncApp
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
    SLACK_BOT_TOKEN is in the environment and a client is passed, which is every orch
    start; the client carries that very token, so the warning is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`token` will be unused" not in record.getMessage()


BOLT_LOGGER.addFilter(_NoTokenNotice())


class SlackSetupError(RuntimeError):
    pass


def build_app(
    client: AsyncWebClient, signing_secret: str | None, env: Mapping[str, str]
) -> AsyncApp:
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
