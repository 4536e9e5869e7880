"""The Redis Streams bus against real Redis.

Tests that only publish and consume use the shared server (a unique stream each); tests
that stop, kill or restart Redis run their own throwaway server (``tests.redis_server``),
which comes back empty after a restart, as a production Redis without persistence does.
Nothing sleeps for a fixed time: every wait is on a condition, with a timeout.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis

from agents import events as ev
from agents.bus import InProcessBus
from agents.bus_factory import make_bus
from agents.events import Event
from agents.outbox import OutboxRelay
from agents.redis_bus import RedisStreamsBus
from agents.redis_support import Backoff, BusUnavailable, stream_id_key
from storage.sqlite import SQLiteStore
from tests.redis_server import RedisServer, free_port
from tests.support import eventually

pytestmark = pytest.mark.redis

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CLAIM_IDLE_MS = 150


until = eventually  # polls Redis and the store: state outside this process


def event(i: int, type_: str = ev.PROJECT_STATUS_CHANGED) -> Event:
    return Event(type_, datetime.now(UTC), "test", {"i": i}, project="email-blast")


class Recorder:
    """Handlers that record which event ids each role handled (across replicas)."""

    def __init__(self) -> None:
        self.handled: dict[str, list[str]] = defaultdict(list)

    def handler(self, role: str) -> Callable[[Event], Awaitable[None]]:
        async def handle(e: Event) -> None:
            self.handled[role].append(e.id)

        return handle

    def once_each(self, role: str, ids: Iterable[str]) -> bool:
        return Counter(self.handled[role]) == Counter(set(ids))


@pytest.fixture
async def store() -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(":memory:")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def stream(redis_url: str) -> AsyncIterator[str]:
    """A stream of its own on the shared server, deleted afterwards."""
    name = f"orch:test:{uuid.uuid4().hex}"
    yield name
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.delete(name, f"{name}:dead")
    finally:
        await client.aclose()


@pytest.fixture
async def server() -> AsyncIterator[RedisServer]:
    async with RedisServer() as srv:
        yield srv


@pytest.fixture
async def buses() -> AsyncIterator[list[RedisStreamsBus]]:
    """Every bus a test makes is stopped at the end, even when the test fails."""
    made: list[RedisStreamsBus] = []
    yield made
    for bus in made:
        await bus.stop()


def fast_bus(
    made: list[RedisStreamsBus], url: str, store: SQLiteStore, **kw: Any
) -> RedisStreamsBus:
    """Short timings so retries happen in milliseconds; same code paths as production."""
    options: dict[str, Any] = {
        "stream": "orch:events",
        "claim_idle_ms": CLAIM_IDLE_MS,
        "block_ms": 50,
        "backoff_base": 0.02,
        "backoff_cap": 0.2,
        **kw,
    }
    bus = RedisStreamsBus(url, store, **options)
    made.append(bus)
    return bus


async def pending(url: str, stream: str, group: str) -> int:
    client = aioredis.Redis.from_url(url)
    try:
        return int((await client.xpending(stream, group))["pending"])
    finally:
        await client.aclose()


# -- delivery --------------------------------------------------------------------------


async def test_each_event_is_handled_once_per_role_across_replicas(
    redis_url: str, stream: str, store: SQLiteStore, buses: list[RedisStreamsBus]
) -> None:
    rec = Recorder()
    replicas = [fast_bus(buses, redis_url, store, stream=stream) for _ in range(2)]
    for bus in replicas:  # the same roles in every replica share one group per role
        bus.subscribe("incidents", rec.handler("incidents"))
        bus.subscribe("notify", rec.handler("notify"), types=[ev.INCIDENT_OPENED])
        await bus.start()
    sent = [event(i, ev.INCIDENT_OPENED if i % 4 == 0 else ev.METRIC_ANOMALY) for i in range(200)]
    for i, e in enumerate(sent):
        await replicas[i % 2].publish(e)  # both replicas publish too
    await asyncio.wait_for(replicas[0].drain(), 20)

    all_ids = [e.id for e in sent]
    opened = [e.id for e in sent if e.type == ev.INCIDENT_OPENED]
    assert rec.once_each("incidents", all_ids)
    assert rec.once_each("notify", opened)  # other types were acknowledged unhandled
    assert await store.claimed_ids("incidents", all_ids) == set(all_ids)
    assert await store.claimed_ids("notify", all_ids) == set(opened)
    delivered = sum(b.stats()["incidents"]["delivered"] for b in replicas)
    assert delivered == len(sent)
    assert await pending(redis_url, stream, "incidents") == 0


async def test_consumer_killed_before_ack_is_handled_once_by_another(
    redis_url: str, stream: str, store: SQLiteStore, buses: list[RedisStreamsBus]
) -> None:
    entered: list[str] = []

    async def hangs(e: Event) -> None:
        entered.append(e.id)
        await asyncio.Event().wait()  # read, never finished: the process "dies" here

    a = fast_bus(buses, redis_url, store, stream=stream)
    a.subscribe("incidents", hangs)
    await a.start()
    e = event(1)
    await a.publish(e)
    await until(lambda: entered == [e.id], "replica A to take the entry")
    await a.stop()  # killed between XREADGROUP and XACK
    assert await pending(redis_url, stream, "incidents") == 1

    rec = Recorder()
    b = fast_bus(buses, redis_url, store, stream=stream)
    b.subscribe("incidents", rec.handler("incidents"))
    await b.start()
    await asyncio.wait_for(b.drain(), 20)
    assert rec.handled["incidents"] == [e.id]
    assert b.stats()["incidents"]["reclaimed"] == 1
    assert await store.claimed_ids("incidents", [e.id]) == {e.id}


async def test_consumer_killed_after_storing_effects_is_not_handled_again(
    redis_url: str, stream: str, store: SQLiteStore, buses: list[RedisStreamsBus]
) -> None:
    async def stores_then_hangs(e: Event) -> None:
        await store.claim_event("incidents", e.id)  # effects and claim stored...
        await asyncio.Event().wait()  # ...then dies before XACK

    a = fast_bus(buses, redis_url, store, stream=stream)
    a.subscribe("incidents", stores_then_hangs)
    await a.start()
    e = event(1)
    await a.publish(e)

    async def claimed() -> bool:
        return await store.claimed_ids("incidents", [e.id]) == {e.id}

    await until(claimed, "replica A to store its effects")
    await a.stop()

    rec = Recorder()
    b = fast_bus(buses, redis_url, store, stream=stream)
    b.subscribe("incidents", rec.handler("incidents"))
    await b.start()
    await asyncio.wait_for(b.drain(), 20)
    assert rec.handled["incidents"] == []  # reclaimed, seen as claimed, acknowledged
    assert b.stats()["incidents"]["skipped"] == 1


async def test_always_failing_handler_is_dead_lettered_after_five_deliveries(
    redis_url: str, stream: str, store: SQLiteStore, buses: list[RedisStreamsBus]
) -> None:
    loop = asyncio.get_running_loop()
    calls: list[float] = []
    dead: list[tuple[str, str, str]] = []

    async def fails(e: Event) -> None:
        calls.append(loop.time())
        raise RuntimeError("handler is broken")

    async def on_dead_letter(role: str, e: Event, error: str) -> None:
        dead.append((role, e.id, error))

    rec = Recorder()
    bus = fast_bus(buses, redis_url, store, stream=stream, on_dead_letter=on_dead_letter)
    bus.subscribe("broken", fails)
    bus.subscribe("healthy", rec.handler("healthy"))  # unaffected by the other role
    await bus.start()
    e = event(1)
    await bus.publish(e)
    await until(lambda: bus.stats()["broken"]["dead_letters"] == 1, "dead-lettering")

    assert len(calls) == 5
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert min(gaps) >= CLAIM_IDLE_MS / 1000 * 0.9, gaps  # retried only once idle
    assert dead == [("broken", e.id, "RuntimeError('handler is broken')")]
    assert rec.handled["healthy"] == [e.id]
    assert await pending(redis_url, stream, "broken") == 0

    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        entries: list[Any] = list(await client.xrange(f"{stream}:dead") or ())
    finally:
        await client.aclose()
    assert [(f["id"], f["role"]) for _, f in entries] == [(e.id, "broken")]

    cycles = bus.stats()["broken"]["reclaim_cycles"]
    await until(lambda: bus.stats()["broken"]["reclaim_cycles"] >= cycles + 3, "more cycles")
    assert len(calls) == 5  # never again, neither by reclaim nor by the reconciler
    assert await store.unclaimed_events("broken", EPOCH) == []


async def test_a_new_role_starts_at_new_events_not_the_history(
    redis_url: str, stream: str, store: SQLiteStore, buses: list[RedisStreamsBus]
) -> None:
    rec = Recorder()
    old = fast_bus(buses, redis_url, store, stream=stream)
    old.subscribe("incidents", rec.handler("incidents"))
    await old.start()
    history = event(1)
    await old.publish(history)
    await asyncio.wait_for(old.drain(), 20)

    new = fast_bus(buses, redis_url, store, stream=stream)
    new.subscribe("incidents", rec.handler("incidents"))  # another replica, same group
    new.subscribe("notify", rec.handler("notify"))  # a role added in a later release
    await new.start()
    fresh = event(2)
    await new.publish(fresh)
    await asyncio.wait_for(new.drain(), 20)
    assert rec.handled["notify"] == [fresh.id]
    assert rec.once_each("incidents", [history.id, fresh.id])


class FlakyClaims(SQLiteStore):
    """The store fails the first ``failures`` batch claims, as during a store outage."""

    def __init__(self, failures: int) -> None:
        super().__init__(":memory:")
        self.failures = failures

    async def claim_events(self, role: str, event_ids: Sequence[str]) -> set[str]:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("store unavailable")
        return await super().claim_events(role, event_ids)


async def test_a_store_outage_does_not_dead_letter_good_events(
    redis_url: str, stream: str, buses: list[RedisStreamsBus]
) -> None:
    store = FlakyClaims(failures=7)  # more than max_deliveries
    await store.open()
    try:
        rec = Recorder()
        bus = fast_bus(buses, redis_url, store, stream=stream)
        bus.subscribe("incidents", rec.handler("incidents"))
        await bus.start()
        e = event(1)
        await bus.publish(e)
        await asyncio.wait_for(bus.drain(), 20)
        stats = bus.stats()["incidents"]
        # Each failed claim gave its delivery back, so the entry was never dead-lettered;
        # the handler ran again each time (at least once), the claim is stored once.
        assert (stats["dead_letters"], stats["delivered"], store.failures) == (0, 1, 0)
        assert rec.handled["incidents"] == [e.id] * 8
        assert await store.claimed_ids("incidents", [e.id]) == {e.id}
        await bus.stop()
    finally:
        await store.close()


# -- Redis going away ------------------------------------------------------------------


async def test_publish_fails_fast_while_redis_is_unreachable(
    store: SQLiteStore, buses: list[RedisStreamsBus]
) -> None:
    bus = fast_bus(buses, f"redis://127.0.0.1:{free_port()}/0", store, backoff_base=5.0)
    bus.subscribe("incidents", Recorder().handler("incidents"))
    await bus.start()  # logs and carries on: the readers keep retrying
    with pytest.raises(BusUnavailable):
        await bus.publish(event(1))
    with pytest.raises(BusUnavailable, match="retrying in"):  # inside the backoff window
        await bus.publish(event(2))
    assert bus.publish_failures == 1  # the second call did not even try


async def test_redis_outage_events_wait_in_the_outbox_and_all_arrive(
    server: RedisServer, store: SQLiteStore, buses: list[RedisStreamsBus]
) -> None:
    """A project crashes and recovers while Redis is down.

    The issue's scenario is a 30 s outage.  Its length only changes how many times the
    relay's publish and the readers fail and back off.  Here Redis stays down until
    publish has failed five times, by which point the backoff (base 0.02 s) has reached
    its cap (0.2 s): the same sequence (fail, back off at the cap, fail again, reconnect,
    find the groups gone, recreate them, reconcile) that 30 s takes with the production
    base 0.1 s and cap 5 s, in a fraction of a second.
    """
    rec = Recorder()
    bus = fast_bus(buses, server.url, store)
    notify_types = [ev.INCIDENT_OPENED, ev.INCIDENT_RESOLVED]
    roles = {"incidents": None, "notify": notify_types}
    for role, types in roles.items():
        bus.subscribe(role, rec.handler(role), types)
    await bus.start()
    relay = OutboxRelay(store, bus, sweep_interval=0.02)
    await relay.start()
    try:
        before = event(0)
        await relay.emit([before])
        await until(lambda: rec.handled["incidents"] == [before.id], "the first event")

        await server.stop()
        story = [
            event(1, ev.PROJECT_STATUS_CHANGED),
            event(2, ev.INCIDENT_OPENED),
            event(3, ev.PROJECT_STATUS_CHANGED),
            event(4, ev.INCIDENT_RESOLVED),
        ]
        for e in story:
            await relay.emit([e])
        await until(lambda: bus.publish_failures >= 5, "repeated failed publishes")
        assert len(await store.unpublished_events()) == len(story)  # kept, not lost

        await server.start()  # back, and empty
        everything = [before, *story]
        ids = [e.id for e in everything]
        opened_resolved = [e.id for e in everything if e.type in notify_types]
        await until(
            lambda: rec.once_each("incidents", ids) and rec.once_each("notify", opened_resolved),
            "every event once per role",
        )
        await asyncio.wait_for(bus.drain(), 20)
    finally:
        await relay.stop()

    # Store, outbox and consumers agree.
    assert (await store.count_rows())["events"] == len(everything)
    assert await store.unpublished_events() == []
    assert relay.published == len(everything)
    for role, types in roles.items():
        assert await store.unclaimed_events(role, EPOCH, types=types) == []
    assert rec.once_each("incidents", ids) and rec.once_each("notify", opened_resolved)


async def test_reconciler_republishes_what_an_empty_restart_lost(
    server: RedisServer, store: SQLiteStore, buses: list[RedisStreamsBus]
) -> None:
    rec = Recorder()
    roles = {"incidents": None, "notify": [ev.INCIDENT_OPENED]}
    first = fast_bus(buses, server.url, store)
    for role, types in roles.items():
        first.subscribe(role, rec.handler(role), types)
    await first.start()
    publisher = fast_bus(buses, server.url, store)
    await publisher.start()
    relay = OutboxRelay(store, publisher)

    early = [event(i, ev.INCIDENT_OPENED) for i in range(5)]
    await relay.emit(early)
    await relay.flush()
    await asyncio.wait_for(first.drain(), 20)
    await first.stop()  # consumers away: what follows stays in the stream unread

    late = [event(i, ev.INCIDENT_OPENED if i % 2 else ev.METRIC_ANOMALY) for i in range(5, 25)]
    await relay.emit(late)
    assert await relay.flush() == len(late)
    assert await store.unpublished_events() == []  # published, as far as the store knows
    await server.restart()  # ...and lost

    second = fast_bus(buses, server.url, store)
    for role, types in roles.items():
        second.subscribe(role, rec.handler(role), types)
    await second.start()
    assert await second.reconcile(EPOCH) == len(late)  # not the early ones: claimed
    await asyncio.wait_for(second.drain(), 20)

    everything = [e.id for e in (*early, *late)]
    opened = [e.id for e in (*early, *late) if e.type == ev.INCIDENT_OPENED]
    assert rec.once_each("incidents", everything)
    assert rec.once_each("notify", opened)
    assert await second.reconcile(EPOCH) == 0  # nothing left to reconcile


async def test_lost_group_triggers_the_reconciler_by_itself(
    server: RedisServer, store: SQLiteStore, buses: list[RedisStreamsBus]
) -> None:
    gate = asyncio.Event()
    handled: list[str] = []

    async def gated(e: Event) -> None:
        await gate.wait()
        handled.append(e.id)

    bus = fast_bus(buses, server.url, store, read_count=1)  # one entry in hand at a time
    bus.subscribe("incidents", gated)
    await bus.start()
    relay = OutboxRelay(store, bus)
    sent = [event(i) for i in range(10)]
    await relay.emit(sent)
    await relay.flush()
    await until(lambda: bus.stats()["incidents"]["queued"] == 1, "the first entry in hand")

    await server.restart()  # nine entries were still in the stream: gone
    gate.set()
    await until(lambda: Counter(handled) == Counter(e.id for e in sent), "every event once")
    assert bus.republished >= 9


# -- store queries the bus relies on (SQLite; the PostgreSQL store must match) -----------


async def test_store_claimed_ids_and_unclaimed_events(store: SQLiteStore) -> None:
    a, b, c = event(1, ev.INCIDENT_OPENED), event(2), event(3, ev.INCIDENT_OPENED)
    await store.append_events([a, b, c])
    assert await store.unclaimed_events("r", EPOCH) == []  # unpublished: the relay's job
    await store.mark_published([a.id, b.id])
    cut = datetime.now(UTC)
    await store.mark_published([c.id])
    await store.claim_event("r", a.id)

    assert await store.claim_events("r", [b.id, a.id, b.id]) == {b.id}  # a: claimed before
    assert await store.claim_events("r", [b.id]) == set()
    assert await store.claim_events("r", []) == set()
    assert await store.claimed_ids("r", [a.id, b.id, c.id, a.id, "nope"]) == {a.id, b.id}
    assert await store.claimed_ids("r", []) == set()
    assert [e.id for e in await store.unclaimed_events("r", EPOCH)] == [c.id]
    assert [e.id for e in await store.unclaimed_events("other", EPOCH)] == [a.id, b.id, c.id]
    only_opened = await store.unclaimed_events("other", EPOCH, types=[ev.INCIDENT_OPENED])
    assert [e.id for e in only_opened] == [a.id, c.id]
    assert await store.unclaimed_events("other", EPOCH, types=[]) == []
    early = await store.unclaimed_events("other", EPOCH, published_before=cut)
    assert [e.id for e in early] == [a.id, b.id]
    assert await store.unclaimed_events("other", c.ts) == [c]  # since is inclusive
    assert [e.id for e in await store.unclaimed_events("other", EPOCH, limit=1)] == [a.id]


def test_backoff_doubles_to_the_cap_with_jitter_and_resets() -> None:
    high = Backoff(base=0.1, cap=1.0, rng=lambda: 1.0)
    assert [round(high.next_delay(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    low = Backoff(base=0.1, cap=1.0, rng=lambda: 0.0)  # jitter keeps at least half
    assert [round(low.next_delay(), 3) for _ in range(3)] == [0.05, 0.1, 0.2]
    low.failures = 10_000  # a very long outage must not overflow
    assert low.next_delay() == 0.5
    low.reset()
    assert round(low.next_delay(), 3) == 0.05


def test_stream_ids_compare_numerically() -> None:
    assert stream_id_key("10-0") > stream_id_key("9-5")
    assert stream_id_key("10-10") > stream_id_key("10-9")


# -- factory ---------------------------------------------------------------------------


async def test_make_bus_chooses_by_url(store: SQLiteStore) -> None:
    assert isinstance(make_bus(None, store), InProcessBus)
    assert isinstance(make_bus("", store), InProcessBus)
    bus = make_bus("redis://127.0.0.1:6379/0", store, stream="x")
    assert isinstance(bus, RedisStreamsBus)
    await bus.stop()  # never started: nothing to close, must not fail
    with pytest.raises(ValueError, match="'http'"):
        make_bus("http://user:secret@host/", store)
