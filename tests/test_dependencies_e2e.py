"""Shared dependencies end to end: the real Runtime, with Slack pointed at the local fake
Slack Web API, polling contract services on ephemeral ports whose health really depends on
a database service (they fail while it is down, as a web app does).  Timings are shortened
by configuration only.  What is asserted is what people and services see: the cards
posted to Slack, the /control calls each service received, the incidents stored."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agents.events import ANALYSIS_COMPLETED, ESCALATION_RAISED, INCIDENT_UPDATED
from bot.config import Config
from bot.runtime import Runtime, RuntimeOptions
from bot.settings import Settings
from demo.services.listener import Listener
from orch_kit import Callbacks, Check, Contract, ControlRequest, Health, LogEntry, LogQuery
from storage.base import Incident
from tests.fake_slack import Call, FakeSlack
from tests.support import eventually

pytestmark = pytest.mark.timeout(120)

SECRET = b"shared-dependency-secret"
ENV = {"FLEET_SECRET": SECRET.decode()}
CHANNEL = "#ops-data"
GRACE = "3s"


class Service:
    """A contract service; ``needs``: the service it cannot work without.  A restart of a
    service that is down brings it back once ``comes_up`` is set (a database taking its
    time to start), so a test decides when the root recovers."""

    def __init__(self, name: str, needs: Service | None = None) -> None:
        self.name = name
        self.needs = needs
        self.broken = False
        self.controls: list[str] = []  # every authentic /control call, by action
        self.comes_up = asyncio.Event()
        self.comes_up.set()
        callbacks = Callbacks(
            health=self._health, metrics=lambda: {"cpu_percent": 1.0},
            status=lambda: {"state": "running", "queue_depth": 0, "uptime_s": 1.0},
            logs=self._logs, control=self._control,
        )  # fmt: skip
        self.contract = Contract(callbacks, secret=SECRET)
        self.listener = Listener(self._app, "127.0.0.1", 0)

    @property
    def url(self) -> str:
        return self.listener.url

    def healthy(self) -> bool:
        return not self.broken and (self.needs is None or self.needs.healthy())

    def _app(self) -> web.Application:
        app = web.Application()
        self.contract.mount(app)
        return app

    def _health(self) -> Health:
        if self.healthy():
            return Health.from_checks({"app:ok": [Check("pass")]})
        why = "worker down" if self.broken else f"cannot reach {self.needs and self.needs.name}"
        return Health.from_checks({"app:ok": [Check("fail", why)]})

    def _logs(self, query: LogQuery) -> list[LogEntry]:
        return []

    async def _control(self, request: ControlRequest) -> dict[str, Any]:
        self.controls.append(request.action)
        if request.action == "restart":
            asyncio.get_running_loop().create_task(self._start_up())
        return {}

    async def _start_up(self) -> None:
        await self.comes_up.wait()
        self.broken = False


def fleet_config(services: list[Service]) -> Config:
    return Config.model_validate({
        "defaults": {
            "interval": "1s", "timeout": "500ms", "recheck_interval": "200ms",
            "dependency_grace": GRACE,
            "remediation": {"backoff": "500ms", "verify_timeout": "30s",
                            "verify_interval": "200ms", "control_timeout": "2s"},
        },
        "orchestrators": {"data": {"channel": CHANNEL, "projects": [s.name for s in services]}},
        "projects": [
            {"name": s.name, "url": s.url, "control_secret_env": "FLEET_SECRET",
             "allowed_actions": ["restart"], "depends_on": [s.needs.name] if s.needs else []}
            for s in services
        ],
    })  # fmt: skip


@dataclass
class World:
    runtime: Runtime
    slack: FakeSlack
    services: dict[str, Service]

    async def incidents(self, project: str) -> list[Incident]:
        return await self.runtime.store.list_incidents(project=project)

    async def all_resolved(self, names: list[str], count: int = 1) -> bool:
        for name in names:
            rows = await self.incidents(name)
            if len(rows) < count or any(i.state != "resolved" for i in rows):
                return False
        return True

    def all_healthy(self) -> bool:
        statuses = self.runtime.health.statuses()
        return all(statuses.get(name) == "healthy" for name in self.services)

    async def slack_settled(self) -> bool:
        return not await self.runtime.store.slack_rows(state="pending")

    def cards(self) -> list[Call]:
        return [c for c in self.slack.calls_to("chat.postMessage") if "thread_ts" not in c.params]


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """None: the embedded SQLite; else a PostgreSQL schema of this test's own."""
    if request.param == "sqlite":
        return None
    url, _schema = request.getfixturevalue("pg_schema")
    return str(url)


@pytest.fixture
async def world(database_url: str | None, tmp_path: Path) -> AsyncIterator[World]:
    """A database, twenty apps that need it and one that does not; nothing broken yet."""
    db = Service("db")
    services = [db, *(Service(f"app-{i:02}", needs=db) for i in range(20)), Service("cron")]
    for service in services:
        await service.listener.start()
    slack = FakeSlack()
    await slack.start()
    settings = Settings(
        sqlite_path=tmp_path / "orch.db", database_url=database_url, port=0, env=ENV,
        slack_bot_token="xoxb-test", slack_signing_secret="signing-secret",
        slack_api_url=slack.api_url,
    )  # fmt: skip
    runtime = Runtime(settings, fleet_config(services), options=RuntimeOptions(serve_web=False))
    await runtime.start()
    try:
        yield World(runtime, slack, {s.name: s for s in services})
    finally:
        await runtime.stop()
        await slack.stop()
        for service in services:
            await service.listener.stop()


APPS = [f"app-{i:02}" for i in range(20)]


async def test_a_database_outage_is_one_card_and_one_restart_of_the_database(
    world: World,
) -> None:
    db = world.services["db"]
    await eventually(world.all_healthy, "the fleet polled once", timeout=20)
    db.comes_up.clear()  # restarted, the database takes until we say to come back
    db.broken = True  # and with it, every app fails its health check

    async def all_folded() -> bool:
        [root] = await world.incidents("db") or [None]
        if root is None:
            return False
        for app in APPS:
            rows = await world.incidents(app)
            if not rows or rows[0].caused_by != root.id:
                return False
        return True

    await eventually(all_folded, "twenty app outages folded into the database's", timeout=30)
    await eventually(lambda: db.controls == ["restart"], "the database restarted", timeout=20)
    db.comes_up.set()
    await eventually(lambda: world.all_resolved(["db", *APPS]), "everything recovered", 40)
    await eventually(world.slack_settled, "Slack caught up", timeout=40)

    # One card, for the database, in the group's channel; nobody else got one.
    [card] = world.cards()
    assert card.params["channel"] == CHANNEL
    assert "db" in json.dumps(card.params) and "app-00" not in card.params.get("text", "")
    # Its last edit names every app as affected, recovered.
    final = json.dumps(world.slack.calls_to("chat.update")[-1].params, ensure_ascii=False)
    assert "Also affected* (20, depending on db)" in final
    assert all(f"{app} ✅" in final for app in APPS)
    assert "resolved" in final
    # Twenty folds and twenty recoveries cost a handful of edits, not forty.
    assert len(world.slack.calls_to("chat.update")) < 12
    # The database was restarted once; no app was restarted, paged or analysed.
    assert db.controls == ["restart"]
    assert all(world.services[app].controls == [] for app in APPS)
    for kind in (ESCALATION_RAISED, ANALYSIS_COMPLETED):
        events = await world.runtime.store.list_events(types=[kind], limit=100)
        assert [e.project for e in events] == []
    # Every app's outage is recorded, and linked to the database's.
    [root] = await world.incidents("db")
    folded = await world.runtime.store.incidents_caused_by(root.id)
    assert sorted(i.project for i in folded) == APPS
    assert all(i.duration_s is not None and i.duration_s > 0 for i in folded)


async def test_an_app_still_down_after_the_database_recovered_gets_its_own_card(
    world: World,
) -> None:
    db, broken, fine = (world.services[n] for n in ("db", "app-00", "app-01"))
    await eventually(world.all_healthy, "the fleet polled once", timeout=20)
    db.comes_up.clear()
    db.broken = True
    broken.broken = True  # a fault of its own, hidden while the database is down

    async def folded() -> bool:
        [root] = await world.incidents("db") or [None]
        for name in ("app-00", "app-01"):
            rows = await world.incidents(name)
            if root is None or not rows or rows[0].caused_by != root.id:
                return False
        return True

    await eventually(folded, "both apps folded into the database's outage", timeout=30)
    assert broken.controls == []
    db.comes_up.set()
    await eventually(lambda: world.all_resolved(["db", "app-01"]), "db and app-01 back", 30)

    # Past the grace, app-00 is on its own: its own card, then its own restart, which
    # fixes it.
    await eventually(lambda: world.all_resolved(["app-00"]), "app-00 fixed on its own", 40)
    await eventually(world.slack_settled, "Slack caught up", timeout=40)
    cards = world.cards()
    assert len(cards) == 2
    assert "app-00" in json.dumps(cards[1].params)
    assert broken.controls == ["restart"] and fine.controls == [] and db.controls == ["restart"]
    [own] = await world.incidents("app-00")
    assert own.caused_by is None
    updates = await world.runtime.store.list_events(
        project="app-00", types=[INCIDENT_UPDATED], limit=20
    )
    # (A hold that ends after the release changes nothing: the card is there.)
    folds = [e.payload.get("fold") for e in sorted(updates, key=lambda e: e.ts)]
    assert [f for f in folds if f != "hold_ended"] == ["folded", "released"]
    # The database's thread says so.
    replies = [c for c in world.slack.calls_to("chat.postMessage") if "thread_ts" in c.params]
    assert any("app-00 is still down after db recovered" in json.dumps(r.params) for r in replies)
