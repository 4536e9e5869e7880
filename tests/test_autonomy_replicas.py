"""Three orch replicas on one PostgreSQL schema act on one failing project: exactly one
decision, one ``/control`` call, one verification (the leases, the per-project decision
lock and the actions' compare-and-set, not luck).  The simulated fleet answers over real
HTTP and counts the restarts its supervisors performed."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.events import INCIDENT_RESOLVED
from bot.runtime import Runtime, RuntimeOptions
from bot.settings import Settings
from demo.fleet import Fleet
from storage.postgres import PostgresStore
from tests.acting_fleet import ENV, FAST, NAMES, SECRETS, acting_config
from tests.support import eventually

# Faster polling than FAST: three replicas share the probes.
QUICK = {**FAST, "interval": "500ms", "timeout": "300ms", "recheck_interval": "100ms"}


pytestmark = pytest.mark.timeout(60)


async def test_three_replicas_restart_a_crashed_project_exactly_once(
    pg_schema: tuple[str, str], tmp_path: Path
) -> None:
    url, schema = pg_schema
    fleet = Fleet.ephemeral(NAMES, SECRETS)
    await fleet.start()
    config = acting_config(fleet, defaults=QUICK)
    runtimes = [
        Runtime(
            Settings(database_url=url, sqlite_path=tmp_path / "unused.db", port=0, env=ENV),
            config,
            options=RuntimeOptions(serve_web=False, replica_id=f"r{i}", lease_ttl_s=2),
        )
        for i in range(3)
    ]
    store = PostgresStore(url.split("?")[0], schema=schema)
    started: list[Runtime] = []
    await store.open()
    try:
        for runtime in runtimes:
            await runtime.start()
            started.append(runtime)
        await fleet.inject("email-blast", "crash")

        async def resolved() -> bool:
            events = await store.list_events(project="email-blast", types=[INCIDENT_RESOLVED])
            return bool(events)

        await eventually(resolved, "the crash resolved", timeout=40)
        assert fleet.service("email-blast").restarts == 1
        [action] = await store.list_actions(project="email-blast")
        assert (action.action, action.state, action.origin) == ("restart", "verified", "autofix")
        assert action.executor in {"r0", "r1", "r2"}
        assert len(await store.list_incidents(project="email-blast")) == 1
        assert fleet.service("chatbot").restarts == fleet.service("social-media").restarts == 0
    finally:
        for runtime in reversed(started):
            await runtime.stop()
        await store.close()
        await fleet.stop()
