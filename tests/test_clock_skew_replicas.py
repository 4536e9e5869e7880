"""Two replicas whose clocks disagree by 12 minutes share one budget (issue 10, point 10).

Replica "behind" runs 6 minutes slow, replica "ahead" 6 minutes fast; both work on the same
real PostgreSQL database.  If either judged a window, an expiry or a lease by its own
clock, the slow one would see attempts as more recent than they are and the fast one
would see them as older, so the restart budget would be stretched or cut, a suspension
would end early on one and late on the other, and a lease would be stolen or overheld.
These tests hold each decision to the database's ``now()``: both replicas give the same
answers at the same moment.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from agents.clock import FakeClock
from agents.events import REMEDIATION_SUSPENDED, Event
from storage.budget_store import Suspension
from storage.postgres import PostgresStore

pytestmark = [pytest.mark.postgres]

SKEW = timedelta(minutes=6)
HOUR = 3600.0


@pytest.fixture
async def replicas(
    pg_schema: tuple[str, str],
) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    url, _schema = pg_schema
    behind = PostgresStore(url, clock=FakeClock(datetime.now(UTC) - SKEW))
    ahead = PostgresStore(url, clock=FakeClock(datetime.now(UTC) + SKEW))
    await behind.open()
    await ahead.open()
    try:
        yield behind, ahead
    finally:
        await ahead.close()
        await behind.close()


def _suspended(row: Suspension) -> Event:
    return Event(REMEDIATION_SUSPENDED, row.since, "autofixer", {"reason": row.reason}, row.project)


async def test_the_restart_budget_is_the_same_on_both_replicas(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    behind, ahead = replicas
    # Three restarts in the hour are allowed: the slow replica spends two, the fast one
    # the third, and then neither may take a fourth.
    assert await behind.try_take_budget("shop", "restart", 3, HOUR, "auto")
    assert await behind.try_take_budget("shop", "restart", 3, HOUR, "auto")
    assert await ahead.try_take_budget("shop", "restart", 3, HOUR, "auto")
    assert not await ahead.try_take_budget("shop", "restart", 3, HOUR, "auto")
    assert not await behind.try_take_budget("shop", "restart", 3, HOUR, "auto")
    # Both count the same three attempts in any window longer than their age, and none
    # in a window shorter than the skew: the fast replica does not see them as 6 minutes
    # old, nor the slow one as from the future.
    for replica in (behind, ahead):
        assert await replica.count_attempts("shop", "restart", HOUR) == 3
        assert await replica.count_attempts("shop", "restart", 300) == 3
    # Every attempt is stamped with the database's time, not either replica's.
    db_now = await behind.db_now()
    attempts = await behind._fetch("SELECT at FROM remediation_attempts ORDER BY at")
    assert len(attempts) == 3
    for row in attempts:
        assert abs((db_now - row["at"]).total_seconds()) < 60


async def test_a_suspension_ends_at_the_same_moment_for_both(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    behind, ahead = replicas
    suspension = await ahead.suspend_remediation(
        "shop", "restart budget spent", "autofixer", _suspended, for_s=600
    )
    # The fast replica does not stamp it 6 minutes into the future, nor end it early on
    # the slow one: both see it in force, with a 10-minute span in database time.
    assert suspension.until is not None
    assert suspension.until - suspension.since == timedelta(seconds=600)
    db_now = await behind.db_now()
    assert abs((suspension.since - db_now).total_seconds()) < 60
    assert await behind.remediation_suspended("shop") is not None
    assert await ahead.remediation_suspended("shop") is not None


async def test_a_lease_is_neither_stolen_nor_overheld(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    behind, ahead = replicas
    assert await behind.acquire_leases("r-behind", ["shop"], 30, 10) == ["shop"]
    # The fast replica's clock is 12 minutes past the lease's 30 s: if it judged expiry
    # by its own clock it would take the lease now.
    assert await ahead.acquire_leases("r-ahead", ["shop"], 30, 10) == []
    assert await ahead.lease_owners() == {"shop": "r-behind"}
    (lease,) = await ahead.leases(["shop"])
    db_now = await ahead.db_now()
    assert lease.expires_at is not None
    assert 0 < (lease.expires_at - db_now).total_seconds() <= 30
    # Renewal by the slow replica adds 30 s of database time, not 6 minutes more.
    assert await behind.renew_leases("r-behind", 30) == ["shop"]
    (renewed,) = await behind.leases(["shop"])
    assert renewed.expires_at is not None
    assert (renewed.expires_at - await behind.db_now()).total_seconds() <= 30
