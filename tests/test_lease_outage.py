"""Leases through a PostgreSQL outage (issue 10.1): a lone replica keeps watching its
fleet; one of several hands its projects to the replicas that can still reach the
database.  The outage is a TCP proxy cut in the test (tests/tcp_proxy.py), never the
shared server."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from agents.coordination import LeaseKeeper
from storage.postgres import PostgresStore
from tests.support import eventually
from tests.tcp_proxy import TcpProxy
from tests.test_postgres_outage import proxied_store  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]

NAMES = [f"p{i}" for i in range(6)]
TTL = 0.6


@pytest.fixture
async def direct_store(pg_schema: tuple[str, str]) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(pg_schema[0])
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_the_only_replica_keeps_watching_through_an_outage(
    proxied_store: tuple[PostgresStore, TcpProxy],  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, proxy = proxied_store
    caplog.set_level(logging.WARNING, logger="agents.coordination")
    keeper = LeaseKeeper(store, "alone", names=NAMES, ttl_s=TTL, prefix="project:")
    await keeper.start()
    try:
        assert keeper.held == frozenset(NAMES)
        await proxy.cut()

        def kept_alone() -> bool:
            return any("keeps watching its 6 projects" in r.getMessage() for r in caplog.records)

        # Logged only once its leases may have expired: it holds them past that point.
        await eventually(kept_alone, "the lone replica says it keeps watching", timeout=20)
        assert keeper.held == frozenset(NAMES)
        assert not any("dropping them" in r.getMessage() for r in caplog.records)
        beats = keeper.beats
        await proxy.restore()
        await eventually(lambda: keeper.beats > beats + 1, "beats again", timeout=20)
        assert keeper.held == frozenset(NAMES)
        owners = await store.lease_owners()
        assert owners == {f"project:{n}": "alone" for n in NAMES}
    finally:
        await keeper.halt()


async def test_one_of_two_replicas_hands_its_projects_over(
    proxied_store: tuple[PostgresStore, TcpProxy],  # noqa: F811
    direct_store: PostgresStore,
) -> None:
    cut_off_store, proxy = proxied_store
    cut_off = LeaseKeeper(cut_off_store, "cut-off", names=NAMES, ttl_s=TTL, prefix="project:")
    other = LeaseKeeper(direct_store, "other", names=NAMES, ttl_s=TTL, prefix="project:")
    await cut_off.start()
    await other.start()
    try:
        await eventually(lambda: len(other.held) == 3 and len(cut_off.held) == 3, "shared")
        await proxy.cut()
        # Someone else can take them over: the cut-off replica stops its work once its
        # leases may have expired, and the other one takes the whole fleet.
        await eventually(lambda: cut_off.held == frozenset(), "the cut-off one stops", 20)
        await eventually(lambda: other.held == frozenset(NAMES), "the other takes all", 20)
    finally:
        await proxy.restore()
        await cut_off.halt()
        await other.halt()
