"""The Slack app over real HTTP: signatures, retries, the ack before slow work, /readyz.

Requests are signed with slack_sdk's real ``SignatureVerifier``; Slack's Web API and the
response_urls are the local fake (tests/fake_slack.py), which records every call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from agents.clock import FakeClock
from agents.events import ACTION_REQUESTED, APPROVAL_REQUESTED, Event
from bot.settings import Settings
from bot.slack.app import SlackSetupError, build_app
from bot.slack.service import SlackService, api_url, build_slack
from storage.base import Incident
from storage.sqlite import SQLiteStore
from tests.fake_slack import event_callback, form_body, signed_headers, slash_command
from tests.slack_harness import CONFIG, SECRET, Harness, slack_harness


async def _nothing_ran(h: Harness) -> None:
    await h.service.background.drain()
    assert h.fake.methods() == []  # no Web API call, no response_url
    # bolt authenticates (auth.test) on the first request it dispatches: only ours ran.
    assert len(h.fake.calls_to("auth.test")) == 1


async def test_a_signed_command_is_answered() -> None:
    async with slack_harness() as h:
        status, body = await h.command("help")
        assert status == 200
        assert body["response_type"] == "ephemeral"
        assert "/orch status [project]" in body["text"]
        assert "/orch history &lt;project&gt; [24h|7d]" in body["text"]


async def test_unsigned_tampered_and_stale_requests_get_401_and_run_nothing() -> None:
    async with slack_harness() as h:
        body = form_body(slash_command("status", h.fake.response_url()))
        good = signed_headers(SECRET, body)
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        now = int(time.time())
        attempts = {
            "unsigned": (body, form),
            "tampered body": (body.replace("status", "incidents"), good),
            "wrong secret": (body, signed_headers("not-the-secret", body)),
            "stale (6 min)": (body, signed_headers(SECRET, body, timestamp=now - 360)),
            "from the future": (body, signed_headers(SECRET, body, timestamp=now + 360)),
            "timestamp not a number": (body, {**good, "X-Slack-Request-Timestamp": "soon"}),
            "signature of another time": (
                body,
                {**good, "X-Slack-Request-Timestamp": str(now - 1)},
            ),
        }
        for name, (data, headers) in attempts.items():
            status, answer = await h.post(data, headers)
            assert (status, answer) == (401, {"error": "invalid request"}), name
        await _nothing_ran(h)


async def test_rejected_bodies_are_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with slack_harness() as h:
        secret_url = h.fake.response_url("capability-token-123")
        body = form_body(slash_command("status", secret_url))
        await h.post(body, signed_headers("not-the-secret", body))
        await h.answer("status")  # and a good one, all the way through the reply
    assert "capability-token-123" not in caplog.text
    assert "/response/" not in caplog.text
    assert "rejected a Slack request" in caplog.text


async def test_the_ack_does_not_wait_for_a_slow_store() -> None:
    class SlowStore(SQLiteStore):
        """The store boundary, slowed down: list_incidents waits for the test."""

        def __init__(self) -> None:
            super().__init__(":memory:")
            self.entered = asyncio.Event()
            self.release = asyncio.Event()

        async def list_incidents(self, **kwargs: object) -> list[Incident]:
            self.entered.set()
            await self.release.wait()
            return await super().list_incidents(**kwargs)  # type: ignore[arg-type]

    store = SlowStore()
    async with slack_harness(store=store) as h:
        status, ack = await h.command("incidents")
        # The HTTP answer (the ack) is here, and the store has not answered yet.
        assert (status, ack) == (200, {})
        await asyncio.wait_for(store.entered.wait(), 5)
        assert not store.release.is_set() and h.fake.methods() == []
        store.release.set()
        calls = await h.fake.wait_for("response_url")
        assert calls[0].params["text"] == "No open incidents. 🎉"


def _home_opened(event_id: str) -> str:
    event = {"type": "app_home_opened", "user": "U0ASKER", "channel": "D0", "tab": "home"}
    return json.dumps(event_callback(event, event_id))


async def _deliver(h: Harness, body: str, retry: int | None = None) -> None:
    headers = signed_headers(SECRET, body, content_type="application/json")
    if retry is not None:
        headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
    status, _ = await h.post(body, headers)
    assert status == 200
    await h.service.background.drain()


async def test_a_retry_of_a_handled_event_is_skipped() -> None:
    async with slack_harness() as h:
        body = _home_opened("Ev0001")
        await _deliver(h, body)
        await _deliver(h, body, retry=1)
        await _deliver(h, body, retry=2)
        published = h.fake.calls_to("views.publish")
        assert len(published) == 1
        assert published[0].params["user_id"] == "U0ASKER"
        # The marker is committed in the store, where every replica sees it.
        assert await h.store.claimed_ids("slack-request", ["event:Ev0001"]) == {"event:Ev0001"}


async def test_a_retry_after_a_failed_first_attempt_runs_again() -> None:
    async with slack_harness() as h:
        h.fake.fail("views.publish", status=500)
        body = _home_opened("Ev0002")
        await _deliver(h, body)  # acknowledged, then the work failed: no marker
        assert await h.store.claimed_ids("slack-request", ["event:Ev0002"]) == set()
        await _deliver(h, body, retry=1)
        assert len(h.fake.calls_to("views.publish")) == 2
        assert await h.store.claimed_ids("slack-request", ["event:Ev0002"]) == {"event:Ev0002"}


async def test_readyz_is_ready_when_store_and_slack_are_up() -> None:
    async with slack_harness() as h:
        status, body = await h.readyz()
        assert status == 200
        assert body["checks"] == {"store": "up", "slack": "up"}
        await h.store.close()  # the database goes away
        status, body = await h.readyz()
        assert status == 503 and body["status"] == "fail"
        assert body["checks"]["slack"] == "up" and body["checks"]["store"] != "up"


async def test_readyz_names_a_refused_bot_token() -> None:
    async with slack_harness(before_start=lambda f: f.fail("auth.test", error="invalid_auth")) as h:
        status, body = await h.readyz()
        assert status == 503
        assert body["checks"] == {"store": "up", "slack": "auth.test: invalid_auth"}
        # A refused token is final: no retry loop hammers Slack.
        await h.clock.advance(600)
        assert len(h.fake.calls_to("auth.test")) == 1


async def test_slack_becomes_ready_after_a_transient_auth_failure() -> None:
    async with slack_harness(
        before_start=lambda f: f.fail("auth.test", status=429, retry_after=3)
    ) as h:
        status, body = await h.readyz()
        assert status == 503 and body["checks"]["slack"] == "auth.test: ratelimited"
        await h.clock.advance(2)  # Retry-After is honoured: not yet
        assert len(h.fake.calls_to("auth.test")) == 1
        await h.clock.advance(1)
        await asyncio.wait_for(h.service.authenticated.wait(), 5)
        assert len(h.fake.calls_to("auth.test")) == 2
        assert (await h.readyz())[0] == 200


def test_no_bot_token_means_no_slack() -> None:
    assert build_slack(Settings(slack_app_token="xapp-1"), runtime=None) is None  # type: ignore[arg-type]


def test_the_api_url_gets_its_trailing_slash() -> None:
    assert api_url("http://127.0.0.1:9/api") == "http://127.0.0.1:9/api/"
    assert api_url("https://slack.com/api/") == "https://slack.com/api/"


def test_oauth_variables_are_refused_rather_than_silently_switching_modes() -> None:
    env = {"SLACK_CLIENT_ID": "1.2", "SLACK_CLIENT_SECRET": "x"}
    settings = Settings(slack_bot_token="xoxb-1", slack_signing_secret="s", env=env)
    with pytest.raises(SlackSetupError, match="OAuth"):
        SlackService(
            settings,
            config=lambda: CONFIG,
            store=SQLiteStore(":memory:"),
            statuses=dict,
            clock=FakeClock(),
        )
    with pytest.raises(SlackSetupError):
        build_app(AsyncWebClient(token="xoxb-1"), "s", env)


async def test_app_home_lists_the_approvals_waiting() -> None:
    async with slack_harness() as h:
        now = datetime.now(UTC)

        def announce(kind: str) -> Callable[[Any], Event]:
            return lambda row: Event(
                type=kind, ts=now, source="test", project="email-blast", payload={"id": row.id}
            )

        action = await h.store.request_action(
            "email-blast", "pause", "U0ASKER", "queue stuck", True, announce(ACTION_REQUESTED)
        )
        approval = await h.store.create_approval(
            action.id, "email-blast", "pause", "U0ASKER", "queue stuck", 1800,
            announce(APPROVAL_REQUESTED),
        )  # fmt: skip
        await _deliver(h, _home_opened("Ev0100"))
        view = json.dumps(h.fake.calls_to("views.publish")[-1].params)
        assert approval.id in view  # the Approve / Deny buttons carry only this id
        assert "pause" in view and "email-blast" in view
