"""Socket Mode against the fake Slack: ``apps.connections.open`` hands out a ws:// URL to
the fake's WebSocket endpoint; envelopes sent there are acknowledged (envelope_id echoed)
and answered by the same listeners as HTTP mode."""

from __future__ import annotations

import asyncio

from tests.fake_slack import FakeSlack, event_callback, slash_command
from tests.slack_harness import Harness, slack_harness


async def _connected(h: Harness) -> None:
    socket = h.service.socket_mode
    assert socket is not None
    await asyncio.wait_for(socket.connected.wait(), 5)
    await h.fake.wait_socket()


async def test_a_slash_command_envelope_is_acknowledged_and_answered() -> None:
    async with slack_harness(signing_secret=None, app_token="xapp-test-token") as h:
        assert h.service.routes() == []  # no signing secret: no HTTP route to forge
        await _connected(h)
        opened = h.fake.calls_to("apps.connections.open")
        assert [c.token for c in opened] == ["xapp-test-token"]  # the app-level token

        h.health.restore("chatbot", "down")
        payload = slash_command("status", h.fake.response_url("sock"))
        envelope_id = await h.fake.send_envelope("slash_commands", payload)
        ack = await h.fake.wait_ack(envelope_id)
        assert ack == {"envelope_id": envelope_id}  # acked empty; the answer follows

        calls = await h.fake.wait_for("response_url")
        assert calls[0].params["_name"] == "sock"
        assert calls[0].params["response_type"] == "ephemeral"
        assert "🔴 `chatbot` down" in calls[0].params["text"]
        assert (await h.readyz())[1]["checks"]["slack"] == "up"


async def test_help_and_errors_come_back_in_the_ack() -> None:
    async with slack_harness(signing_secret=None, app_token="xapp-test-token") as h:
        await _connected(h)
        help_id = await h.fake.send_envelope("slash_commands", slash_command("help", "http://x"))
        bad_id = await h.fake.send_envelope(
            "slash_commands", slash_command("restart email-blast; rm -rf /", "http://x")
        )
        help_ack = await h.fake.wait_ack(help_id)
        assert (
            "/orch silence &lt;project&gt; &lt;duration&gt; [reason]" in help_ack["payload"]["text"]
        )
        bad_ack = await h.fake.wait_ack(bad_id)
        payload = bad_ack["payload"]
        assert payload["text"] == "Usage: /orch restart &lt;project&gt;"  # escaped for Slack
        assert payload["response_type"] == "ephemeral"
        assert payload["blocks"][0]["text"]["text"] == "⚠️ Usage: /orch restart &lt;project&gt;"
        await h.service.background.drain()
        assert h.fake.methods(ignore=("auth.test", "apps.connections.open")) == []


async def test_an_event_retry_over_the_socket_is_deduplicated() -> None:
    async with slack_harness(signing_secret=None, app_token="xapp-test-token") as h:
        await _connected(h)
        event = {"type": "app_home_opened", "user": "U0ASKER", "channel": "D0", "tab": "home"}
        payload = event_callback(event, "EvSock1")
        first = await h.fake.send_envelope("events_api", payload)
        await h.fake.wait_ack(first)
        await h.fake.wait_for("views.publish")
        await h.service.background.drain()
        retry = await h.fake.send_envelope("events_api", payload, retry_attempt=1)
        await h.fake.wait_ack(retry)
        await h.service.background.drain()
        assert len(h.fake.calls_to("views.publish")) == 1


async def test_http_and_socket_mode_together_share_the_listeners() -> None:
    async with slack_harness(app_token="xapp-test-token") as h:
        await _connected(h)
        envelope_id = await h.fake.send_envelope(
            "slash_commands", slash_command("projects", h.fake.response_url("s"))
        )
        await h.fake.wait_ack(envelope_id)
        over_http = await h.answer("projects", reply_to="h")
        calls = await h.fake.wait_for("response_url", 2)
        by_name = {c.params["_name"]: c.params["text"] for c in calls}
        assert by_name["s"] == by_name["h"] == over_http["text"]


async def test_readyz_says_when_the_socket_is_not_connected() -> None:
    def refuse_app_token(fake: FakeSlack) -> None:
        fake.fail("apps.connections.open", error="invalid_auth", times=100)

    async with slack_harness(
        signing_secret=None, app_token="xapp-revoked", before_start=refuse_app_token
    ) as h:
        await h.fake.wait_for("apps.connections.open")
        status, body = await h.readyz()
        assert status == 503
        assert body["checks"] == {"store": "up", "slack": "socket mode not connected"}
    # Leaving the block stopped the reconnect loop and closed its session (else the
    # unclosed-session warning would fail this test).
