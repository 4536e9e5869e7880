"""orch's Slack app on a real port, against the fake Slack, with a real SQLite store.

``slack_harness`` starts, in order, the fake Slack, the store, the SlackService and orch's
web app (with /healthz, /readyz and POST /slack/events), and stops them in reverse.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp

from agents.bus import InProcessBus
from agents.clock import FakeClock
from agents.health import HealthMonitor
from agents.outbox import OutboxRelay
from bot.config import Config
from bot.settings import Settings
from bot.slack.service import SlackService
from bot.slack.work import RetryMarkers
from bot.web import WebServer, make_web_app, store_ready
from storage.base import Store
from storage.sqlite import SQLiteStore
from tests.fake_slack import (
    FakeSlack,
    block_action,
    form_body,
    interactive_body,
    signed_headers,
    slash_command,
)

SECRET = "test-signing-secret"

CONFIG = Config.model_validate(
    {
        "orchestrators": {
            "outreach": {"channel": "#ops-outreach", "projects": ["email-blast"]},
            "support": {"channel": "#ops-support", "projects": ["chatbot"]},
        },
        "projects": [
            {
                "name": "email-blast",
                "url": "http://127.0.0.1:8101",
                "control_secret_env": "EMAIL_BLAST_CONTROL_SECRET",
                "allowed_actions": ["restart", "clear_cache", "pause", "resume"],
                "needs_approval": ["pause"],
            },
            {
                "name": "chatbot",
                "url": "http://127.0.0.1:8102",
                "control_secret_env": "CHATBOT_CONTROL_SECRET",
                "allowed_actions": ["restart"],
            },
            # Credentials and a query in a URL must never reach Slack.
            {"name": "legacy-crm", "url": "https://ops:hunter2@crm.internal:8443/up?key=s3cret",
             "kind": "http"},
        ],
    }
)  # fmt: skip


@dataclass
class Harness:
    fake: FakeSlack
    store: Store
    clock: FakeClock
    health: HealthMonitor
    service: SlackService
    web: WebServer
    http: aiohttp.ClientSession

    @property
    def events_url(self) -> str:
        return f"{self.web.url}/slack/events"

    async def post(
        self, body: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        async with self.http.post(self.events_url, data=body, headers=headers or {}) as response:
            text = await response.text()
            return response.status, _json(text)

    async def command(self, text: str, reply_to: str = "r") -> tuple[int, dict[str, Any]]:
        """``/orch <text>``, signed, with the response_url pointing at the fake."""
        body = form_body(slash_command(text, self.fake.response_url(reply_to)))
        return await self.post(body, signed_headers(SECRET, body))

    async def answer(self, text: str, reply_to: str = "r") -> dict[str, Any]:
        """Run a command that answers through its response_url; return that answer."""
        before = len(self.fake.calls_to("response_url"))
        status, ack = await self.command(text, reply_to)
        assert status == 200 and ack == {}, (status, ack)
        calls = await self.fake.wait_for("response_url", before + 1)
        await self.service.background.drain()
        return calls[before].params

    async def click(
        self, action_id: str, value: str, user: str, *, reply_to: str = "click", **options: Any
    ) -> tuple[int, dict[str, Any]]:
        """A signed click on a button (``tests.fake_slack.block_action``); returns bolt's
        HTTP answer (the ack).  The answer to the clicker comes later, in the background."""
        payload = block_action(
            action_id, value, user=user, response_url=self.fake.response_url(reply_to), **options
        )
        body = interactive_body(payload)
        return await self.post(body, signed_headers(SECRET, body))

    async def readyz(self) -> tuple[int, dict[str, Any]]:
        async with self.http.get(f"{self.web.url}/readyz") as response:
            return response.status, await response.json(content_type=None)


def _json(text: str) -> dict[str, Any]:
    import json

    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {"_text": text}
    return value if isinstance(value, dict) else {"_value": value}


@asynccontextmanager
async def slack_harness(
    *,
    store: Store | None = None,
    clock: FakeClock | None = None,
    config: Callable[[], Config] | None = None,
    signing_secret: str | None = SECRET,
    app_token: str | None = None,
    markers: RetryMarkers | None = None,
    before_start: Callable[[FakeSlack], None] | None = None,
) -> AsyncIterator[Harness]:
    """``config``: what the app reads as the configuration (default: this module's
    ``CONFIG``, read at each call, so tests may monkeypatch it); ``store`` and ``clock``:
    shared with other parts of a test (another replica, a notifier)."""
    clock = clock or FakeClock()
    fake = FakeSlack()
    await fake.start()
    if before_start is not None:
        before_start(fake)
    store = store or SQLiteStore(":memory:", clock=clock)
    await store.open()
    bus = InProcessBus()
    health = HealthMonitor(OutboxRelay(store, bus, clock=clock), clock=clock)
    settings = Settings(
        slack_bot_token="xoxb-test-token",
        slack_signing_secret=signing_secret,
        slack_app_token=app_token,
        slack_api_url=fake.api_url,
    )
    service = SlackService(
        settings,
        config=config or (lambda: CONFIG),
        store=store,
        statuses=health.statuses,
        clock=clock,
        markers=markers,
    )
    ready = {"store": store_ready(store), "slack": service.check}
    web = WebServer(make_web_app(dict, ready=ready, routes=service.routes()), "127.0.0.1", 0)
    try:
        await service.start()
        await web.start()
        async with aiohttp.ClientSession() as http:
            yield Harness(fake, store, clock, health, service, web, http)
    finally:
        await web.stop()
        await service.stop()
        await store.close()
        await fake.stop()
