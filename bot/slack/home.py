"""App Home: the status board, published when someone opens orch's Home tab.

It is also orch's one Events API listener today, and Events API deliveries are what Slack
retries (X-Slack-Retry-Num), so it runs through the same de-duplicated background path.
Who opened it is remembered (``Services.home_users``) so that ``HomeRefresher`` can
publish their board again when the fleet changes.  Its pending approvals carry the same
Approve / Deny buttons as the cards (``bot.slack.approvals`` answers both); after a click
the clicker's board is published again at once, with the answer on top.
"""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.web.async_client import AsyncWebClient

from bot.blockkit import check_view
from bot.slack import fleet
from bot.slack.replies import Reply
from bot.slack.services import Services
from bot.slack.work import is_retry, request_key


def register(app: AsyncApp, services: Services) -> None:
    @app.event("app_home_opened")
    async def home_opened(
        body: dict[str, Any],
        event: dict[str, Any],
        request: AsyncBoltRequest,
        client: AsyncWebClient,
    ) -> None:
        # Events are acknowledged by bolt when this returns; the publishing runs after.
        user = event.get("user")
        if event.get("tab", "home") != "home" or not isinstance(user, str):
            return
        services.home_users.add(user, services.clock.monotonic())

        async def work() -> None:
            await publish_home(services, client, user)

        services.background.submit(request_key(body), is_retry(request.headers), work)


async def publish_home(
    services: Services, client: AsyncWebClient, user: str, *, notice: Reply | None = None
) -> None:
    """Publish ``user``'s board; ``notice`` (an answer to their click) goes on top, after
    the header, when the view still fits Slack's limits with it."""
    view = await fleet.home_view(services)
    if notice is not None and notice.blocks:
        blocks = view["blocks"]
        noticed = {**view, "blocks": [*blocks[:1], *notice.blocks, *blocks[1:]]}
        if not check_view(noticed):
            view = noticed
    await client.views_publish(user_id=user, view=view)
