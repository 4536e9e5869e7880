"""SlackOutbox against the fake Slack over real HTTP: pacing, 429, 5xx and network errors,
auth and channel errors, restarts, and two senders on one PostgreSQL.

Time is a FakeClock shared by the SQLite store (its "database time") and the outbox, so a
Retry-After of 3 s is exactly three seconds of ``clock.advance``; nothing waits on a fixed
sleep (``outbox.settle`` returns once everything due has been tried).  Every test makes
its first Slack calls fail (``Rig.fail``), so ``Rig.posted`` lists what Slack accepted.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from slack_sdk.web.async_client import AsyncWebClient

from agents.clock import FakeClock, SystemClock
from bot.slack_outbox import SlackOutbox
from storage.base import Store
from storage.postgres import PostgresStore
from storage.slack_store import NewSlackMessage, card_key
from storage.sqlite import SQLiteStore
from tests import services
from tests.fake_slack import FakeSlack


@dataclass
class Rig:
    clock: FakeClock
    fake: FakeSlack
    store: Store
    outbox: SlackOutbox
    session: aiohttp.ClientSession

    failures: int = 0  # calls answered with an error: the first ones (fake.fail)

    def fail(self, method: str = "chat.postMessage", **how: Any) -> None:
        self.fake.fail(method, **how)
        self.failures += how.get("times", 1)

    def posted(self, channel: str | None = None) -> list[str]:
        """Texts Slack accepted, in order (every test makes its first calls fail)."""
        ok = self.fake.calls[self.failures :]
        return [c.params["text"] for c in ok if channel in (None, c.params["channel"])]

    async def advance(self, seconds: float, step: float = 1.0) -> None:
        """Move time in steps, letting the outbox act at each: FakeClock wakes sleepers
        by deadline, but a sender busy with the database when time moves re-arms its
        sleep from the new time, so one big jump could skip a deadline."""
        await self.outbox.settle()
        while seconds > 1e-9:
            await self.clock.advance(min(step, seconds))
            seconds -= step
            await self.outbox.settle()

    async def pending(self) -> int:
        return len(await self.store.slack_rows(state="pending"))


def card(incident: str, channel: str = "#a") -> NewSlackMessage:
    line = {"project": incident, "severity": "critical", "summary": f"{incident} is down"}
    line |= {"fingerprint": f"{incident}:down", "opened_at": "2026-01-01T00:00:00+00:00"}
    payload = {"message": {"text": f"card {incident}"}, "line": line}
    return NewSlackMessage(channel, "post_card", card_key(incident), payload, incident)


def reply(incident: str, n: int, channel: str = "#a") -> NewSlackMessage:
    payload = {"message": {"text": f"reply {incident} {n}"}}
    return NewSlackMessage(channel, "thread_reply", f"e{n}:reply:{incident}", payload, incident)


@asynccontextmanager
async def rig(
    store: Store | None = None,
    clock: FakeClock | None = None,
    fake: FakeSlack | None = None,
    api_url: Callable[[FakeSlack], str] = lambda f: f.api_url,
    **options: Any,
) -> AsyncIterator[Rig]:
    clock = clock or FakeClock()
    own_fake = fake is None
    fake = fake or FakeSlack()
    if own_fake:
        await fake.start()
    store = store or SQLiteStore(":memory:", clock=clock)
    await store.open()
    async with aiohttp.ClientSession() as session:
        client = AsyncWebClient(token="xoxb-test", base_url=api_url(fake), session=session)
        outbox = SlackOutbox(store, client, clock, **options)
        await outbox.start()
        try:
            yield Rig(clock, fake, store, outbox, session)
        finally:
            await outbox.stop()
            await store.close()
            if own_fake:
                await fake.stop()


async def test_paced_one_message_per_second_per_channel() -> None:
    async with rig() as r:
        await r.store.slack_enqueue([card("i1"), card("i2"), card("i3", "#b")])
        await r.outbox.settle()
        assert sorted(r.posted()) == ["card i1", "card i3"]  # one per channel, at once
        await r.advance(0.9)
        assert len(r.posted()) == 2
        await r.advance(0.1)
        assert r.posted("#a") == ["card i1", "card i2"]
        assert await r.pending() == 0 and r.outbox.health() == "ok"


async def test_a_supersedable_edit_is_skipped_for_a_newer_edit_of_its_card() -> None:
    def edit(incident: str, n: int, **marks: Any) -> NewSlackMessage:
        payload = {"message": {"text": f"edit {incident} {n}"}, **marks}
        return NewSlackMessage("#a", "update_card", f"e{n}:update:{incident}", payload, incident)

    async with rig() as r:
        await r.store.slack_enqueue([card("i1"), card("i2")])
        # Three edits of i1 in a burst (dependents folding into it), and two plain edits.
        await r.store.slack_enqueue(
            [edit("i1", n, supersedable=True) for n in (1, 2, 3)] + [edit("i2", 4), edit("i2", 5)]
        )
        await r.advance(6)
        # Only i1's newest edit went out; plain edits are never skipped.
        assert r.posted() == ["card i1", "card i2", "edit i1 3", "edit i2 4", "edit i2 5"]
        skipped = await r.store.slack_rows(state="folded")
        assert [row.payload["message"]["text"] for row in skipped] == ["edit i1 1", "edit i1 2"]
        assert await r.pending() == 0


async def test_429_retry_after_holds_back_that_channel_only() -> None:
    async with rig() as r:
        r.fail(status=429, retry_after=3)
        await r.store.slack_enqueue([card("a1", "#a"), reply("a1", 1, "#a")])
        await r.outbox.settle()
        assert r.fake.methods() == ["chat.postMessage"]  # answered 429
        assert r.outbox.health() == "degraded: 429 ratelimited on #a"
        # Channel B meanwhile: unaffected, paced as usual.
        await r.store.slack_enqueue([card("b1", "#b"), card("b2", "#b")])
        await r.advance(2.9, step=0.1)
        assert r.posted() == ["card b1", "card b2"]  # and nothing to A until 3 s
        await r.advance(0.1)
        assert r.posted("#a") == ["card a1"]
        await r.advance(1)
        assert r.posted("#a") == ["card a1", "reply a1 1"]
        card_row = (await r.store.slack_rows(channel="#a"))[0]
        assert r.fake.calls[-1].params["thread_ts"] == card_row.ts
        assert await r.pending() == 0
        assert await r.store.slack_rows(state="failed") == []
        assert r.outbox.health() == "ok"


async def test_a_429_storm_across_channels_drops_nothing_and_keeps_each_incidents_order() -> None:
    # Slack answers 429 to the next 15 writes, whichever channel they are for, while 36
    # messages wait in 3 channels: 4 incidents each, a card and two thread lines apiece.
    async with rig() as r:
        r.fail(status=429, retry_after=2, times=15)
        messages = [
            m
            for channel in ("#a", "#b", "#c")
            for n in range(4)
            for incident in [f"{channel[1]}{n}"]
            for m in (
                card(incident, channel),
                reply(incident, 1, channel),
                reply(incident, 2, channel),
            )
        ]
        await r.store.slack_enqueue(messages)
        await r.outbox.settle()
        degraded = {r.outbox.health()}
        for _ in range(120):
            if await r.pending() == 0:
                break
            await r.advance(1, step=0.5)
            degraded.add(r.outbox.health())
        assert await r.pending() == 0
        assert any(h.startswith("degraded: 429 ratelimited on #") for h in degraded), degraded
        assert r.outbox.health() == "ok"
        # Every message once; none failed or dropped.
        sent = r.posted()
        assert sorted(sent) == sorted(m.payload["message"]["text"] for m in messages)
        assert await r.store.slack_rows(state="failed") == []
        # Each incident's own writes in order: its card, then its lines 1 and 2.
        for channel in ("#a", "#b", "#c"):
            posted = r.posted(channel)
            for n in range(4):
                incident = f"{channel[1]}{n}"
                mine = [t for t in posted if t.split()[1] == incident]
                assert mine == [f"card {incident}", f"reply {incident} 1", f"reply {incident} 2"]


class FlakyProxy:
    """Forwards /api/* to the fake Slack; ``drop`` next requests lose their connection."""

    def __init__(self, fake: FakeSlack) -> None:
        self.fake = fake
        self.drop = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self, session: aiohttp.ClientSession) -> None:
        async def forward(request: web.Request) -> web.StreamResponse:
            if self.drop > 0:
                self.drop -= 1
                assert request.transport is not None
                request.transport.close()  # the client sees the server disconnect
                return web.Response()
            body = await request.read()
            headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
            target = f"{self.fake.api_url}{request.match_info['method']}"
            async with session.post(target, data=body, headers=headers) as upstream:
                data = await upstream.read()
                keep = {k: v for k, v in upstream.headers.items() if k in ("Retry-After",)}
                return web.Response(
                    body=data, status=upstream.status, headers=keep,
                    content_type=upstream.content_type,
                )  # fmt: skip

        app = web.Application()
        app.router.add_post("/api/{method}", forward)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{next(iter(self._runner.addresses))[1]}/api/"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def test_network_error_and_500_back_off_and_keep_order() -> None:
    fake = FakeSlack()
    await fake.start()
    async with aiohttp.ClientSession() as proxy_session:
        proxy = FlakyProxy(fake)
        await proxy.start(proxy_session)
        try:
            async with rig(fake=fake, api_url=lambda _f: proxy.url) as r:
                proxy.drop = 1  # the first call loses its connection …
                r.fail(status=500)  # … the second gets a 500
                await r.store.slack_enqueue([card("i1"), reply("i1", 1), card("i2")])
                await r.outbox.settle()
                assert (
                    r.fake.calls == []
                    and r.outbox.health() == "degraded: ServerDisconnectedError on #a"
                )
                await r.advance(1)  # back-off 1 s after the first failure
                assert len(r.fake.calls) == 1
                assert r.outbox.health() == "degraded: HTTP 500 on #a"
                await r.advance(1.9, step=0.1)  # then 2 s: nothing yet, nothing overtakes
                assert len(r.fake.calls) == 1
                await r.advance(0.1)
                assert r.posted() == ["card i1"]
                await r.advance(2)
                # i2's new card goes before i1's thread reply (new outages first); i1's
                # own writes keep their order.
                assert r.posted() == ["card i1", "card i2", "reply i1 1"]
                (row,) = await r.store.slack_rows(state="sent", limit=1)
                assert row.attempts == 2 and row.ts is not None
                assert r.fake.calls[3].params["thread_ts"] == row.ts
                assert r.outbox.health() == "ok" and await r.pending() == 0
        finally:
            await proxy.stop()
            await fake.stop()


async def test_invalid_auth_keeps_messages_pauses_and_reports() -> None:
    async with rig(slow_retry_s=60) as r:
        r.fail(error="invalid_auth")
        await r.store.slack_enqueue([card("i1"), reply("i1", 1)])
        await r.outbox.settle()
        assert r.outbox.health() == "auth failed: invalid_auth"
        assert await r.outbox.check() == "auth failed: invalid_auth"
        await r.advance(59)
        assert len(r.fake.calls) == 1  # paused, not hammering Slack
        waiting, later = await r.store.slack_rows()
        assert (waiting.state, waiting.last_error, waiting.attempts) == (
            "pending",
            "invalid_auth",
            1,
        )
        assert later.state == "pending"
        await r.advance(2)
        assert r.posted() == ["card i1", "reply i1 1"]
        assert r.outbox.health() == "ok" and await r.outbox.check() is None


async def test_channel_error_waits_for_the_operator_other_channels_go_on() -> None:
    async with rig(slow_retry_s=60) as r:
        r.fail(error="not_in_channel")
        await r.store.slack_enqueue([card("i1", "#a")])
        await r.outbox.settle()
        await r.store.slack_enqueue([card("i2", "#b")])
        await r.outbox.settle()
        assert r.posted() == ["card i2"]
        assert r.outbox.health() == "degraded: not_in_channel on #a"
        await r.advance(60)  # the bot was invited meanwhile
        assert r.posted() == ["card i2", "card i1"]
        assert r.outbox.health() == "ok"


async def test_a_message_slack_refuses_fails_alone_and_is_kept() -> None:
    async with rig() as r:
        r.fail(error="invalid_blocks")
        await r.store.slack_enqueue([card("i1"), reply("i1", 1), card("i2")])
        await r.advance(1)
        assert r.posted() == ["card i2"]
        errors = {row.dedupe_key: row.last_error for row in await r.store.slack_rows()}
        assert errors[card_key("i1")] == "invalid_blocks"
        assert errors["e1:reply:i1"] == "card not posted"
        assert r.outbox.stats["failed"] == 2 and await r.pending() == 0
        assert r.outbox.health() == "ok"  # one bad message is not an outage


async def test_pending_writes_survive_a_restart(tmp_path: Path) -> None:
    clock = FakeClock()
    fake = FakeSlack()
    await fake.start()
    path = tmp_path / "orch.db"
    try:
        async with rig(store=SQLiteStore(path, clock=clock), clock=clock, fake=fake) as first:
            first.fail(status=500)
            await first.store.slack_enqueue([card("i1"), reply("i1", 1), card("i2")])
            await first.outbox.settle()
            assert first.fake.methods() == ["chat.postMessage"]
        # A new process: a new store object on the same file, a new outbox (a new owner).
        async with rig(store=SQLiteStore(path, clock=clock), clock=clock, fake=fake) as second:
            second.failures = 1
            assert await second.pending() == 3
            await second.advance(3)
            assert second.posted() == ["card i1", "card i2", "reply i1 1"]  # new cards first
            assert await second.pending() == 0
    finally:
        await fake.stop()


@pytest.fixture
async def pg_schema(database_url: str) -> AsyncIterator[str]:
    schema = f"orch_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        yield schema
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


async def test_two_outboxes_on_postgres_send_each_message_once(pg_schema: str) -> None:
    url = services.database_url()
    fake = FakeSlack()
    await fake.start()
    stores = [PostgresStore(url, schema=pg_schema) for _ in range(3)]
    await stores[0].open()
    channels = [f"#c{n}" for n in range(4)]
    messages = [card(f"{ch[1:]}-{i}", ch) for i in range(6) for ch in channels]
    await stores[0].slack_enqueue(messages, storm_after=0)  # no folding here
    outboxes: list[SlackOutbox] = []
    try:
        async with aiohttp.ClientSession() as session:
            client = AsyncWebClient(token="xoxb-test", base_url=fake.api_url, session=session)
            for store in stores[1:]:
                await store.open()
                outbox = SlackOutbox(
                    store, client, SystemClock(), per_channel_interval=0.01, poll_interval=0.05
                )
                outboxes.append(outbox)
            await asyncio.gather(*(o.start() for o in outboxes))
            await fake.wait_for("chat.postMessage", len(messages), timeout=30)
            for outbox in outboxes:
                await outbox.settle()
            assert await stores[0].slack_rows(state="pending") == []
            texts = [c.params["text"] for c in fake.calls_to("chat.postMessage")]
            assert sorted(texts) == sorted(f"card {m.incident_id}" for m in messages)
            for ch in channels:  # each channel in its queue order
                calls = fake.calls_to("chat.postMessage")
                sent = [c.params["text"] for c in calls if c.params["channel"] == ch]
                assert sent == [f"card {ch[1:]}-{i}" for i in range(6)]
    finally:
        for outbox in outboxes:
            await outbox.stop()
        for store in stores:
            await store.close()
        await fake.stop()
