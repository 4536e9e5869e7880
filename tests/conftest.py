"""Shared test fixtures. Fixtures specific to one area live in that area's test module."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agents.bus import InProcessBus
from agents.clock import FakeClock
from agents.events import Event
from agents.outbox import OutboxRelay
from storage.sqlite import SQLiteStore
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
