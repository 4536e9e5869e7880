"""Leases, heartbeats and once-only jobs (``storage.coordination``) on both stores, and the
``LeaseKeeper`` that shares a fleet between replicas (``agents.coordination``).

A "replica" here is another store instance on the same database (the same SQLite file, or
the same PostgreSQL schema through its own pool).  Expiry is real database time, so
tests use TTLs of a fraction of a second and wait on the database's state with bounded
polls, never on a fixed sleep.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agents.coordination import LeaseKeeper, day_key, fair_share, hour_key
from agents.events import PROJECT_STATUS_CHANGED, Event
from storage.base import Store
from tests.support import eventually
from tests.test_store_contract import BACKENDS

pytestmark = pytest.mark.timeout(30)

OpenReplica = Callable[[], Awaitable[Store]]
NAMES = [f"p{i:03d}" for i in range(100)]


@pytest.fixture(params=sorted(BACKENDS))
async def open_replica(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[OpenReplica]:
    """Open another store on this test's database; all are closed at teardown."""
    opened: list[Store] = []
    async with BACKENDS[request.param](tmp_path) as make:

        async def _open() -> Store:
            store = make()
            await store.open()
            opened.append(store)
            return store

        try:
            yield _open
        finally:
            for store in reversed(opened):
                await store.close()


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> float:
    """Poll the database (the state lives there); the seconds it took."""
    return await eventually(check, "the database state", timeout, every=0.02)


# -- the store -----------------------------------------------------------------------


async def test_db_now_is_aware_utc(open_replica: OpenReplica) -> None:
    store = await open_replica()
    now = await store.db_now()
    assert now.tzinfo is UTC
    assert abs(now - datetime.now(UTC)) < timedelta(seconds=5)


async def test_acquire_is_exclusive_under_concurrency(open_replica: OpenReplica) -> None:
    stores = [await open_replica() for _ in range(3)]
    results = await asyncio.gather(
        *(stores[i % 3].acquire_leases(f"r{i}", NAMES, 30, 100) for i in range(10))
    )
    taken = [name for got in results for name in got]
    assert sorted(taken) == NAMES  # every name exactly once
    owners = await stores[0].lease_owners()
    assert owners == {name: f"r{i}" for i, got in enumerate(results) for name in got}
    assert {lease.fence for lease in await stores[1].leases(NAMES)} == {1}
    for i, got in enumerate(results):
        assert await stores[2].held_leases(f"r{i}") == got


async def test_acquire_takes_at_most_max_new_and_skips_held(open_replica: OpenReplica) -> None:
    store = await open_replica()
    assert await store.acquire_leases("a", NAMES, 30, 10) == NAMES[:10]
    assert await store.acquire_leases("a", NAMES[:10], 30, 10) == []  # already mine
    assert await store.acquire_leases("b", NAMES, 30, 0) == []
    assert await store.acquire_leases("b", NAMES, 30, 5) == NAMES[10:15]


async def test_expired_lease_is_taken_over_and_not_renewed_by_its_old_owner(
    open_replica: OpenReplica,
) -> None:
    a, b = await open_replica(), await open_replica()
    assert await a.acquire_leases("a", ["x", "y"], 0.3, 10) == ["x", "y"]
    assert await b.acquire_leases("b", ["x", "y"], 30, 10) == []  # not expired yet
    await wait_until(lambda: _no_owner(b))  # db time passed the expiry
    assert await b.acquire_leases("b", ["x"], 30, 10) == ["x"]
    # a renews what it still holds: nothing (x was taken, y expired untaken).
    assert await a.renew_leases("a", 30) == []
    assert await a.held_leases("a") == []
    assert await b.lease_owners() == {"x": "b"}
    x, y = await a.leases(["x", "y"])
    assert (x.owner, x.fence) == ("b", 2)
    assert x.expires_at is not None and x.expires_at > await a.db_now()
    assert (y.owner, y.fence) == ("a", 1)  # expired: shows its last holder
    assert await a.acquire_leases("a", ["x", "y"], 30, 10) == ["y"]
    assert (await a.leases(["y"]))[0].fence == 2


async def _no_owner(store: Store) -> bool:
    return await store.lease_owners() == {}


async def test_renew_extends_the_holders_leases(open_replica: OpenReplica) -> None:
    store = await open_replica()
    await store.acquire_leases("a", ["x", "y"], 1, 10)
    before = {lease.name: lease.expires_at for lease in await store.leases(["x", "y"])}
    assert await store.renew_leases("a", 60) == ["x", "y"]
    after = await store.leases(["x", "y"])
    for lease in after:
        old = before[lease.name]
        assert lease.expires_at is not None and old is not None
        assert lease.expires_at - old > timedelta(seconds=50)
        assert lease.fence == 1  # a renewal is not a new holding
    assert await store.renew_leases("b", 60) == []


async def test_release(open_replica: OpenReplica) -> None:
    a, b = await open_replica(), await open_replica()
    await a.acquire_leases("a", NAMES[:5], 30, 10)
    await b.release_leases("b", NAMES[:5])  # not b's: nothing happens
    await a.release_leases("a", NAMES[:2])
    assert await a.held_leases("a") == NAMES[2:5]
    assert await b.acquire_leases("b", NAMES[:5], 30, 10) == NAMES[:2]
    await a.release_leases("a", [])
    await a.release_leases("a")
    assert await a.held_leases("a") == []
    assert await b.lease_owners() == dict.fromkeys(NAMES[:2], "b")


async def test_heartbeat_counts_live_replicas(open_replica: OpenReplica) -> None:
    stores = [await open_replica() for _ in range(3)]
    assert await stores[0].replica_heartbeat("r0", 30) == 1
    assert await stores[1].replica_heartbeat("r1", 30) == 2
    assert await stores[2].replica_heartbeat("r2", 0.2) == 3
    assert await stores[0].replica_heartbeat("r0", 30) == 3  # a beat is not a new replica

    async def two_live() -> bool:
        return await stores[0].replica_heartbeat("r0", 30) == 2

    await wait_until(two_live)  # r2 stopped beating: it expires
    await stores[1].acquire_leases("r1", ["x"], 30, 1)
    await stores[1].retire_replica("r1")
    assert await stores[0].replica_heartbeat("r0", 30) == 1
    assert await stores[0].lease_owners() == {}  # retiring released r1's lease


async def test_heartbeat_counts_only_the_replicas_of_its_pool(open_replica: OpenReplica) -> None:
    # One process per orchestrator group on one database: each group shares its projects
    # among its own processes, so a group's fair share must not count the other group's.
    stores = [await open_replica() for _ in range(3)]
    assert await stores[0].replica_heartbeat("outreach/a", 30, "outreach/") == 1
    assert await stores[1].replica_heartbeat("support/b", 30, "support/") == 1
    assert await stores[2].replica_heartbeat("outreach/c", 30, "outreach/") == 2
    assert await stores[1].replica_heartbeat("support/b", 30, "support/") == 1
    assert await stores[0].replica_heartbeat("outreach/a", 30) == 3  # no pool: everyone


async def test_claim_job_run_exactly_once_across_replicas(open_replica: OpenReplica) -> None:
    stores = [await open_replica() for _ in range(3)]
    at = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
    keys = [("retention", hour_key(at)), ("digest:outreach", day_key(at))]
    assert keys == [("retention", "2026-11-24T09"), ("digest:outreach", "2026-11-24")]
    wins = await asyncio.gather(
        *(stores[i % 3].claim_job_run(job, key, f"r{i}") for i in range(9) for job, key in keys)
    )
    assert sum(wins) == 2
    assert not await stores[0].claim_job_run("retention", "2026-11-24T09", "r0")
    assert await stores[0].claim_job_run("retention", "2026-11-24T10", "r0")


async def test_announced_statuses(open_replica: OpenReplica) -> None:
    store = await open_replica()
    t0 = datetime(2026, 3, 1, tzinfo=UTC)

    def status(project: str, to: str, seconds: float) -> Event:
        payload = {"from": "x", "to": to, "reason": "", "probe": {"latency_ms": math.nan}}
        return Event(PROJECT_STATUS_CHANGED, t0 + timedelta(seconds=seconds), "t", payload, project)

    await store.append_events(
        [status("a", "healthy", 1), status("a", "down", 2), status("b", "degraded", 1)]
    )
    await store.append_events([Event("metric.anomaly", t0 + timedelta(seconds=9), "t", {}, "a")])
    assert await store.announced_statuses(["a", "b", "c"]) == {"a": "down", "b": "degraded"}
    assert await store.announced_statuses([]) == {}


# -- the keeper ----------------------------------------------------------------------

FLEET = [f"project-{i:03d}" for i in range(300)]
TTL = 1.0


async def keepers_on(open_replica: OpenReplica, n: int, names: list[str]) -> list[LeaseKeeper]:
    return [
        LeaseKeeper(await open_replica(), f"k{i}", names=names, ttl_s=TTL, prefix="project:")
        for i in range(n)
    ]


async def stop_all(keepers: list[LeaseKeeper]) -> None:
    for keeper in keepers:
        await keeper.halt()


def fair(keepers: list[LeaseKeeper], names: list[str], tolerance: float) -> bool:
    share = len(names) / len(keepers)
    held = [k.held for k in keepers]
    disjoint = sum(map(len, held)) == len(frozenset().union(*held))
    covered = frozenset().union(*held) == frozenset(names)
    return disjoint and covered and all(abs(len(h) - share) <= share * tolerance for h in held)


async def test_fair_share(open_replica: OpenReplica) -> None:
    keepers = await keepers_on(open_replica, 3, FLEET)
    try:
        for keeper in keepers:  # one after another, as replicas of a rolling deploy start
            await keeper.start()
        assert keepers[0].held == frozenset(FLEET)  # the first alone takes everything

        async def balanced() -> bool:
            return fair(keepers, FLEET, 0.10)

        await wait_until(balanced)
        owners = await (await open_replica()).lease_owners()
        for keeper in keepers:
            mine = {n.removeprefix("project:") for n, o in owners.items() if o == keeper.replica_id}
            assert mine == keeper.held  # what the keeper works on is what the store says
    finally:
        await stop_all(keepers)


async def test_a_dead_keepers_names_are_taken_over_within_two_lease_periods(
    open_replica: OpenReplica,
) -> None:
    keepers = await keepers_on(open_replica, 3, FLEET)
    try:
        for keeper in keepers:
            await keeper.start()

        async def balanced() -> bool:
            return fair(keepers, FLEET, 0.10)

        await wait_until(balanced)
        dead, survivors = keepers[1], [keepers[0], keepers[2]]
        orphans = dead.held
        await dead.abandon()  # stops beating without releasing: a crash

        async def taken_over() -> bool:
            return fair(survivors, FLEET, 0.10)

        took = await wait_until(taken_over)
        assert took < 2 * TTL
        assert orphans <= survivors[0].held | survivors[1].held
    finally:
        await stop_all(keepers)


async def test_retire_hands_back_at_once(open_replica: OpenReplica) -> None:
    keepers = await keepers_on(open_replica, 2, FLEET)
    try:
        for keeper in keepers:
            await keeper.start()

        async def balanced() -> bool:
            return fair(keepers, FLEET, 0.10)

        await wait_until(balanced)
        await keepers[1].retire()
        assert keepers[1].held == frozenset()
        # Released and no longer counted: the survivor's next beat takes everything.
        took = await wait_until(lambda: _holds_all(keepers[0]))
        assert took < TTL
    finally:
        await stop_all(keepers)


async def _holds_all(keeper: LeaseKeeper) -> bool:
    return keeper.held == frozenset(FLEET)


async def test_work_stops_before_a_lease_is_handed_back(open_replica: OpenReplica) -> None:
    store = await open_replica()
    names = [f"n{i}" for i in range(40)]
    seen: list[tuple[frozenset[str], dict[str, str]]] = []

    async def on_change(held: frozenset[str]) -> None:
        seen.append((held, await store.lease_owners()))

    first = LeaseKeeper(store, "first", names=names, ttl_s=30, on_change=on_change)
    second = LeaseKeeper(await open_replica(), "second", names=names, ttl_s=30)
    await first.beat()
    assert seen[-1][0] == frozenset(names)
    await second.beat()  # joins: everything is held, it takes nothing yet
    assert second.held == frozenset() and second.live == 2
    await first.beat()  # over its share by far: hands back half
    held, owners_meanwhile = seen[-1]
    assert len(held) == fair_share(40, 2) == 20
    # When the work stopped, the handed-back leases were still first's.
    assert all(owners_meanwhile[n] == "first" for n in names)
    await second.beat()
    assert second.held == frozenset(names) - first.held
    assert await store.lease_owners() == {
        **dict.fromkeys(first.held, "first"),
        **dict.fromkeys(second.held, "second"),
    }


async def test_keeper_hands_back_names_that_left_the_fleet(open_replica: OpenReplica) -> None:
    store = await open_replica()
    keeper = LeaseKeeper(store, "k", names=["a", "b", "c"], ttl_s=30, prefix="p:")
    assert await keeper.beat() == {"a", "b", "c"}
    keeper.set_names(["a", "d"])
    assert await keeper.beat() == {"a", "d"}
    assert await store.lease_owners() == {"p:a": "k", "p:d": "k"}


async def test_once_runs_a_job_on_one_replica(open_replica: OpenReplica) -> None:
    keepers = [LeaseKeeper(await open_replica(), f"k{i}", ttl_s=30) for i in range(3)]
    assert sorted(await asyncio.gather(*(k.once_per("retention") for k in keepers))) == [
        False,
        False,
        True,
    ]
    assert sum(await asyncio.gather(*(k.once_per("digest", "day") for k in keepers))) == 1
    assert await keepers[0].once("digest:outreach", "2026-11-24")
    assert not await keepers[1].once("digest:outreach", "2026-11-24")
    with pytest.raises(ValueError, match="period"):
        await keepers[0].once_per("retention", "week")


async def test_the_last_announcement_is_the_last_written_whatever_its_clock(
    open_replica: OpenReplica,
) -> None:
    # A replica running 6 minutes fast announced "down"; the correct replica that took
    # the project over announced "healthy" after it, stamped 5 minutes earlier.  The later
    # write is the announcement in force (issue 10: clock skew).
    store = await open_replica()
    t0 = datetime(2026, 3, 1, tzinfo=UTC)

    def status(to: str, at: datetime) -> Event:
        payload = {"from": "x", "to": to, "reason": "", "probe": {"latency_ms": math.nan}}
        return Event(PROJECT_STATUS_CHANGED, at, "t", payload, "a")

    await store.append_events([status("down", t0 + timedelta(minutes=6))])
    await store.append_events([status("healthy", t0 + timedelta(minutes=1))])
    assert await store.announced_statuses(["a"]) == {"a": "healthy"}
