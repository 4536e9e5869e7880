"""The transactional outbox relay.

Agents never publish directly: they write state and events to the store (in one
transaction where there is state), then ``wake`` the relay, which publishes committed
events in commit order and marks them published.  A periodic sweep republishes anything a
crash or a bus outage left behind, so the store, not the bus, decides what happened.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from agents.bus import EventBus
from agents.clock import Clock, SystemClock, sleep_or_wake
from agents.events import Event
from agents.lifecycle import cancel_and_wait
from storage.base import Store

log = logging.getLogger(__name__)


class OutboxRelay:
    def __init__(
        self,
        store: Store,
        bus: EventBus,
        *,
        clock: Clock | None = None,
        sweep_interval: float = 1.0,
        batch: int = 500,
    ) -> None:
        self._store = store
        self._bus = bus
        self._clock = clock or SystemClock()
        self._sweep_interval = sweep_interval
        self._batch = batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.published = 0

    async def emit(self, events: Sequence[Event]) -> None:
        """Store events that change no other state, then publish them."""
        if not events:
            return
        await self._store.append_events(events)
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    async def flush(self) -> int:
        """Publish everything committed and unpublished; return how many."""
        total = 0
        async with self._lock:
            while True:
                events = await self._store.unpublished_events(self._batch)
                if not events:
                    return total
                sent: list[str] = []
                try:
                    for event in events:
                        await self._bus.publish(event)
                        sent.append(event.id)
                finally:
                    # Redis went away mid-batch: the events already on the stream are
                    # marked too, or the next sweep would publish them a second time.
                    if sent:
                        await self._store.mark_published(sent)
                        total += len(sent)
                        self.published += len(sent)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self.flush()

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                await self.flush()
                if failing:
                    log.warning("outbox relay publishing again")
                failing = False
            except Exception as exc:  # the store or bus is away: keep the rows, retry later
                # One traceback per outage, not one per sweep.
                if not failing:
                    log.exception("outbox relay could not publish; retrying every %ss",
                                  self._sweep_interval)  # fmt: skip
                else:
                    log.debug("outbox relay still failing: %s", exc)
                failing = True
            await sleep_or_wake(self._clock, self._sweep_interval, self._wake)
