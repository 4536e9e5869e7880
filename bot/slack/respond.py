"""Answering the person who asked: through the request's ``response_url``, else
``chat.postEphemeral``.

Bolt's own ``respond`` opens a new aiohttp session per call and, through slack_sdk's
webhook client, logs the response_url (a bearer capability: anyone holding it can post to
the channel for 30 minutes) at INFO on a 429 and with the body at DEBUG.  This one reuses
orch's Slack session and a logger that never goes below WARNING, and its errors name the
HTTP status only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import aiohttp
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.slack.replies import Reply

# Kept at WARNING: slack_sdk decides whether to log URLs and bodies from this level.
_QUIET = logging.getLogger("bot.slack.respond.sdk")
_QUIET.setLevel(logging.WARNING)


class ReplyFailed(RuntimeError):
    pass


class Replier:
    def __init__(
        self, session: Callable[[], aiohttp.ClientSession], client: AsyncWebClient
    ) -> None:
        self._session = session
        self._client = client

    async def ephemeral(self, body: dict[str, Any], reply: Reply) -> None:
        """Only the asker sees it."""
        response_url = body.get("response_url")
        if isinstance(response_url, str) and response_url.startswith(("https://", "http://")):
            await self._to_response_url(response_url, reply, "ephemeral")
            return
        channel, user = _channel_and_user(body)
        if not channel or not user:
            raise ReplyFailed("no response_url, channel or user to answer")
        kwargs: dict[str, Any] = {"channel": channel, "user": user, "text": reply.text}
        if reply.blocks is not None:
            kwargs["blocks"] = reply.blocks
        await self._client.chat_postEphemeral(**kwargs)

    async def in_channel(self, body: dict[str, Any], reply: Reply) -> None:
        """Everyone in the request's channel sees it (who silenced, acked, asked to run)."""
        response_url = body.get("response_url")
        if isinstance(response_url, str) and response_url.startswith(("https://", "http://")):
            await self._to_response_url(response_url, reply, "in_channel")
            return
        channel, _ = _channel_and_user(body)
        if not channel:
            raise ReplyFailed("no response_url or channel to answer")
        kwargs: dict[str, Any] = {"channel": channel, "text": reply.text}
        if reply.blocks is not None:
            kwargs["blocks"] = reply.blocks
        await self._client.chat_postMessage(**kwargs)

    async def _to_response_url(self, url: str, reply: Reply, response_type: str) -> None:
        webhook = AsyncWebhookClient(url=url, session=self._session(), logger=_QUIET, timeout=10)
        response = await webhook.send(
            text=reply.text, blocks=reply.blocks, response_type=response_type
        )
        if response.status_code != 200:
            raise ReplyFailed(f"response_url answered HTTP {response.status_code}")


def _channel_and_user(body: dict[str, Any]) -> tuple[str | None, str | None]:
    # Slash commands carry channel_id/user_id; interactive payloads nest them.
    channel, user = body.get("channel_id"), body.get("user_id")
    if isinstance(body.get("channel"), dict):
        channel = channel or body["channel"].get("id")
    if isinstance(body.get("user"), dict):
        user = user or body["user"].get("id")
    return (channel if isinstance(channel, str) else None, user if isinstance(user, str) else None)
