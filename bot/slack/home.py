"""App Home: the fleet summary, published when someone opens orch's Home tab.

It is also orch's one Events API listener today, and Events API deliveries are what Slack
retries (X-Slack-Retry-Num), so it runs through the same de-duplicated background path.
"""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack import replies
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

        async def work() -> None:
            await publish_home(services, client, user)

        services.background.submit(request_key(body), is_retry(request.headers), work)


async def publish_home(services: Services, client: AsyncWebClient, user: str) -> None:
    incidents = await services.store.list_incidents(open_only=True, limit=50)
    view = replies.home_view(
        services.config(), services.statuses(), incidents, services.clock.now()
    )
    await client.views_publish(user_id=user, view=view)
