"""The Project Monitor: polls every project on its own interval.

Each project has its own task, so a slow or hanging project only ever delays itself; a
semaphore bounds how many probes run at once.  Schedules are fixed-rate (the next probe
is due one interval after the previous one was due, not after it finished) and start at a
random phase inside the first interval, so a thousand projects do not fire together.
After a failed probe the next one comes after ``recheck_interval`` instead (the
HealthMonitor says when), which confirms a crash in about two seconds.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Iterable

from agents.clock import Clock, SystemClock
from agents.probe_result import ProbeResult
from bot.config import Project

log = logging.getLogger(__name__)

ProbeFn = Callable[[Project], Awaitable[ProbeResult]]
ResultFn = Callable[[ProbeResult], Awaitable[None]]
RecheckFn = Callable[[str], bool]


class LatenessLog:
    """A bounded ring of schedule lateness samples (seconds), for metrics and benches."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._samples: list[float] = []
        self._capacity = capacity
        self._next = 0

    def add(self, seconds: float) -> None:
        if len(self._samples) < self._capacity:
            self._samples.append(seconds)
        else:
            self._samples[self._next] = seconds
            self._next = (self._next + 1) % self._capacity

    def snapshot(self) -> list[float]:
        return list(self._samples)

    def clear(self) -> None:
        self._samples.clear()
        self._next = 0


class Slots:
    """A bound on probes in flight: ``asyncio.Semaphore``'s job, for the hot path.

    A released slot is handed straight to the oldest waiter.  Python 3.11's semaphore
    instead scans its waiters on every release and makes each woken task check again;
    with a few hundred probes queued after a stall that was a tenth of the loop's CPU."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    def take(self) -> bool:
        """Take a free slot now if there is one (no coroutine: the common case)."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def acquire(self) -> None:
        if self.take():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as it was cancelled: pass it on
            elif waiter in self._waiters:  # (a release may have dropped it already)
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot goes to it, never back to the pool
                return
        self._free += 1


class ProjectMonitor:
    def __init__(
        self,
        probe: ProbeFn,
        on_result: ResultFn,
        *,
        needs_recheck: RecheckFn = lambda _name: False,
        clock: Clock | None = None,
        max_concurrency: int = 256,
        rng: random.Random | None = None,
    ) -> None:
        self._probe = probe
        self._on_result = on_result
        self._needs_recheck = needs_recheck
        self._clock = clock or SystemClock()
        self._slots = Slots(max_concurrency)
        self._rng = rng or random.Random()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._projects: dict[str, Project] = {}
        self.lateness = LatenessLog()
        self.probes_done = 0
        self.handler_failures = 0

    @property
    def projects(self) -> list[str]:
        return sorted(self._tasks)

    def set_projects(
        self, projects: Iterable[Project], *, first_within: float | None = None
    ) -> list[asyncio.Task[None]]:
        """Start polling new projects, stop removed ones, pick up changed settings.

        New projects are first probed at a random moment within their interval, or
        within ``first_within`` seconds when that is shorter: a replica taking over a
        dead one's projects probes them soon (they have gone unwatched for a lease
        period already), still spread so they do not all fire at once.

        Returns the polling tasks of removed projects, cancelled: a caller handing a
        project to another replica awaits them, so no probe of it is still in flight."""
        wanted = {p.name: p for p in projects}
        removed: list[asyncio.Task[None]] = []
        for name in list(self._tasks):
            if name not in wanted:
                task = self._tasks.pop(name)
                task.cancel()
                removed.append(task)
                self._projects.pop(name, None)
        for name, project in wanted.items():
            changed = self._projects.get(name) != project
            self._projects[name] = project
            if name not in self._tasks or changed:
                if name in self._tasks:
                    self._tasks.pop(name).cancel()
                assert project.interval is not None
                # The phase is fixed now, when the project is added, not when the task
                # first runs: a fleet added at once is spread over exactly one interval.
                window = project.interval
                if first_within is not None:
                    window = min(window, first_within)
                first_due = self._clock.monotonic() + self._rng.uniform(0, window)
                self._tasks[name] = asyncio.create_task(
                    self._poll_forever(name, first_due), name=f"poll:{name}"
                )
        return removed

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _poll_forever(self, name: str, due: float) -> None:
        while True:
            project = self._projects[name]
            assert project.interval is not None and project.recheck_interval is not None
            delay = due - self._clock.monotonic()
            if delay > 0:
                await self._clock.sleep(delay)
            if not self._slots.take():
                await self._slots.acquire()
            try:
                started = self._clock.monotonic()
                self.lateness.add(max(0.0, started - due))
                result = await self._probe(project)
            finally:
                self._slots.release()
            self.probes_done += 1
            try:
                await self._on_result(result)
            except Exception:  # one bad handler must not stop polling
                self.handler_failures += 1
                log.exception("handling a probe of %s failed", name)
            if self._needs_recheck(name):
                due = self._clock.monotonic() + project.recheck_interval
            else:
                due += project.interval
                # Fell far behind (a suspended laptop, an overloaded loop): skip missed
                # slots rather than firing a burst of catch-up probes.
                now = self._clock.monotonic()
                if due < now:
                    due = now
