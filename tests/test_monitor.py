"""The Project Monitor over real HTTP: scheduling with an injected clock, real probes.

The clock only drives the schedule; probes are real requests to local servers, so each
test waits on a condition (so many results arrived), never on a fixed sleep.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agents.clock import FakeClock
from agents.events import PROJECT_STATUS_CHANGED
from agents.health import HealthMonitor
from agents.monitor import ProjectMonitor, Slots
from agents.probe import ProbeClient
from agents.probe_result import ProbeResult
from bot.config import Project
from tests.support import Stack, make_project


class Service:
    """A contract service whose /health can be switched between ok, fail and hang."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.hanging = asyncio.Event()  # set when a request is stuck in the hang
        self.release = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_get("/health", self.health)
        self.app.router.add_get("/metrics", self.metrics)
        self.app.router.add_get("/status", self.status)

    async def metrics(self, _request: web.Request) -> web.Response:
        return web.json_response({"cpu_percent": 5})

    async def status(self, _request: web.Request) -> web.Response:
        return web.json_response({"state": "running"})

    async def health(self, _request: web.Request) -> web.Response:
        if self.mode == "hang":
            self.hanging.set()
            await self.release.wait()
        status = "fail" if self.mode == "fail" else "pass"
        return web.json_response(
            {"status": status},
            status=503 if status == "fail" else 200,
            content_type="application/health+json",
        )


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Service], asyncio.Future[str]]]:
    servers: list[TestServer] = []
    services: list[Service] = []

    async def start(service: Service) -> str:
        server = TestServer(service.app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        services.append(service)
        return str(server.make_url("")).rstrip("/")

    yield start  # type: ignore[misc]
    for service in services:
        service.release.set()
    for server in servers:
        await server.close()


class Results:
    def __init__(self) -> None:
        self.by_project: Counter[str] = Counter()
        self.items: list[ProbeResult] = []
        self.changed = asyncio.Condition()

    async def add(self, result: ProbeResult) -> None:
        async with self.changed:
            self.by_project[result.project] += 1
            self.items.append(result)
            self.changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(predicate), timeout=10)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def project(name: str, url: str, **settings: object) -> Project:
    return make_project(name, url, **{"interval": 5, "timeout": 4, **settings})


async def test_a_hanging_project_does_not_delay_the_others(
    clock: FakeClock, serve: Callable, session: aiohttp.ClientSession
) -> None:
    ok, stuck = Service(), Service()
    stuck.mode = "hang"
    ok_url, stuck_url = await serve(ok), await serve(stuck)
    results = Results()
    monitor = ProjectMonitor(
        ProbeClient(session, clock).probe, results.add, clock=clock, rng=random.Random(1)
    )
    monitor.set_projects(
        [project("alpha", ok_url), project("beta", ok_url), project("stuck", stuck_url)]
    )
    try:
        for cycle in range(1, 4):
            await clock.advance(5)
            await results.wait_for(
                lambda c=cycle: results.by_project["alpha"] >= c and results.by_project["beta"] >= c
            )
        # Three full cycles of the healthy projects came through while the hanging
        # project's first probe is still waiting for its answer.
        assert stuck.hanging.is_set()
        assert results.by_project["stuck"] == 0
        assert results.by_project["alpha"] == results.by_project["beta"] == 3
    finally:
        await monitor.stop()


async def test_a_crash_is_confirmed_by_rechecks_one_second_apart(
    clock: FakeClock, serve: Callable, session: aiohttp.ClientSession, stack: Stack
) -> None:
    service = Service()
    url = await serve(service)
    blast = project("email-blast", url, interval=10, timeout=2)
    health = HealthMonitor(stack.relay, clock)
    results = Results()

    async def on_result(result: ProbeResult) -> None:
        await health.observe(result, blast)
        await results.add(result)

    monitor = ProjectMonitor(
        ProbeClient(session, clock).probe,
        on_result,
        needs_recheck=health.needs_recheck,
        clock=clock,
        rng=random.Random(2),
    )
    monitor.set_projects([blast])
    try:
        await clock.advance(10)  # the first probe falls somewhere in the first interval
        await results.wait_for(lambda: len(results.items) == 1)
        service.mode = "fail"
        await clock.advance(10)
        await results.wait_for(lambda: len(results.items) == 2)
        first_failure = results.items[-1].ts
        for expected in (3, 4):
            await clock.advance(1)
            await results.wait_for(lambda n=expected: len(results.items) == n)
        await stack.settle()
        downs = [e for e in stack.of_type(PROJECT_STATUS_CHANGED) if e.payload["to"] == "down"]
        assert len(downs) == 1
        assert (results.items[-1].ts - first_failure).total_seconds() == 2.0
        # Once down, the schedule goes back to the normal interval: nothing in 9 s more.
        await clock.advance(9)
        assert len(results.items) == 4
        assert health.needs_recheck("email-blast") is False
    finally:
        await monitor.stop()


async def test_projects_taken_over_are_probed_within_first_within(
    clock: FakeClock, serve: Callable, session: aiohttp.ClientSession
) -> None:
    """A replica taking over projects probes them within seconds, not a whole interval."""
    url = await serve(Service())
    results = Results()
    monitor = ProjectMonitor(
        ProbeClient(session, clock).probe, results.add, clock=clock, rng=random.Random(4)
    )
    monitor.set_projects([project(f"p{i}", url, interval=10) for i in range(20)], first_within=2)
    try:
        await clock.advance(2)
        await results.wait_for(lambda: len(results.items) == 20)
        assert sorted(results.by_project.values()) == [1] * 20
        # Then the normal schedule: the next probe of each one interval after its first.
        await clock.advance(7.9)
        assert len(monitor.lateness.snapshot()) == 20  # no second probe has begun
        await clock.advance(2.1)
        await results.wait_for(lambda: len(results.items) == 40)
    finally:
        await monitor.stop()


async def test_a_large_fleet_is_spread_over_the_first_interval(
    clock: FakeClock, serve: Callable, session: aiohttp.ClientSession
) -> None:
    url = await serve(Service())
    results = Results()
    monitor = ProjectMonitor(
        ProbeClient(session, clock).probe, results.add, clock=clock, rng=random.Random(3)
    )
    monitor.set_projects([project(f"p{i}", url, interval=10) for i in range(60)])
    per_second = []
    try:
        for _ in range(10):
            await clock.advance(1)
            started = len(monitor.lateness.snapshot())  # probes begun so far
            await results.wait_for(lambda d=started: len(results.items) >= d)
            per_second.append(len(results.items))
        # Every project was probed exactly once in the first interval, and no second of
        # it took more than a third of the fleet.
        assert per_second[-1] == 60
        assert sorted(results.by_project.values()) == [1] * 60
        steps = [b - a for a, b in zip([0, *per_second], per_second, strict=False)]
        assert max(steps) <= 20
        # Fixed rate: the next cycle brings each exactly one more probe.
        await clock.advance(10)
        await results.wait_for(lambda: len(results.items) == 120)
        assert set(results.by_project.values()) == {2}
    finally:
        await monitor.stop()


async def _settle() -> None:
    """Let every ready task run (a few loop turns; nothing here waits on I/O)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_slots_bound_probes_in_flight_and_hand_over_in_order() -> None:
    slots = Slots(2)
    order: list[str] = []

    async def probe(name: str, done: asyncio.Event) -> None:
        await slots.acquire()
        order.append(name)
        try:
            await done.wait()
        finally:
            slots.release()

    gates = {name: asyncio.Event() for name in "abcd"}
    tasks = [asyncio.create_task(probe(name, gate)) for name, gate in gates.items()]
    await _settle()
    assert order == ["a", "b"]  # two slots, two in flight; c and d wait
    gates["b"].set()
    await _settle()
    assert order == ["a", "b", "c"]  # b's slot went to the oldest waiter
    gates["a"].set()
    gates["c"].set()
    gates["d"].set()
    await asyncio.gather(*tasks)
    assert order == ["a", "b", "c", "d"]
    # Every slot came back: two more fit at once.
    await slots.acquire()
    await slots.acquire()
    assert not slots._waiters


async def test_a_cancelled_waiter_neither_keeps_nor_loses_a_slot() -> None:
    slots = Slots(1)
    await slots.acquire()
    waiting = asyncio.create_task(slots.acquire())
    handed = asyncio.create_task(slots.acquire())
    await _settle()
    waiting.cancel()  # cancelled while queued: it leaves the queue
    await asyncio.gather(waiting, return_exceptions=True)
    slots.release()  # goes to the next live waiter
    await _settle()
    assert handed.done() and not handed.cancelled()
    # A waiter handed the slot and cancelled before it ran passes the slot on.
    late = asyncio.create_task(slots.acquire())
    await _settle()
    slots.release()  # handed to `late` ...
    late.cancel()  # ... which is cancelled before it runs
    await asyncio.gather(late, return_exceptions=True)
    after = asyncio.create_task(slots.acquire())
    await _settle()
    assert after.done() and not after.cancelled()  # the slot was not lost
    assert slots._free == 0 and not slots._waiters
