"""Group commit of the event outbox (agents.write_buffer.BufferedRelay.emit).

At start-up every project announces its first status at once.  Written one transaction
per emit, 5,000 of them queued longer than the write timeout on SQLite and orch logged a
false "database unreachable" (seen in the 5,000-project bench).  Emits that arrive while
a write is in flight now go together into the next transaction.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from agents.bus import InProcessBus
from agents.clock import FakeClock
from agents.events import PROJECT_FLAPPING, PROJECT_STATUS_CHANGED, Event
from agents.write_buffer import BufferedRelay
from storage.sqlite import SQLiteStore


def announcement(clock: FakeClock, n: int) -> list[Event]:
    """What the HealthMonitor emits at once for one project: a status change, and here a
    flapping edge too, so an emit holds more than one event."""
    project = f"p{n:05d}"
    return [
        Event(PROJECT_STATUS_CHANGED, clock.now(), "test", {"to": "healthy"}, project=project),
        Event(PROJECT_FLAPPING, clock.now(), "test", {"started": False}, project=project),
    ]


async def test_five_thousand_first_statuses_are_stored_in_order_without_an_outage(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = SQLiteStore(tmp_path / "orch.db", clock=clock)  # on disk, as `make demo` runs
    await store.open()
    relay = BufferedRelay(store, InProcessBus(), clock=clock)
    emits = [announcement(clock, n) for n in range(5000)]
    try:
        with caplog.at_level(logging.WARNING, logger="agents.write_buffer"):
            await asyncio.gather(*(relay.emit(events) for events in emits))
        stored = await store.unpublished_events(20_000)
    finally:
        await relay.stop()
        await store.close()
    # Everything stored, nothing held, no outage: the warning users saw is gone.
    assert [e.id for e in stored] == [e.id for events in emits for e in events]
    assert relay.held == 0 and relay.held_total == 0
    assert relay.outage.outages == 0 and not relay.outage.down
    assert not [r for r in caplog.records if "unreachable" in r.getMessage()]


async def test_a_refused_row_fails_only_its_own_emit(clock: FakeClock) -> None:
    store = SQLiteStore(":memory:", clock=clock)
    await store.open()
    relay = BufferedRelay(store, InProcessBus(), clock=clock)
    good = [announcement(clock, n) for n in range(3)]
    # A payload the store cannot encode: the database "refuses" it (not an outage).
    bad = [Event(PROJECT_STATUS_CHANGED, clock.now(), "test", {"x": {1, 2}}, project="bad")]
    try:
        outcomes = await asyncio.gather(
            relay.emit(good[0]), relay.emit(bad), relay.emit(good[1]), relay.emit(good[2]),
            return_exceptions=True,
        )  # fmt: skip
        stored = await store.unpublished_events(100)
    finally:
        await relay.stop()
        await store.close()
    assert outcomes[0] is None and outcomes[2] is None and outcomes[3] is None
    assert isinstance(outcomes[1], TypeError)  # the emitter of the bad row is told
    assert [e.id for e in stored] == [e.id for events in good for e in events]
    assert relay.held == 0 and not relay.outage.down


async def test_an_emitter_cancelled_while_waiting_still_has_its_events_written(
    clock: FakeClock,
) -> None:
    store = SQLiteStore(":memory:", clock=clock)
    await store.open()
    relay = BufferedRelay(store, InProcessBus(), clock=clock)
    events = announcement(clock, 1)
    try:
        emit = asyncio.create_task(relay.emit(events))
        await asyncio.sleep(0)  # queued for the group commit
        emit.cancel()
        await asyncio.gather(emit, return_exceptions=True)
        await relay.emit(announcement(clock, 2))  # written after the first group
        stored = await store.unpublished_events(100)
    finally:
        await relay.stop()
        await store.close()
    assert emit.cancelled()
    assert [e.project for e in stored] == ["p00001", "p00001", "p00002", "p00002"]
