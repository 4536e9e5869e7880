"""The event bus: one protocol, an in-process implementation (embedded default).

Delivery is at least once in general (the Redis implementation may redeliver), so every
subscription is idempotent on the event id.  One failing subscriber never stops the
others: its exception is logged and counted, and the next event is delivered.

Memory is bounded: a subscription's queue holds at most ``BUS_QUEUE_BOUND`` events.  When
one is full, ``publish`` waits for its worker to take one (back-pressure on the outbox
relay, the only publisher), so in an alert storm the backlog stays in the store, where
events are durable anyway, not in this process (tests/test_alert_storm.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Final, Protocol

from agents.events import Event

log = logging.getLogger(__name__)

BUS_QUEUE_BOUND: Final = 1000  # events waiting per subscription, at most

Handler = Callable[[Event], Awaitable[None]]


class EventBus(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, event: Event) -> None: ...

    def subscribe(self, role: str, handler: Handler, types: Iterable[str] | None = None) -> None:
        """Deliver events of ``types`` (all when None) to ``handler``, once per ``role``."""
        ...


class SeenIds:
    """A bounded memory of processed event ids, oldest forgotten first."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def add(self, event_id: str) -> bool:
        """Remember ``event_id``; False when it was already there."""
        if event_id in self._ids:
            return False
        self._ids[event_id] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
        return True


@dataclass
class _Subscription:
    role: str
    handler: Handler
    types: frozenset[str] | None
    queue: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    seen: SeenIds = field(default_factory=SeenIds)
    room: asyncio.Event = field(default_factory=asyncio.Event)  # set: the worker took one
    delivered: int = 0
    failures: int = 0
    task: asyncio.Task[None] | None = None

    def wants(self, event: Event) -> bool:
        return self.types is None or event.type in self.types


class InProcessBus:
    """Each subscription has its own queue and worker task, so a slow or failing handler
    delays only itself; events reach one subscription in publish order."""

    def __init__(self, *, queue_bound: int = BUS_QUEUE_BOUND) -> None:
        self._subs: list[_Subscription] = []
        self._running = False
        self._bound = queue_bound
        self.peak_queued = 0  # the most events one queue has held (telemetry, tests)

    def subscribe(self, role: str, handler: Handler, types: Iterable[str] | None = None) -> None:
        sub = _Subscription(role, handler, frozenset(types) if types is not None else None)
        self._subs.append(sub)
        if self._running:
            sub.task = asyncio.create_task(self._worker(sub), name=f"bus:{role}")

    async def start(self) -> None:
        self._running = True
        for sub in self._subs:
            if sub.task is None:
                sub.task = asyncio.create_task(self._worker(sub), name=f"bus:{sub.role}")

    async def stop(self) -> None:
        """Deliver what is queued, then stop the workers."""
        await self.drain()
        self._running = False
        for sub in self._subs:
            sub.room.set()  # a publisher waiting for room goes on (the queue is unbounded)
        tasks = [s.task for s in self._subs if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sub in self._subs:
            sub.task = None

    async def publish(self, event: Event) -> None:
        for sub in self._subs:
            if sub.wants(event):
                # Not started: nobody would make room; the queue waits for start().
                while self._running and sub.queue.qsize() >= self._bound:
                    sub.room.clear()
                    await sub.room.wait()
                sub.queue.put_nowait(event)
                self.peak_queued = max(self.peak_queued, sub.queue.qsize())

    async def drain(self) -> None:
        """Wait until every queued event has been handled (tests and shutdown)."""
        if not self._running:
            return
        await asyncio.gather(*(s.queue.join() for s in self._subs))

    def stats(self) -> dict[str, dict[str, int]]:
        return {
            s.role: {"delivered": s.delivered, "failures": s.failures, "queued": s.queue.qsize()}
            for s in self._subs
        }

    async def _worker(self, sub: _Subscription) -> None:
        while True:
            event = await sub.queue.get()
            sub.room.set()
            try:
                if sub.seen.add(event.id):
                    await sub.handler(event)
                    sub.delivered += 1
            except asyncio.CancelledError:
                raise
            except Exception:
                sub.failures += 1
                log.exception("subscriber %s failed on %s %s", sub.role, event.type, event.id)
            finally:
                sub.queue.task_done()
