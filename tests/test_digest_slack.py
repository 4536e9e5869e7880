"""``/orch digest`` through the Slack app: a signed slash command; every group's digest
queued for its channel and delivered by the outbox to the fake Slack, message then PNG."""

from __future__ import annotations

import pytest

from agents.events import DIGEST_POSTED
from bot.slack_outbox import SlackOutbox
from tests.slack_harness import slack_harness
from tests.test_digest_render import png_size

pytestmark = pytest.mark.timeout(60)


async def test_orch_digest_posts_every_groups_digest_now() -> None:
    async with slack_harness() as h:
        reply = await h.answer("digest")
        assert reply["text"] == (
            "📨 Posting the health digest now: outreach to #ops-outreach, support to #ops-support."
        )
        rows = await h.store.slack_rows()
        assert sorted((r.channel, r.kind) for r in rows) == [
            ("#ops-outreach", "message"), ("#ops-outreach", "upload"),
            ("#ops-support", "message"), ("#ops-support", "upload"),
        ]  # fmt: skip
        assert all(":asked:" in (r.incident_id or "") for r in rows)  # not the daily one
        events = await h.store.list_events(types=[DIGEST_POSTED])
        assert sorted(e.payload["group"] for e in events) == ["outreach", "support"]
        outbox = SlackOutbox(h.store, h.service.client, h.clock, per_channel_interval=0.0)
        await outbox.start()
        try:
            await h.fake.wait_for("files.completeUploadExternal", 2)
            await outbox.settle()
        finally:
            await outbox.stop()
        posts = h.fake.calls_to("chat.postMessage")
        assert sorted(p.params["channel"] for p in posts) == ["#ops-outreach", "#ops-support"]
        assert all(p.params["text"].startswith("Health digest ") for p in posts)
        assert len(h.fake.uploads) == 2
        for data in h.fake.uploads.values():
            assert png_size(data)[0] == 1000
        # A second /orch digest is another digest (a person asked again), not a duplicate key.
        await h.answer("digest")
        assert len(await h.store.slack_rows()) == 8


async def test_orch_digest_without_groups_says_so() -> None:
    from bot.config import Config

    async with slack_harness(config=lambda: Config()) as h:
        reply = await h.answer("digest")
        assert reply["text"] == "No orchestrator group to post a digest for."
        assert await h.store.slack_rows() == []
