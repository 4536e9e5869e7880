"""Shared test fixtures. Fixtures specific to one area live in that area's test module."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import quote

import asyncpg
import pytest

from agents.bus import InProcessBus
from agents.clock import FakeClock
from agents.events import Event
from agents.outbox import OutboxRelay
from storage.sqlite import SQLiteStore
from tests import services
from tests.support import Stack


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def stack(clock: FakeClock) -> AsyncIterator[Stack]:
    store = SQLiteStore(":memory:", clock=clock)
    await store.open()
    bus = InProcessBus()
    s = Stack(clock, store, bus, OutboxRelay(store, bus, clock=clock))

    async def record(event: Event) -> None:
        s.seen.append(event)

    bus.subscribe("test", record)
    await bus.start()
    try:
        yield s
    finally:
        await bus.stop()
        await store.close()


@pytest.fixture(scope="session")
def database_url() -> str:
    """The PostgreSQL server for tests (skips, or fails under CI=true, when away)."""
    return services.database_url()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis server for tests (skips, or fails under CI=true, when away)."""
    return services.redis_url()


@pytest.fixture
async def pg_schema(database_url: str) -> AsyncIterator[tuple[str, str]]:
    """(a DATABASE_URL whose search_path is a fresh schema, as a user would write it; that
    schema's name), dropped afterwards: each test gets its own orch database."""
    schema = f"orch_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        sep = "&" if "?" in database_url else "?"
        yield f"{database_url}{sep}options={quote(f'-csearch_path={schema}')}", schema
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()
