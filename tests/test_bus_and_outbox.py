"""The in-process bus and the outbox relay: delivery, isolation, order, idempotency."""

from __future__ import annotations

import asyncio
import logging

import pytest

from agents.bus import InProcessBus
from agents.clock import FakeClock
from agents.events import INCIDENT_OPENED, PROJECT_STATUS_CHANGED, Event
from agents.outbox import OutboxRelay
from tests.support import Stack


def event(clock: FakeClock, n: int, type_: str = PROJECT_STATUS_CHANGED) -> Event:
    return Event(type=type_, ts=clock.now(), source="test", project=f"p{n}", payload={"n": n})


async def test_a_failing_subscriber_does_not_stop_the_others(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    bus = InProcessBus()
    good: list[int] = []

    async def broken(_event: Event) -> None:
        raise RuntimeError("boom")

    async def fine(e: Event) -> None:
        good.append(e.payload["n"])

    bus.subscribe("broken", broken)
    bus.subscribe("fine", fine)
    await bus.start()
    try:
        with caplog.at_level(logging.ERROR):
            for n in range(3):
                await bus.publish(event(clock, n))
            await bus.drain()
    finally:
        await bus.stop()
    assert good == [0, 1, 2]
    assert bus.stats()["broken"] == {"delivered": 0, "failures": 3, "queued": 0}
    assert bus.stats()["fine"]["delivered"] == 3
    assert sum("subscriber broken failed" in r.message for r in caplog.records) == 3


async def test_types_filter_and_duplicate_ids_are_delivered_once(clock: FakeClock) -> None:
    bus = InProcessBus()
    got: list[str] = []

    async def record(e: Event) -> None:
        got.append(e.type)

    bus.subscribe("incidents-only", record, types=[INCIDENT_OPENED])
    await bus.start()
    try:
        opened = event(clock, 1, INCIDENT_OPENED)
        await bus.publish(event(clock, 0))
        await bus.publish(opened)
        await bus.publish(opened)  # at-least-once delivery: a repeat must not act twice
        await bus.drain()
    finally:
        await bus.stop()
    assert got == [INCIDENT_OPENED]


async def test_a_slow_subscriber_delays_only_itself(clock: FakeClock) -> None:
    bus = InProcessBus()
    release = asyncio.Event()
    all_fast = asyncio.Event()
    fast: list[int] = []

    async def slow(_e: Event) -> None:
        await release.wait()

    async def quick(e: Event) -> None:
        fast.append(e.payload["n"])
        if len(fast) == 5:
            all_fast.set()

    bus.subscribe("slow", slow)
    bus.subscribe("quick", quick)
    await bus.start()
    try:
        for n in range(5):
            await bus.publish(event(clock, n))
        await asyncio.wait_for(all_fast.wait(), timeout=5)
        assert bus.stats()["slow"]["queued"] == 4  # one in the handler, four waiting
        release.set()
        await bus.drain()
    finally:
        await bus.stop()
    assert bus.stats()["slow"]["delivered"] == 5


async def test_relay_publishes_committed_events_in_order_once(stack: Stack) -> None:
    events = [event(stack.clock, n) for n in range(5)]
    await stack.relay.emit(events[:3])
    await stack.relay.emit(events[3:])
    await stack.settle()
    assert [e.payload["n"] for e in stack.seen] == [0, 1, 2, 3, 4]
    assert await stack.store.unpublished_events() == []
    assert await stack.relay.flush() == 0  # nothing is published twice


class FlakyBus(InProcessBus):
    """The bus is away for the first ``outage`` publishes (as Redis might be)."""

    def __init__(self, outage: int) -> None:
        super().__init__()
        self.outage = outage

    async def publish(self, event: Event) -> None:
        if self.outage > 0:
            self.outage -= 1
            raise ConnectionError("bus unreachable")
        await super().publish(event)


async def test_events_wait_in_the_outbox_while_the_bus_is_away(stack: Stack) -> None:
    bus = FlakyBus(outage=2)
    seen: list[int] = []

    async def record(e: Event) -> None:
        seen.append(e.payload["n"])

    bus.subscribe("test", record)
    await bus.start()
    relay = OutboxRelay(stack.store, bus, clock=stack.clock)
    try:
        await stack.store.append_events([event(stack.clock, n) for n in range(3)])
        for _ in range(2):  # the relay's attempts while the bus is away fail …
            with pytest.raises(ConnectionError):
                await relay.flush()
            # … and every row is still unpublished: nothing lost, nothing half-done.
            assert len(await stack.store.unpublished_events()) == 3
        assert await relay.flush() == 3  # the bus is back: all of them, in order
        await bus.drain()
        assert seen == [0, 1, 2]
        assert await stack.store.unpublished_events() == []
    finally:
        await bus.stop()
