"""Redis down while people use Slack (issue 10, point 2).

Two real ``Runtime`` replicas share one PostgreSQL schema and a private ``redis-server``
(``tests.redis_server``; the shared one is never stopped).  Projects change state, people
type slash commands and click Approve; then Redis stops.  While it is down the projects
keep changing and people keep typing; then Redis comes back, either empty (a production
Redis without persistence), with the data it had (one that saved before stopping), or
from a freeze (SIGSTOP: a hung host whose connections open but never answer).

What a user would see is asserted, and what the store says happened:

* every Slack request is acknowledged in under 3 s, measured per request: acking never
  waits on Redis (and the answers, which need only PostgreSQL, still arrive);
* every event stored during the outage stays in the outbox, then reaches every role that
  takes it, fleet-wide exactly once: a witness role counts its deliveries, and the readers
  count a handler run whose claim was already there (``duplicates``);
* each project that went down during the outage gets exactly one card, the one that
  recovered gets its card edited, the approved restart runs once;
* the outbox is empty at the end.

Nothing sleeps for a fixed time: every wait is on a condition, with a timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import ResponseError

from agents.bus import InProcessBus
from agents.events import PROJECT_STATUS_CHANGED, Event
from agents.outbox import OutboxRelay
from agents.redis_bus import RedisStreamsBus
from agents.redis_support import is_nogroup
from bot.config import Config
from bot.runtime import Runtime, RuntimeOptions
from bot.settings import Settings
from demo.fleet import Fleet
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
from tests.redis_server import RedisServer
from tests.support import eventually

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.timeout(90)]

log = logging.getLogger(__name__)

SIGNING = "signing-secret"
BOSS, ASKER = "U0BOSS", "U0ASKER"
WEB = [f"web-{i}" for i in range(1, 6)]
ACTOR = "email-blast"  # a contract service whose restart needs an approval
SECRET = b"secret-email-blast"
ENV = {"EMAIL_BLAST_SECRET": SECRET.decode()}
WITNESS = "outage-witness"
ACK_LIMIT_S = 3.0


@dataclass
class HttpFleet:
    """One local server, one path per project; a failing project answers 503."""

    failing: set[str] = field(default_factory=set)
    url: str = ""


@pytest.fixture
async def http_fleet() -> AsyncIterator[HttpFleet]:
    fleet = HttpFleet()

    async def handle(request: web.Request) -> web.Response:
        down = request.match_info["name"] in fleet.failing
        return web.Response(status=503 if down else 200, text="broken" if down else "ok")

    app = web.Application()
    app.router.add_get("/{name}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fleet.url = f"http://127.0.0.1:{port}"
    try:
        yield fleet
    finally:
        await runner.cleanup()


def outage_config(http: HttpFleet, demo: Fleet) -> Config:
    fast = {"interval": "200ms", "timeout": "150ms", "recheck_interval": "100ms"}
    return Config.model_validate(
        {
            "defaults": fast,
            "orchestrators": {
                "ops": {"channel": "#ops", "approvers": [BOSS], "projects": [*WEB, ACTOR]}
            },
            "projects": [
                *({"name": n, "url": f"{http.url}/{n}", "kind": "http"} for n in WEB),
                {
                    "name": ACTOR,
                    "url": demo.url(ACTOR),
                    "control_url": demo.control_url(ACTOR),
                    "control_secret_env": "EMAIL_BLAST_SECRET",
                    "allowed_actions": ["restart"],
                    "needs_approval": ["restart"],  # never restarted without the click
                    "interval": "1s",
                    "timeout": "500ms",
                    "remediation": {"verify_timeout": "5s", "verify_interval": "200ms"},
                },
            ],
        }
    )


class Witness:
    """A role of its own on every replica (one consumer group): which replica handled
    which event, so a second delivery anywhere in the fleet shows."""

    def __init__(self) -> None:
        self.handled: list[tuple[str, str]] = []  # (replica, event id)

    def handler(self, replica: str) -> Callable[[Event], Awaitable[None]]:
        async def handle(event: Event) -> None:
            self.handled.append((replica, event.id))

        return handle

    def counts(self) -> Counter[str]:
        return Counter(eid for _replica, eid in self.handled)


@dataclass
class Ack:
    what: str
    replica: int
    status: int
    seconds: float


class World:
    def __init__(
        self,
        slack: FakeSlack,
        redis: RedisServer,
        demo: Fleet,
        runtimes: list[Runtime],
        witness: Witness,
        http: aiohttp.ClientSession,
    ) -> None:
        self.slack, self.redis, self.demo = slack, redis, demo
        self.runtimes, self.witness, self.http = runtimes, witness, http
        self.store: Store = runtimes[0].store
        self.acks: list[Ack] = []

    async def _post(self, replica: int, what: str, body: str) -> None:
        runtime = self.runtimes[replica]
        assert runtime.web is not None
        url = f"{runtime.web.url}/slack/events"
        started = time.monotonic()
        async with self.http.post(url, data=body, headers=signed_headers(SIGNING, body)) as r:
            await r.read()
            self.acks.append(Ack(what, replica, r.status, time.monotonic() - started))

    async def command(self, replica: int, text: str, user: str = ASKER) -> None:
        fields = slash_command(text, self.slack.response_url(f"r{replica}"), user_id=user)
        await self._post(replica, f"/orch {text}", form_body(fields))

    async def click(self, replica: int, approval_id: str, user: str = BOSS) -> None:
        payload = block_action("approval_approve", approval_id, user=user,
                               response_url=self.slack.response_url("click"))  # fmt: skip
        await self._post(replica, "approve", interactive_body(payload))

    def cards(self, project: str) -> list[dict[str, Any]]:
        """Top-level messages (cards) that name the project as down."""
        return [
            c.params
            for c in self.slack.calls_to("chat.postMessage")
            if "thread_ts" not in c.params and f"{project} is down" in json.dumps(c.params)
        ]

    def buses(self) -> list[RedisStreamsBus]:
        buses = [r.bus for r in self.runtimes]
        assert all(isinstance(b, RedisStreamsBus) for b in buses)
        return buses  # type: ignore[return-value]

    async def unclaimed(self, since: datetime) -> dict[str, list[str]]:
        """Per role (of any replica), the events since ``since`` it takes but has not
        claimed.  Published or not: an event still in the outbox counts as unclaimed."""
        missing: dict[str, list[str]] = {}
        for bus in self.buses():
            for role, types in bus.subscriptions().items():
                wanted = {
                    e.id
                    for e in await self.store.list_events(since=since, limit=10_000)
                    if types is None or e.type in types
                }
                claimed = await self.store.claimed_ids(role, sorted(wanted))
                if wanted - claimed:
                    missing[role] = sorted(wanted - claimed)
        return missing

    def reader_totals(self) -> Counter[str]:
        totals: Counter[str] = Counter()
        for bus in self.buses():
            for stats in bus.stats().values():
                totals.update(stats)
        return totals


@pytest.fixture
async def world(pg_schema: tuple[str, str], http_fleet: HttpFleet) -> AsyncIterator[World]:
    slack = FakeSlack()
    await slack.start()
    demo = Fleet.ephemeral([ACTOR], {ACTOR: SECRET}, starting_s=0.2)
    witness = Witness()
    runtimes: list[Runtime] = []
    try:
        await demo.start()
        async with RedisServer() as redis, aiohttp.ClientSession() as http:
            config = outage_config(http_fleet, demo)
            for i in range(2):
                settings = Settings(
                    database_url=pg_schema[0], redis_url=redis.url, port=0, env=ENV,
                    slack_bot_token="xoxb-test", slack_signing_secret=SIGNING,
                    slack_api_url=slack.api_url,
                )  # fmt: skip
                options = RuntimeOptions(replica_id=f"r{i}", lease_ttl_s=3)
                runtime = Runtime(settings, config, options=options)
                runtime.bus.subscribe(WITNESS, witness.handler(f"r{i}"))
                runtimes.append(runtime)
            try:
                for runtime in runtimes:
                    await runtime.start()
                yield World(slack, redis, demo, runtimes, witness, http)
            finally:
                for runtime in reversed(runtimes):  # stop() undoes what start() did
                    await runtime.stop()
    finally:
        await demo.stop()
        await slack.stop()


class Outage:
    """How the private Redis goes away and comes back:

    * ``empty``: stopped, started again without its data (no persistence);
    * ``with_its_data``: snapshotted (SAVE), stopped, started again: it loads the RDB file
      from its directory, as a Redis with persistence does;
    * ``frozen``: SIGSTOP, then SIGCONT: connections open but nothing answers (a hung
      host), and it resumes with its memory and whatever was sent to it meanwhile.
    """

    def __init__(self, server: RedisServer, how: str) -> None:
        self.server, self.how = server, how
        self._pid = 0

    async def begin(self) -> None:
        client = aioredis.Redis.from_url(self.server.url, decode_responses=True)
        try:
            if self.how == "with_its_data":
                await client.save()
            self._pid = int((await client.info("server"))["process_id"])
        finally:
            await client.aclose()
        if self.how == "frozen":
            os.kill(self._pid, signal.SIGSTOP)  # the fixture's SIGKILL ends it either way
        else:
            await self.server.stop()

    async def end(self) -> None:
        if self.how == "frozen":
            os.kill(self._pid, signal.SIGCONT)
        else:
            await self.server.start()

    def failed_long_enough(self, buses: list[RedisStreamsBus]) -> bool:
        """Stopped: until each relay failed six times (its backoff, production values, 0.1 s
        doubling to 5 s, then waits seconds between tries, as in a long outage).  Frozen:
        once each (every try waits for the socket timeout, 11 s)."""
        needed = 1 if self.how == "frozen" else 6
        return all(bus.publish_failures >= needed for bus in buses)


@pytest.mark.parametrize("comes_back", ["empty", "with_its_data", "frozen"])
async def test_redis_down_under_slack_traffic_loses_nothing_and_duplicates_nothing(
    world: World, http_fleet: HttpFleet, comes_back: str
) -> None:
    store, slack = world.store, world.slack

    async def count_status(project: str) -> int:
        events = await store.list_events(project=project, types=[PROJECT_STATUS_CHANGED])
        return len(events)

    # -- before: everything flows through Redis -------------------------------------------
    async def fleet_known() -> bool:
        return all([await count_status(n) >= 1 for n in [*WEB, ACTOR]])

    await eventually(fleet_known, "every project's first status", timeout=20)
    http_fleet.failing.add("web-1")  # down before the outage: its card exists
    await eventually(lambda: len(world.cards("web-1")) == 1, "web-1's card", timeout=20)
    await world.command(0, f"restart {ACTOR}")  # not an approver: asks for approval

    async def approval_card() -> bool:
        posts = slack.calls_to("chat.postMessage")
        return any("approval_approve" in json.dumps(c.params) for c in posts)

    await eventually(approval_card, "the approval card", timeout=20)
    [approval] = await store.pending_approvals(ACTOR)
    await asyncio.wait_for(asyncio.gather(*(b.drain() for b in world.buses())), 20)

    # -- Redis goes away ----------------------------------------------------------------
    down_at = await store.db_now()
    stopped = time.monotonic()
    outage = Outage(world.redis, comes_back)
    await outage.begin()

    http_fleet.failing.discard("web-1")  # recovers while Redis is down
    http_fleet.failing.update({"web-2", "web-3"})  # two new outages
    requests: list[Awaitable[None]] = []
    for replica in (0, 1):
        requests += [
            world.command(replica, "status"),
            world.command(replica, "incidents"),
            world.command(replica, "status web-1"),
            world.command(replica, "help"),
        ]
    requests += [
        world.command(1, "silence web-5 1h maintenance"),
        world.click(1, approval.id),
        world.click(0, approval.id),  # a double click, on the other replica
    ]
    await asyncio.gather(*requests)

    async def outage_events_stored() -> bool:
        counts = [await count_status(n) for n in ("web-1", "web-2", "web-3")]
        return counts == [3, 2, 2]  # web-1: unknown→healthy→down→healthy

    await eventually(outage_events_stored, "the outage's status changes", timeout=20)
    # The answers need only PostgreSQL: they arrive while Redis is still down.
    # Each request but "help" (answered in its ack) answers there, and the restart asked
    # for before the outage: 1 + 2 x 3 + 1 + 2.
    answered = len(await slack.wait_for("response_url", 10, timeout=20))

    # Redis stays away until the relays have failed for a while (``Outage``).  Meanwhile
    # another project fails and people keep asking, one request after another's answer
    # (bounded).
    http_fleet.failing.add("web-4")
    asked = ["status", "status web-4", "incidents"]

    def long_enough() -> bool:
        return outage.failed_long_enough(world.buses())

    for i in range(100):
        if long_enough():
            break
        await world.command(i % 2, asked[i % len(asked)])
        answered = len(await slack.wait_for("response_url", answered + 1, timeout=20))
    await eventually(long_enough, "the relays failing for a while", timeout=40)

    async def web4_down() -> bool:
        return await count_status("web-4") == 2

    await eventually(web4_down, "web-4's outage stored", timeout=20)
    held = await store.unpublished_events(10_000)
    held_types = Counter(e.type for e in held)
    assert held_types[PROJECT_STATUS_CHANGED] == 4, held_types
    assert held_types["silence.created"] == 1 and held_types["approval.granted"] == 1
    outage_s = time.monotonic() - stopped

    # -- Redis is back ------------------------------------------------------------------
    await outage.end()
    back = time.monotonic()

    async def all_delivered() -> bool:
        return not await store.unpublished_events(10) and not await world.unclaimed(down_at)

    await eventually(all_delivered, "every event claimed by every role", timeout=40)
    recovered_s = time.monotonic() - back

    async def restarted() -> bool:
        action = await store.get_action(approval.action_id)
        return action is not None and action.state in ("verified", "failed")

    await eventually(restarted, "the approved restart", timeout=20)
    await eventually(
        lambda: all(len(world.cards(n)) == 1 for n in ("web-2", "web-3", "web-4")),
        "one card per new outage",
        timeout=20,
    )

    async def web1_resolved() -> bool:
        updates = slack.calls_to("chat.update")
        return any("web-1" in json.dumps(u.params) and "resolved" in json.dumps(u.params).lower()
                   for u in updates)  # fmt: skip

    await eventually(web1_resolved, "web-1's card edited as resolved", timeout=20)
    await asyncio.wait_for(asyncio.gather(*(b.drain() for b in world.buses())), 20)

    # -- what users saw -------------------------------------------------------------------
    slowest = max(world.acks, key=lambda a: a.seconds)
    assert all(a.status == 200 for a in world.acks), world.acks
    assert slowest.seconds < ACK_LIMIT_S, slowest
    assert len(world.cards("web-1")) == 1  # edited, never posted again
    assert world.demo.service(ACTOR).restarts == 1  # two clicks, one restart
    action = await store.get_action(approval.action_id)
    assert action is not None and action.state == "verified"

    # -- what the store and the readers say ---------------------------------------------
    assert await store.unpublished_events(10) == []
    produced = {e.id for e in await store.list_events(since=down_at, limit=10_000)}
    witnessed = world.witness.counts()
    assert {eid: n for eid, n in witnessed.items() if n > 1} == {}
    assert produced <= set(witnessed)
    totals = world.reader_totals()
    assert (totals["duplicates"], totals["dead_letters"]) == (0, 0), totals
    buses = world.buses()
    log.warning(
        "redis outage (%s): %.1f s down, %d events held (%s), %d requests acked, slowest"
        " %.3f s, everything delivered %.1f s after Redis was back, %d events since the"
        " outage began, duplicates 0; second publishes refused %d, republished %d",
        comes_back, outage_s, len(held), dict(held_types), len(world.acks), slowest.seconds,
        recovered_s, len(produced), sum(b.publish_duplicates for b in buses),
        sum(b.republished for b in buses),
    )  # fmt: skip


# -- the bus alone: how Redis can come back, and what each way needs --------------------
# Short timings (milliseconds) on the same code paths as production.
FAST_BUS: dict[str, Any] = {"block_ms": 50, "backoff_base": 0.02, "backoff_cap": 0.2}


def numbered(i: int) -> Event:
    return Event(PROJECT_STATUS_CHANGED, datetime.now(UTC), "test", {"i": i}, project="web-1")


@pytest.fixture
async def sqlite() -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(":memory:")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def server() -> AsyncIterator[RedisServer]:
    async with RedisServer() as srv:
        yield srv


async def snapshot(server: RedisServer) -> None:
    client = aioredis.Redis.from_url(server.url)
    try:
        await client.save()
    finally:
        await client.aclose()


async def test_back_from_an_older_snapshot_nothing_is_handled_twice_or_lost(
    server: RedisServer, sqlite: SQLiteStore
) -> None:
    """A Redis with RDB snapshots restarts from one taken before its last writes: entries
    handled since come back as never delivered (here mostly to a replica started just
    then, which never saw them), and one published since is gone."""
    gate, entered, handled = asyncio.Event(), [], []

    async def handle(e: Event) -> None:
        entered.append(e.id)
        await gate.wait()
        handled.append(e.id)

    bus, late = (
        RedisStreamsBus(server.url, sqlite, claim_idle_ms=150, read_count=1, **FAST_BUS)
        for _ in range(2)
    )
    bus.subscribe("r", handle)
    late.subscribe("r", handle)
    await bus.start()
    relay = OutboxRelay(sqlite, bus)
    sent = [numbered(i) for i in range(5)]
    try:
        await relay.emit(sent[:3])
        await relay.flush()
        await eventually(lambda: entered == [sent[0].id], "the first entry in hand")
        await snapshot(server)  # e0 pending, e1 and e2 not yet delivered
        gate.set()
        await asyncio.wait_for(bus.drain(), 20)  # all three handled and acknowledged
        gate.clear()
        await relay.emit(sent[3:])  # after the snapshot
        await relay.flush()
        await eventually(lambda: entered[-1] == sent[3].id, "e3 in hand, e4 in the stream")
        await server.stop()
        gate.set()

        async def e3_claimed() -> bool:
            return bool(await sqlite.claimed_ids("r", [sent[3].id]))

        await eventually(e3_claimed, "e3 handled while Redis is down")
        await server.start()  # loads the snapshot: e0..e2 again, e3 and e4 never
        await late.start()  # a replica starting now: first to read
        ids = Counter(e.id for e in sent)
        await eventually(lambda: set(handled) == set(ids), "every event", timeout=20)
        await asyncio.wait_for(late.drain(), 20)
    finally:
        await late.stop()
        await bus.stop()
    assert Counter(handled) == ids  # e0..e2 were handed out again and skipped
    assert bus.republished + late.republished == 1  # e4, which the snapshot never had
    assert bus.stats()["r"]["duplicates"] + late.stats()["r"]["duplicates"] == 0


async def test_a_lost_group_is_noticed_on_the_read_path(
    server: RedisServer, sqlite: SQLiteStore
) -> None:
    """The reader learns that its group is gone from its pipelined ack-and-read (where
    redis-py wraps the NOGROUP reply), not from the reclaim cycle, which runs only every
    claim_idle / 2 (here a minute)."""
    handled: list[str] = []

    async def handle(e: Event) -> None:
        handled.append(e.id)

    bus = RedisStreamsBus(server.url, sqlite, claim_idle_ms=120_000, **FAST_BUS)
    bus.subscribe("r", handle)
    await bus.start()
    relay = OutboxRelay(sqlite, bus, sweep_interval=0.02)
    await relay.start()
    try:
        first, second = numbered(1), numbered(2)
        await relay.emit([first])
        await eventually(lambda: handled == [first.id], "the first event")
        await server.stop()
        await relay.emit([second])
        await server.start()  # empty
        await eventually(lambda: handled == [first.id, second.id], "the second", timeout=20)
    finally:
        await relay.stop()
        await bus.stop()
    wrapped = ResponseError(
        "Command # 1 (XREADGROUP GROUP r c COUNT 1 BLOCK 50 STREAMS orch:events >) of "
        "pipeline caused error: (\"NOGROUP No such key 'orch:events'\",)"
    )
    assert is_nogroup(wrapped) and is_nogroup(ResponseError("NOGROUP No such key"))
    assert not is_nogroup(ResponseError("ERR unknown command 'NOGROUP'"))


async def test_two_relays_publish_each_event_once(server: RedisServer, sqlite: SQLiteStore) -> None:
    """Every replica's relay sweeps the same outbox: after an outage both find the same
    backlog.  Publishing is idempotent per event id, so the stream holds each once, and
    so does a retry of an XADD whose answer was lost."""
    handled: list[str] = []

    async def handle(e: Event) -> None:
        handled.append(e.id)

    buses = [RedisStreamsBus(server.url, sqlite, **FAST_BUS) for _ in range(2)]
    buses[0].subscribe("r", handle)
    for bus in buses:
        await bus.start()
    backlog = [numbered(i) for i in range(200)]
    try:
        await sqlite.append_events(backlog)
        relays = [OutboxRelay(sqlite, bus, batch=20) for bus in buses]
        await asyncio.gather(*(relay.flush() for relay in relays))
        await buses[1].publish(backlog[0])  # a retry
        await asyncio.wait_for(buses[0].drain(), 20)
        client = aioredis.Redis.from_url(server.url)
        try:
            assert await client.xlen("orch:events") == len(backlog)
        finally:
            await client.aclose()
    finally:
        for bus in buses:
            await bus.stop()
    assert Counter(handled) == Counter(e.id for e in backlog)
    assert sum(b.published for b in buses) == len(backlog)
    assert sum(b.publish_duplicates for b in buses) >= 1


class FailsAfter(InProcessBus):
    """A bus that goes away after ``ok`` publishes (Redis dying mid-batch)."""

    def __init__(self, ok: int) -> None:
        super().__init__()
        self.ok = ok

    async def publish(self, event: Event) -> None:
        if self.ok <= 0:
            raise ConnectionError("bus unreachable")
        self.ok -= 1
        await super().publish(event)


async def test_a_batch_cut_short_marks_what_was_published(sqlite: SQLiteStore) -> None:
    bus = FailsAfter(ok=2)
    seen: list[str] = []

    async def record(e: Event) -> None:
        seen.append(e.id)

    bus.subscribe("r", record)
    await bus.start()
    relay = OutboxRelay(sqlite, bus)
    events = [numbered(i) for i in range(5)]
    try:
        await sqlite.append_events(events)
        with pytest.raises(ConnectionError):
            await relay.flush()
        assert [e.id for e in await sqlite.unpublished_events()] == [e.id for e in events[2:]]
        bus.ok = 10  # back
        assert await relay.flush() == 3
        await bus.drain()
    finally:
        await bus.stop()
    assert seen == [e.id for e in events]  # each once, in order
