"""The daily digest's schedule: once per group and local day fleet-wide, with two replicas
and across a restart, on SQLite and PostgreSQL; the cron jobs; and the whole path to
Slack: the fake Slack receives the message and then the PNG (``files_upload_v2``)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agents.clock import FakeClock
from agents.events import DIGEST_POSTED
from bot.config import Config
from bot.digest_job import DigestJob, due_day
from bot.jobs import JobScheduler
from storage.base import ProbeRecord, Store
from storage.sqlite import SQLiteStore
from tests.digest_history import steady
from tests.test_digest_render import png_size
from tests.test_slack_outbox import rig
from tests.test_store_contract import BACKENDS, MakeStore

pytestmark = pytest.mark.timeout(60)
DAY1 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # 09:00 in Berlin (CET)


def config(**digest: Any) -> Config:
    return Config.model_validate({
        "orchestrators": {
            "outreach": {"channel": "#ops-outreach", "projects": ["email-blast", "chatbot"],
                         "digest": {"time": "09:00", "timezone": "Europe/Berlin", **digest}},
            "support": {"channel": "#ops-support", "projects": [],
                        "digest": {"time": "17:30"}},
        },
        "projects": [
            {"name": "email-blast", "url": "http://127.0.0.1:8101", "kind": "http"},
            {"name": "chatbot", "url": "http://127.0.0.1:8102", "kind": "http"},
        ],
    })  # fmt: skip


@pytest.fixture(params=sorted(BACKENDS))
async def make(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeStore]:
    async with BACKENDS[request.param](tmp_path) as make:
        yield make


def test_due_day_in_the_groups_time_zone() -> None:
    settings = config().orchestrators["outreach"].digest
    assert due_day(settings, DAY1 - timedelta(seconds=1)) is None  # 08:59:59 in Berlin
    assert due_day(settings, DAY1) == "2026-03-02"
    assert due_day(settings, DAY1 + timedelta(hours=2, minutes=59)) == "2026-03-02"  # catch-up
    assert due_day(settings, DAY1 + timedelta(hours=3)) is None
    late = config().orchestrators["support"].digest  # 17:30 UTC
    assert due_day(late, datetime(2026, 3, 2, 17, 30, tzinfo=UTC)) == "2026-03-02"
    group = {"channel": "#w", "digest": {"time": "23:30", "timezone": "America/Los_Angeles"}}
    west = Config.model_validate({"orchestrators": {"w": group}}).orchestrators["w"].digest
    # 23:45 in Los Angeles on the 1st is 07:45 UTC on the 2nd: the digest of the 1st.
    assert due_day(west, datetime(2026, 3, 2, 7, 45, tzinfo=UTC)) == "2026-03-01"


async def outbox_keys(store: Store) -> list[tuple[str, str]]:
    return sorted((r.kind, r.dedupe_key) for r in await store.slack_rows())


async def test_once_a_day_with_two_replicas_and_a_restart(make: MakeStore) -> None:
    clock = FakeClock(DAY1)
    cfg = config()
    a, b = make(), make()
    await a.open()
    await b.open()
    try:
        await a.add_probes(steady("email-blast", DAY1 - timedelta(hours=1), DAY1))
        jobs = [DigestJob(s, lambda: cfg, clock, f"replica-{n}") for n, s in enumerate((a, b))]
        ran = await asyncio.gather(*(j.run_group("outreach") for j in jobs))
        assert sorted(ran) == [False, True]
        key = "digest:outreach:2026-03-02"
        expected = [("message", f"card:{key}"), ("upload", f"upload:{key}")]
        assert await outbox_keys(a) == expected
        assert await a.digest_state("outreach", "2026-03-02") == "queued"
        # Both cron jobs and sweeps fire again later that morning: nothing new.
        await clock.advance(120)
        assert await jobs[0].sweep() == [] and await jobs[1].sweep() == []
    finally:
        await a.close()
        await b.close()
    # A restart: a new process on the same database, at 09:05.
    await clock.advance(180)
    c = make()
    await c.open()
    try:
        restarted = DigestJob(c, lambda: cfg, clock, "replica-c")
        assert await restarted.sweep() == []
        assert await outbox_keys(c) == expected
        events = await c.list_events(types=[DIGEST_POSTED])
        assert [e.payload["key"] for e in events] == [key]
        # The next morning, once more.
        await clock.advance(24 * 3600 - 300)
        assert await restarted.sweep() == ["outreach"]
        assert len(await outbox_keys(c)) == 4
    finally:
        await c.close()


async def test_a_restart_across_the_digest_time_posts_it_late(make: MakeStore) -> None:
    clock = FakeClock(DAY1 - timedelta(minutes=1))
    cfg = config()
    store = make()
    await store.open()
    try:
        job = DigestJob(store, lambda: cfg, clock, "r1")
        assert await job.sweep() == []  # 08:59: not yet
        await clock.advance(180)  # orch was down at 09:00; the sweep at start-up, 09:02
        assert await job.sweep() == ["outreach"]
        assert len(await outbox_keys(store)) == 2
    finally:
        await store.close()


async def test_a_dead_replicas_claim_is_taken_over(make: MakeStore) -> None:
    clock = FakeClock(DAY1)
    cfg = config()
    store = make()
    await store.open()
    try:
        assert await store.claim_digest("outreach", "2026-03-02", "died-before-queueing", 600)
        assert await DigestJob(store, lambda: cfg, clock, "r1").sweep() == []  # not stale yet
        taker = DigestJob(store, lambda: cfg, clock, "r2", stale_s=1e-6)
        assert await taker.sweep() == ["outreach"]
        assert len(await outbox_keys(store)) == 2
        assert await store.digest_state("outreach", "2026-03-02") == "queued"
    finally:
        await store.close()


async def test_disabled_or_unknown_groups_post_nothing() -> None:
    clock = FakeClock(DAY1)
    store = SQLiteStore(":memory:", clock=clock)
    await store.open()
    try:
        cfg = config(enabled=False)
        job = DigestJob(store, lambda: cfg, clock, "r1")
        assert await job.run_group("outreach") is False
        assert await job.run_group("nope") is False
        assert await store.slack_rows() == []
    finally:
        await store.close()


async def test_scheduler_has_a_cron_job_per_group_and_a_sweep() -> None:
    clock = FakeClock(DAY1)
    store = SQLiteStore(":memory:", clock=clock)
    await store.open()
    runtime = SimpleNamespace(
        store=store, config=config(), clock=clock, replica_id="r1", slack_outbox=None,
        relay=SimpleNamespace(wake=lambda: None), retention=None,
    )  # fmt: skip
    jobs = JobScheduler(runtime)  # type: ignore[arg-type]
    jobs.start()
    try:
        assert jobs.scheduler is not None
        cron = jobs.scheduler.get_job("digest:outreach").trigger
        fields = {f.name: str(f) for f in cron.fields}
        assert (fields["hour"], fields["minute"], str(cron.timezone)) == ("9", "0", "Europe/Berlin")
        assert str(jobs.scheduler.get_job("digest:support").trigger.timezone) == "UTC"
        assert jobs.scheduler.get_job("digest-sweep") is not None
        await jobs.digest("outreach")  # no Slack: nothing is claimed
        await jobs.digest_sweep()
        assert await store.digest_state("outreach", "2026-03-02") is None
    finally:
        await jobs.stop()
        await store.close()


async def test_fake_slack_receives_the_message_then_the_chart() -> None:
    clock = FakeClock(DAY1)
    store = SQLiteStore(":memory:", clock=clock)
    async with rig(store=store, clock=clock) as r:
        await store.add_probes([ProbeRecord("email-blast", DAY1 - timedelta(minutes=m), "pass", 3.0)
                                for m in range(1, 120)])  # fmt: skip
        cfg = config()
        job = DigestJob(store, lambda: cfg, clock, "r1", wake=r.outbox.wake)
        assert await job.run_group("outreach")
        await r.advance(2)  # the channel's pace: a second between the message and the file
        await r.fake.wait_for("files.completeUploadExternal")
        await r.outbox.settle()
        methods = r.fake.methods()
        assert methods == ["chat.postMessage", "files.getUploadURLExternal", "file_upload",
                           "files.completeUploadExternal"]  # fmt: skip
        post = r.fake.calls_to("chat.postMessage")[0].params
        assert post["channel"] == "#ops-outreach"
        blocks = post["blocks"] if isinstance(post["blocks"], list) else json.loads(post["blocks"])
        assert blocks[0]["text"]["text"] == "🩺 Daily health digest"
        assert post["text"].endswith("1 need attention: chatbot")  # no data from it
        assert "email-blast" in json.dumps(blocks)
        asked = r.fake.calls_to("files.getUploadURLExternal")[0].params
        assert asked["filename"] == "digest-outreach-2026-03-02.png"
        [(file_id, data)] = r.fake.uploads.items()
        assert int(asked["length"]) == len(data) and png_size(data)[0] == 1000
        done = r.fake.calls_to("files.completeUploadExternal")[0].params
        assert done["channel_id"] == "#ops-outreach"  # the channel the message went to
        assert json.loads(done["files"]) == [{"id": file_id, "title": "outreach: the last 24 h"}]
        assert {row.state for row in await store.slack_rows()} == {"sent"}


async def test_a_refused_upload_is_retried_not_lost() -> None:
    clock = FakeClock(DAY1)
    store = SQLiteStore(":memory:", clock=clock)
    async with rig(store=store, clock=clock) as r:
        r.fake.fail("file_upload", status=500)
        cfg = config()
        assert await DigestJob(store, lambda: cfg, clock, "r1", wake=r.outbox.wake).sweep()
        await r.advance(5)  # the pace, then the channel's back-off
        await r.fake.wait_for("files.completeUploadExternal")
        await r.outbox.settle()
        assert len(r.fake.uploads) == 1 and len(r.fake.calls_to("chat.postMessage")) == 1
        assert {row.state for row in await store.slack_rows()} == {"sent"}


async def test_stop_ends_a_running_job_quietly(caplog: pytest.LogCaptureFixture) -> None:
    # A deploy stops orch while the bucket roll-up runs: the run is ended and awaited,
    # and APScheduler does not log it as a failed job (a traceback on every deploy).
    clock = FakeClock(DAY1)
    store = SQLiteStore(":memory:", clock=clock)
    await store.open()
    started, ended = asyncio.Event(), asyncio.Event()

    async def roll_up_buckets() -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # a run that is still going when stop comes
        finally:
            ended.set()

    runtime = SimpleNamespace(
        store=store, config=config(), clock=clock, replica_id="r1", slack_outbox=None,
        relay=SimpleNamespace(wake=lambda: None),
        retention=SimpleNamespace(roll_up_buckets=roll_up_buckets),
    )  # fmt: skip
    jobs = JobScheduler(runtime)  # type: ignore[arg-type]
    jobs.start()
    try:
        assert jobs.scheduler is not None
        jobs.scheduler.get_job("buckets").modify(next_run_time=datetime.now(UTC))
        await asyncio.wait_for(started.wait(), 10)
        with caplog.at_level(logging.INFO, logger="apscheduler"):
            await jobs.stop()
        assert ended.is_set()  # ended and awaited before stop returned
        assert jobs.scheduler is None
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    finally:
        await jobs.stop()
        await store.close()
