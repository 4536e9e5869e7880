"""Helpers shared by several test modules (fixtures themselves live in conftest.py)."""

from __future__ import annotations

import asyncio
import inspect
import queue
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import IO, Any

from agents.bus import InProcessBus
from agents.clock import FakeClock
from agents.events import Event
from agents.outbox import OutboxRelay
from bot.config import Config, Project
from storage.sqlite import SQLiteStore


def make_project(
    name: str = "email-blast", url: str = "http://127.0.0.1:8101", **settings: Any
) -> Project:
    """A validated project with every default filled in, as agents see it."""
    return Config.model_validate({"projects": [{"name": name, "url": url, **settings}]}).project(
        name
    )


@dataclass
class Stack:
    """The real event path: SQLite store (the outbox), relay, in-process bus, and a
    subscriber that records every event delivered."""

    clock: FakeClock
    store: SQLiteStore
    bus: InProcessBus
    relay: OutboxRelay
    seen: list[Event] = field(default_factory=list)

    async def settle(self) -> list[Event]:
        """Publish everything committed and wait until every subscriber handled it, again
        until handlers have nothing more to publish."""
        while await self.relay.flush():
            await self.bus.drain()
        return self.seen

    def of_type(self, *types: str) -> list[Event]:
        return [e for e in self.seen if e.type in types]


class StreamLines:
    """Reads a process's output on a thread; ``wait_for`` blocks until a line contains
    every needle (lines seen earlier count too), so tests wait on output, not on time."""

    def __init__(self, stream: IO[str] | None) -> None:
        assert stream is not None
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line)

    def wait_for(self, *needles: str, timeout: float = 30) -> str:
        for line in self.seen:
            if all(n in line for n in needles):
                return line
        while True:
            line = self.lines.get(timeout=timeout)
            self.seen.append(line)
            if all(n in line for n in needles):
                return line


async def eventually(
    check: Callable[[], bool | Awaitable[bool]],
    what: str = "the condition",
    timeout: float = 20.0,
    every: float = 0.01,
) -> float:
    """Poll ``check`` (sync or async) until it is true; return the seconds it took.

    Only for state that lives outside this process (a database, Redis, another
    process), where there is no event to wait on.  Fails with ``what`` after ``timeout``.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return loop.time() - started
        if loop.time() - started > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(every)
