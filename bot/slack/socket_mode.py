"""Socket Mode: the same AsyncApp, fed over a WebSocket instead of HTTP.

bolt's ``AsyncSocketModeHandler`` (aiohttp) asks ``apps.connections.open`` with the
app-level token through the app's own client, so ``SLACK_API_URL`` applies to it too;
each envelope goes through ``app.async_dispatch`` (socket requests skip signature checks:
the WebSocket itself is authenticated) and the ack is sent back with the envelope_id.

The handler's client keeps connecting by itself (it retries every ``ping_interval`` and
reconnects after a drop), so ``start`` only launches that in the background.  Its tasks
are cancelled by ``close`` but never awaited there; ``stop`` awaits them (symmetric
lifecycle, DESIGN §8).
"""

from __future__ import annotations

import asyncio
import logging

from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp

from bot.slack.app import BOLT_LOGGER

log = logging.getLogger(__name__)


class SocketModeConnection:
    def __init__(self, app: AsyncApp, app_token: str, *, ping_interval: float = 10.0) -> None:
        self._app = app
        self._app_token = app_token
        self._ping_interval = ping_interval
        self._handler: AsyncSocketModeHandler | None = None
        self._connecting: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()  # set once the first connection is up

    async def start(self) -> None:
        # Built here, not in __init__: the client creates its session and a task at once,
        # which needs the running loop.  BOLT_LOGGER (WARNING) keeps the client's DEBUG
        # dumps of every envelope (response_urls included) out of the log.
        self._handler = AsyncSocketModeHandler(
            self._app, self._app_token, logger=BOLT_LOGGER, ping_interval=self._ping_interval
        )
        self._connecting = asyncio.create_task(self._connect(), name="slack-socket-connect")

    async def _connect(self) -> None:
        assert self._handler is not None
        await self._handler.connect_async()
        if await self._handler.client.is_connected():
            log.info("Slack Socket Mode connected")
            self.connected.set()

    async def check(self) -> str | None:
        """None when connected, else why not."""
        if self._handler is None:
            return "socket mode not started"
        if not await self._handler.client.is_connected():
            return "socket mode not connected"
        return None

    async def stop(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
        handler, self._handler = self._handler, None
        if handler is None:
            return
        client = handler.client
        await handler.close_async()
        tasks = [client.message_processor, client.current_session_monitor, client.message_receiver]
        pending = [t for t in tasks if t is not None]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
