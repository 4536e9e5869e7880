"""``/orch history``'s chart: signed slash command in, text answer out through the
response_url, and the chart (caption, then PNG) through the Slack outbox into the
project's group channel of the fake Slack."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest

from agents.clock import FakeClock
from bot.history_chart import averaged, metric_points
from bot.slack_outbox import SlackOutbox
from storage.base import MetricSample, ProbeRecord
from storage.sqlite import SQLiteStore
from tests.slack_harness import Harness, slack_harness
from tests.test_digest_render import png_size

pytestmark = pytest.mark.timeout(60)


@asynccontextmanager
async def sending(h: Harness) -> AsyncIterator[SlackOutbox]:
    """The outbox of a running orch, on the harness's store and fake Slack (no pacing)."""
    outbox = SlackOutbox(h.store, h.service.client, h.clock, per_channel_interval=0.0)
    await outbox.start()
    try:
        yield outbox
    finally:
        await outbox.stop()


async def seed(h: Harness) -> None:
    now = h.clock.now()
    await h.store.add_probes([
        ProbeRecord("email-blast", now - timedelta(minutes=m), "fail" if m in (30, 31) else "pass",
                    5.0)
        for m in range(1, 180)
    ])  # fmt: skip
    await h.store.add_metric_samples([
        MetricSample("email-blast", now - timedelta(minutes=m), metric, value)
        for m in range(1, 180)
        for metric, value in (("error_rate", 0.01 * (m % 5)), ("latency_p95_ms", 100.0 + m))
    ])  # fmt: skip


def context_text(reply: dict) -> str:  # type: ignore[type-arg]
    return str(reply["blocks"][-1]["elements"][0]["text"])


async def test_history_answers_and_posts_its_chart_in_the_group_channel() -> None:
    async with slack_harness() as h:
        await seed(h)
        reply = await h.answer("history email-blast 24h")
        assert "posted in #ops-outreach" in context_text(reply)
        rows = await h.store.slack_rows(channel="#ops-outreach")
        assert [r.kind for r in rows] == ["message", "upload"]
        async with sending(h) as outbox:
            await h.fake.wait_for("files.completeUploadExternal")
            await outbox.settle()
        caption = next(c for c in h.fake.calls_to("chat.postMessage")).params
        assert caption["channel"] == "#ops-outreach"
        blocks = json.loads(caption["blocks"]) if isinstance(caption["blocks"], str) else (
            caption["blocks"])  # fmt: skip
        text = blocks[0]["text"]["text"]
        assert text.startswith("📈 *email-blast*, last 24h") and "<@U0ASKER>" in text
        assert "error_rate, latency_p95_ms" in blocks[1]["elements"][0]["text"]
        [data] = h.fake.uploads.values()
        width, height = png_size(data)
        assert width == 1000 and height == round(100 * (2.2 + 1.6 * 2))  # status + 2 metrics
        done = h.fake.calls_to("files.completeUploadExternal")[0].params
        assert json.loads(done["files"])[0]["title"] == "email-blast: last 24h"


async def test_a_project_in_no_group_gets_no_chart() -> None:
    async with slack_harness() as h:
        reply = await h.answer("history legacy-crm 7d")
        assert "legacy-crm is in no orchestrator group" in context_text(reply)
        assert await h.store.slack_rows() == []


async def test_seven_days_read_the_roll_ups_and_the_raw_tail() -> None:
    clock = FakeClock()
    store = SQLiteStore(":memory:", clock=clock)
    await store.open()
    try:
        t0 = clock.now()
        samples = [
            MetricSample("p", t0 + timedelta(minutes=m), "error_rate", float(m // 60))
            for m in range(0, 180, 10)
        ]  # hour 0: all 0.0, hour 1: all 1.0, hour 2: all 2.0
        await store.add_metric_samples(samples)
        await store.rollup_hours(t0 + timedelta(hours=2))  # hours 0 and 1 rolled up
        until = t0 + timedelta(hours=3)
        points = await metric_points(store, "p", "error_rate", until - timedelta(days=7), until)
        half = timedelta(minutes=30)
        assert points == [(t0 + half, 0.0), (t0 + timedelta(hours=1) + half, 1.0),
                          (t0 + timedelta(hours=2) + half, 2.0)]  # fmt: skip
        fine = await metric_points(store, "p", "error_rate", t0, until)  # 24 h: 5-minute means
        assert len(fine) == 18 and fine[0] == (t0 + timedelta(minutes=2.5), 0.0)
    finally:
        await store.close()


def test_averaging_skips_what_is_not_a_number() -> None:
    t0 = FakeClock().now()
    samples = [MetricSample("p", t0, "m", 1.0), MetricSample("p", t0, "m", float("nan")),
               MetricSample("p", t0 + timedelta(seconds=1), "m", 3.0),
               MetricSample("p", t0 + timedelta(hours=2), "m", 9.0)]  # fmt: skip
    assert averaged(samples, timedelta(minutes=5), t0 + timedelta(hours=1)) == [
        (t0 + timedelta(minutes=2.5), 2.0)
    ]
