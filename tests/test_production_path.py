"""The production shape end to end: the real Runtime on PostgreSQL and Redis Streams,
selected only by DATABASE_URL and REDIS_URL, watching simulated services."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from agents.events import INCIDENT_OPENED, PROJECT_STATUS_CHANGED, Event
from agents.redis_bus import RedisStreamsBus
from bot.config import Config
from bot.runtime import Runtime, RuntimeOptions
from bot.settings import Settings
from demo.fleet import Fleet
from storage.postgres import PostgresStore
from tests.redis_server import RedisServer

SECRETS = {name: f"secret-{name}".encode() for name in ("email-blast", "chatbot")}


@pytest.fixture
def pg_schema_url(pg_schema: tuple[str, str]) -> str:
    return pg_schema[0]


@pytest.fixture
async def redis() -> AsyncIterator[RedisServer]:
    """A private Redis, so consumer groups of other test runs cannot interfere."""
    async with RedisServer() as server:
        yield server


async def test_postgres_and_redis_carry_an_outage_end_to_end(
    pg_schema_url: str, redis: RedisServer
) -> None:
    fleet = Fleet.ephemeral(SECRETS, SECRETS)
    await fleet.start()
    config = Config.model_validate(
        {
            "defaults": {"interval": "1s", "timeout": "500ms"},
            "projects": [
                {"name": n, "url": fleet.url(n), "control_url": fleet.control_url(n)}
                for n in SECRETS
            ],
        }
    )
    settings = Settings(database_url=pg_schema_url, redis_url=redis.url, port=0)
    runtime = Runtime(settings, config, options=RuntimeOptions(lease_ttl_s=3))
    assert isinstance(runtime.bus, RedisStreamsBus)
    seen: list[Event] = []
    opened = asyncio.Event()

    async def watch(event: Event) -> None:
        seen.append(event)
        if event.type == INCIDENT_OPENED:
            opened.set()

    runtime.bus.subscribe("test-watcher", watch)
    try:
        await runtime.start()
        assert isinstance(runtime.store, PostgresStore)
        await fleet.inject("email-blast", "crash")
        await asyncio.wait_for(opened.wait(), timeout=20)
        incidents = await runtime.store.list_incidents(open_only=True)
        assert [i.fingerprint for i in incidents] == ["email-blast:down"]
        down = [e for e in seen if e.type == PROJECT_STATUS_CHANGED and e.payload["to"] == "down"]
        assert [e.project for e in down] == ["email-blast"]
        # Every event the watcher got came through Redis and is in PostgreSQL too.
        stored = {e.id for e in await runtime.store.list_events(limit=1000)}
        assert {e.id for e in seen} <= stored
        assert runtime.web is not None
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{runtime.web.url}/readyz") as response,
        ):
            body = await response.json(content_type=None)
        assert response.status == 200, body
        assert set(body["checks"]) == {"store", "bus"}
    finally:
        await runtime.stop()
        await fleet.stop()
