"""A replica whose clock is off reports it on its own /health (issue 10: clock skew).

Leases, budgets and job claims are judged by the database's clock, so a host 6 minutes
off keeps working correctly; what must not happen is that nobody notices. orch's own
contract /health carries ``clock:skew`` (database minus host, seconds): pass within 5 s,
warn beyond, with a message saying which way and what to fix. Real PostgreSQL clock, the
host's clock injected.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from agents.clock import Clock, FakeClock, SystemClock
from bot.orch_contract import OrchContract, OrchControls
from storage.postgres import PostgresStore

pytestmark = [pytest.mark.postgres]


async def _nothing() -> None:
    return None


@pytest.fixture
async def store(pg_schema: tuple[str, str]) -> AsyncIterator[PostgresStore]:
    url, _schema = pg_schema
    opened = PostgresStore(url)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def health_of(store: PostgresStore, clock: Clock) -> tuple[int, dict[str, Any]]:
    controls = OrchControls(
        paused=lambda: False, pause=_nothing, resume=_nothing, restart=lambda: None,
        clear_cache=list, polled=list,
    )  # fmt: skip
    contract = OrchContract(
        store, {}, controls, clock=clock, replica_id="r1", orchestrator=None, secret=None
    )
    app = web.Application()
    contract.mount(app)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/health")
        return response.status, await response.json(content_type=None)


async def test_a_host_six_minutes_behind_the_database_warns(store: PostgresStore) -> None:
    behind = FakeClock(datetime.now(UTC) - timedelta(minutes=6))
    status, body = await health_of(store, behind)
    assert status == 200  # degraded, not down: it still works
    assert body["status"] == "warn"
    (check,) = body["checks"]["clock:skew"]
    assert check["status"] == "warn"
    assert check["observedUnit"] == "s"
    assert 355 <= check["observedValue"] <= 365
    assert "behind the database's" in check["output"]
    assert "time sync" in body["output"]


async def test_a_host_ahead_says_ahead(store: PostgresStore) -> None:
    ahead = FakeClock(datetime.now(UTC) + timedelta(minutes=6))
    _, body = await health_of(store, ahead)
    (check,) = body["checks"]["clock:skew"]
    assert check["status"] == "warn" and "ahead of the database's" in check["output"]
    assert -365 <= check["observedValue"] <= -355


async def test_a_synchronised_host_passes(store: PostgresStore) -> None:
    status, body = await health_of(store, SystemClock())
    assert (status, body["status"]) == (200, "pass")
    (check,) = body["checks"]["clock:skew"]
    assert check["status"] == "pass" and abs(check["observedValue"]) < 5
