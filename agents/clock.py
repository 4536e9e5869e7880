"""Time, injected.

Every agent asks a ``Clock`` for the time and for sleeps, so tests can drive days of
behaviour in milliseconds and never wait on a fixed sleep.  Wall time (``now``) is UTC and
timezone-aware (asyncpg reads naive datetimes as local time); ``monotonic`` is for
intervals and scheduling.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    # The monitor asks for the time several times per probe: ``monotonic`` is the C
    # function itself and ``sleep`` hands back asyncio's coroutine, not a wrapper's.
    monotonic = staticmethod(time.monotonic)

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> Coroutine[Any, Any, None]:
        return asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that moves only when a test calls ``advance``.

    Sleepers wake in deadline order as time passes them; ``advance`` yields to the loop
    after each wake-up so the woken tasks run before time moves on.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._wall0 = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._t = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> datetime:
        return self._wall0 + timedelta(seconds=self._t)

    def monotonic(self) -> float:
        return self._t

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._t + max(0.0, seconds), next(self._seq), fut))
        await fut

    @property
    def sleepers(self) -> int:
        return sum(1 for _, _, f in self._sleepers if not f.done())

    async def settle(self, rounds: int = 20) -> None:
        """Let every runnable task run until nothing new is scheduled."""
        for _ in range(rounds):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        target = self._t + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            when, _, fut = heapq.heappop(self._sleepers)
            self._t = max(self._t, when)
            if not fut.done():
                fut.set_result(None)
            await self.settle()
        self._t = target
        await self.settle()


async def sleep_or_wake(clock: Clock, seconds: float, wake: asyncio.Event) -> bool:
    """Sleep on ``clock`` for ``seconds`` unless ``wake`` is set first.

    Returns True when woken (and clears ``wake``), False when the time ran out.
    """
    if wake.is_set():
        wake.clear()
        return True
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    waiter = asyncio.ensure_future(wake.wait())
    try:
        await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleeper.cancel()
        waiter.cancel()
    woken = wake.is_set()
    wake.clear()
    return woken
