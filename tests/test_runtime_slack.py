"""The whole process with Slack: the real Runtime, configured only by environment-style
settings, against the local fake Slack Web API and simulated services."""

from __future__ import annotations

import json

from bot.config import Config
from bot.runtime import Runtime, RuntimeOptions
from bot.settings import Settings
from demo.fleet import Fleet
from tests.fake_slack import FakeSlack

SECRETS = {name: f"secret-{name}".encode() for name in ("email-blast", "chatbot")}


def text_of(params: dict) -> str:
    """Everything a person could read in a message: fallback text, blocks, attachments."""
    return json.dumps(params)


async def test_one_outage_is_one_card_in_the_groups_channel_then_edited(tmp_path) -> None:
    slack = FakeSlack()
    await slack.start()
    fleet = Fleet.ephemeral(SECRETS, SECRETS)
    await fleet.start()
    config = Config.model_validate(
        {
            "defaults": {"interval": "1s", "timeout": "500ms"},
            "orchestrators": {
                "outreach": {"channel": "#ops-outreach", "projects": ["email-blast"]},
                "support": {"channel": "#ops-support", "projects": ["chatbot"]},
            },
            "projects": [
                {"name": n, "url": fleet.url(n), "control_url": fleet.control_url(n)}
                for n in SECRETS
            ],
        }
    )
    settings = Settings(
        sqlite_path=tmp_path / "orch.db",
        port=0,
        slack_bot_token="xoxb-test",
        slack_signing_secret="signing-secret",
        slack_api_url=slack.api_url,
    )
    runtime = Runtime(settings, config, options=RuntimeOptions(lease_ttl_s=3))
    try:
        await runtime.start()
        await fleet.inject("email-blast", "crash")
        posts = await slack.wait_for("chat.postMessage", 1, timeout=20)
        card = posts[0].params
        assert card["channel"] == "#ops-outreach"
        assert "email-blast is down" in text_of(card)
        await fleet.clear("email-blast", "crash")
        updates = await slack.wait_for("chat.update", 1, timeout=20)
        assert "resolved" in text_of(updates[-1].params).lower()
        # The resolution also goes into the card's thread (paced: about 1 message/s).
        await slack.wait_for("chat.postMessage", 2, timeout=20)
        # One card, edited in place; the timeline went to its thread.
        cards = [c for c in slack.calls_to("chat.postMessage") if "thread_ts" not in c.params]
        assert len(cards) == 1
        replies = [c for c in slack.calls_to("chat.postMessage") if "thread_ts" in c.params]
        assert replies and all(c.params["channel"] == "#ops-outreach" for c in replies)
        assert not [c for c in slack.calls if c.params.get("channel") == "#ops-support"]
    finally:
        await runtime.stop()
        await fleet.stop()
        await slack.stop()
