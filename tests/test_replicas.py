"""Three orch replicas on one PostgreSQL schema share a small fleet (issue: replicas).

Each replica is a whole ``Runtime`` with its own id, aiohttp session and store pool, in
this one process; buses are in-process (the store, not the bus, is what the replicas
share: each relay publishes whatever is committed and unpublished, and the incident
manager's writes are idempotent in the store).  The projects are paths of one local
aiohttp server whose answers the test switches between 200 and 503.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from agents.events import INCIDENT_OPENED, INCIDENT_RESOLVED, PROJECT_STATUS_CHANGED
from agents.probe_result import ProbeResult
from bot.config import Config
from bot.runtime import Runtime, RuntimeOptions
from bot.settings import Settings
from storage.postgres import PostgresStore
from tests.support import eventually

pytestmark = pytest.mark.timeout(40)

TTL = 1.0
FAILING = "failing"
FLEET = [FAILING, "healthy-1", "healthy-2"]


@dataclass
class FakeFleet:
    """One server, one path per project; a failing project answers 503."""

    failing: set[str] = field(default_factory=set)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        status = 503 if request.match_info["name"] in self.failing else 200
        return web.Response(status=status, text="ok" if status == 200 else "broken")


@pytest.fixture
async def fleet() -> AsyncIterator[FakeFleet]:
    fake = FakeFleet()
    app = web.Application()
    app.router.add_get("/{name}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()


@pytest.fixture
def schema_url(pg_schema: tuple[str, str]) -> tuple[str, str]:
    return pg_schema


def fleet_config(base: str, names: list[str] = FLEET) -> Config:
    defaults = {"interval": "200ms", "timeout": "150ms", "recheck_interval": "100ms"}
    projects = [{"name": n, "url": f"{base}/{n}", "kind": "http"} for n in names]
    return Config.model_validate({"defaults": defaults, "projects": projects})


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> float:
    """Poll the database (the state lives there); the seconds it took."""
    return await eventually(check, "the database state", timeout, every=0.02)


async def test_three_replicas_one_failing_project_and_a_takeover(
    fleet: FakeFleet, schema_url: tuple[str, str], tmp_path: Path
) -> None:
    url, schema = schema_url
    config = fleet_config(fleet.url)
    probes: list[tuple[str, ProbeResult]] = []  # (replica, result), in order of handling

    def replica(i: int) -> Runtime:
        def seen(result: ProbeResult, rid: str = f"r{i}") -> None:
            probes.append((rid, result))

        options = RuntimeOptions(
            serve_web=False, replica_id=f"r{i}", lease_ttl_s=TTL, extra_result_listeners=[seen]
        )
        settings = Settings(database_url=url, sqlite_path=tmp_path / "unused.db", port=0)
        return Runtime(settings, config, options=options)

    store = PostgresStore(url.split("?")[0], schema=schema)
    runtimes = [replica(i) for i in range(3)]
    running: list[Runtime] = []
    await store.open()
    try:
        for runtime in runtimes:
            await runtime.start()
            running.append(runtime)

        async def count(project: str, kind: str) -> int:
            return len(await store.list_events(project=project, types=[kind], limit=1000))

        async def spread() -> bool:  # every project held, one replica each
            held = [r.keeper.held for r in runtimes]
            return all(len(h) == 1 for h in held) and set().union(*held) == set(FLEET)

        async def all_healthy() -> bool:
            return all([await count(n, PROJECT_STATUS_CHANGED) == 1 for n in FLEET])

        await wait_until(spread)
        await wait_until(all_healthy)

        # The failure: exactly one transition, one incident, announced once.
        fleet.failing.add(FAILING)

        async def incident_open() -> bool:
            return bool(await store.list_incidents(project=FAILING, open_only=True))

        await wait_until(incident_open)
        holder = next(r for r in runtimes if FAILING in r.keeper.held)
        assert await count(FAILING, PROJECT_STATUS_CHANGED) == 2  # unknown→healthy→down
        assert await count(FAILING, INCIDENT_OPENED) == 1

        # Kill the holder: it stops beating without releasing, as a crash would.
        killed_at = time.monotonic()
        await holder.keeper.abandon()
        await holder.stop()
        running.remove(holder)
        survivors = [r for r in runtimes if r is not holder]

        async def taken_over() -> bool:
            return any(FAILING in r.keeper.held for r in survivors)

        await wait_until(taken_over)
        takeover_s = time.monotonic() - killed_at
        assert takeover_s < 2 * TTL
        heir = next(r for r in survivors if FAILING in r.keeper.held)
        assert heir.health.status(FAILING) == "down"  # seeded from the store
        heir_probes: list[float] = []  # when the heir handled each probe of FAILING
        heir.result_listeners.append(
            lambda r: heir_probes.append(time.monotonic()) if r.project == FAILING else None
        )

        async def probed_again() -> bool:  # more failures than it takes to announce "down"
            return len(heir_probes) >= 5

        await wait_until(probed_again)
        repoll_s = heir_probes[0] - killed_at
        print(
            f"{FAILING!r}: lease taken over after {takeover_s:.2f} s, probed again after "
            f"{repoll_s:.2f} s (ttl {TTL:g} s)"
        )
        assert repoll_s < 2 * TTL
        assert await count(FAILING, PROJECT_STATUS_CHANGED) == 2
        assert await count(FAILING, INCIDENT_OPENED) == 1
        assert len(await store.list_incidents(project=FAILING)) == 1

        # Recovery, seen by the heir: one transition, one resolution.
        fleet.failing.clear()

        async def resolved() -> bool:
            return not await incident_open() and await count(FAILING, INCIDENT_RESOLVED) == 1

        await wait_until(resolved)
        for runtime in survivors:  # let every relay publish what is committed
            await runtime.relay.flush()
        events = await store.list_events(project=FAILING, types=[PROJECT_STATUS_CHANGED])
        assert [(e.payload["from"], e.payload["to"]) for e in events] == [
            ("unknown", "healthy"),
            ("healthy", "down"),
            ("down", "healthy"),
        ]
        assert await count(FAILING, INCIDENT_OPENED) == 1
        assert await count(FAILING, INCIDENT_RESOLVED) == 1
        incidents = await store.list_incidents(project=FAILING)
        assert len(incidents) == 1 and incidents[0].state == "resolved"
        for name in FLEET[1:]:  # handovers of the healthy ones announced nothing either
            assert await count(name, PROJECT_STATUS_CHANGED) == 1

        # One replica at a time: once another replica probed the failing project, the
        # earlier one never did again.
        pollers = [rid for rid, r in probes if r.project == FAILING]
        runs = [rid for i, rid in enumerate(pollers) if i == 0 or pollers[i - 1] != rid]
        assert len(runs) == len(set(runs)), runs
    finally:
        for runtime in reversed(running):
            await runtime.stop()
        await store.close()


async def test_graceful_stop_hands_back_at_once(
    fleet: FakeFleet, schema_url: tuple[str, str], tmp_path: Path
) -> None:
    url, schema = schema_url
    names = [f"svc-{i}" for i in range(6)]
    config = fleet_config(fleet.url, names)
    settings = Settings(database_url=url, sqlite_path=tmp_path / "unused.db", port=0)
    runtimes = [
        Runtime(
            settings,
            config,
            options=RuntimeOptions(serve_web=False, replica_id=f"g{i}", lease_ttl_s=30),
        )
        for i in range(2)
    ]
    store = PostgresStore(url.split("?")[0], schema=schema)
    await store.open()
    running: list[Runtime] = []
    try:
        for runtime in runtimes:
            await runtime.start()
            running.append(runtime)
        first, second = runtimes
        assert first.keeper.held == frozenset(names)  # started alone: holds everything
        # The second joins; the first hands back at its next beat (driven here).
        await second.keeper.beat()
        await first.keeper.beat()
        await second.keeper.beat()
        assert first.keeper.held and second.keeper.held
        assert first.keeper.held | second.keeper.held == frozenset(names)

        await first.stop()  # what SIGTERM does
        running.remove(first)
        owners = await store.lease_owners()
        assert set(owners.values()) == {"g1"}  # released at once, not after a 30 s ttl
        assert first.monitor is not None and first.monitor.projects == []
        # The survivor no longer counts the stopped replica: it takes everything.
        assert await second.keeper.beat() == frozenset(names)
        assert second.monitor is not None and second.monitor.projects == sorted(names)
    finally:
        for runtime in reversed(running):
            await runtime.stop()
        await store.close()
