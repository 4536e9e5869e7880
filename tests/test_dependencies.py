"""The shared-dependency rule on the real event path (SQLite store, relay, in-process bus,
the IncidentManager opening incidents from status events), with the clock injected:
which outages fold into which, when a hold and a fold end, and what the Auto-Fixer may
do meanwhile (``agents.dependencies``, ``agents.dependency_gate``)."""

from __future__ import annotations

from typing import Any

from agents import rules_engine
from agents.clock import FakeClock
from agents.decision import DecisionAgent
from agents.dependencies import DependencyFolder
from agents.dependency_gate import dependency_hold
from agents.dependency_graph import explained_by_dependency
from agents.events import ANALYSIS_COMPLETED, INCIDENT_UPDATED, PROJECT_STATUS_CHANGED, Event
from agents.incidents import IncidentManager
from bot.config import Config
from storage.base import Incident
from tests.support import Stack

GRACE = 30.0


def config() -> Config:
    """disk <- db <- api <- web (each depends on the one before); cron on nothing."""
    return Config.model_validate({
        "defaults": {"dependency_grace": f"{GRACE:g}s"},
        "projects": [
            {"name": "disk", "url": "http://127.0.0.1:1"},
            {"name": "db", "url": "http://127.0.0.1:2", "depends_on": ["disk"]},
            {"name": "api", "url": "http://127.0.0.1:3", "depends_on": ["db"]},
            {"name": "web", "url": "http://127.0.0.1:4", "depends_on": ["api"]},
            {"name": "cron", "url": "http://127.0.0.1:5"},
        ],
    })  # fmt: skip


class Fleet:
    """Status changes as the HealthMonitor announces them, through the IncidentManager."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.config = config()
        self.folder = DependencyFolder(
            stack.store, lambda: self.config, clock=stack.clock, wake=stack.relay.wake
        )
        IncidentManager(stack.store, stack.relay, stack.clock).register(stack.bus)
        self.folder.register(stack.bus)

    async def status(self, project: str, to: str) -> None:
        event = Event(PROJECT_STATUS_CHANGED, self.stack.clock.now(), "health",
                      {"from": "?", "to": to, "reason": "test"}, project=project)  # fmt: skip
        await self.stack.store.append_events([event])
        await self.stack.settle()

    async def down(self, project: str) -> Incident:
        incident = await self.stack.store.get_open_incident(f"{project}:down")
        assert incident is not None
        return incident

    async def sweep(self) -> None:
        await self.folder.reconcile()
        await self.stack.settle()

    def folds(self, project: str) -> list[Any]:
        return [e.payload.get("fold") for e in self.stack.of_type(INCIDENT_UPDATED)
                if e.project == project]  # fmt: skip


async def test_outages_fold_into_the_deepest_dependency_that_is_down(stack: Stack) -> None:
    fleet = Fleet(stack)
    for name in ("db", "api", "web", "cron"):
        await fleet.status(name, "down")
    db = await fleet.down("db")
    assert db.caused_by is None  # disk is up: db is the root
    assert (await fleet.down("api")).caused_by == db.id
    assert (await fleet.down("web")).caused_by == db.id  # transitively, one level deep
    assert (await fleet.down("cron")).caused_by is None
    # disk goes down too: everything points at the new root, still one level deep.
    await fleet.status("disk", "down")
    disk = await fleet.down("disk")
    assert [(await fleet.down(n)).caused_by for n in ("db", "api", "web")] == [disk.id] * 3
    assert fleet.folds("api") == ["folded", "folded"]
    [event] = [e for e in stack.of_type(INCIDENT_UPDATED) if e.project == "db"]
    assert event.payload["root_project"] == "disk" and event.incident_id == db.id


async def test_a_dependent_down_first_is_folded_within_the_grace_only(
    stack: Stack, clock: FakeClock
) -> None:
    fleet = Fleet(stack)
    await fleet.status("web", "down")  # down for reasons of its own, long before
    await clock.advance(GRACE + 1)
    await fleet.status("api", "down")  # the usual race: the dependent fails first
    await clock.advance(GRACE - 1)
    await fleet.status("db", "down")
    db = await fleet.down("db")
    assert (await fleet.down("api")).caused_by == db.id
    web = await fleet.down("web")
    assert web.caused_by is None
    # Not folded, yet not restarted while a dependency is down.
    hold = await dependency_hold(stack.store, fleet.config, web, clock.now())
    assert hold is not None
    assert (hold.kind, hold.why) == ("stand_down", "its dependency api is down")


async def test_folded_outages_are_released_a_grace_after_the_root_recovers(
    stack: Stack, clock: FakeClock
) -> None:
    fleet = Fleet(stack)
    for name in ("db", "api", "web"):
        await fleet.status(name, "down")
    db = await fleet.down("db")
    await clock.advance(5)
    await fleet.status("db", "healthy")
    await fleet.status("web", "healthy")  # recovers with it: resolved, still folded
    await clock.advance(GRACE - 1)
    await fleet.sweep()
    assert (await fleet.down("api")).caused_by == db.id
    await clock.advance(1)
    await fleet.sweep()
    await fleet.sweep()  # again: nothing changes twice
    api = await fleet.down("api")
    assert api.caused_by is None
    # (Its hold ends too; the notifier ignores that for a card the release posted.)
    assert fleet.folds("api") == ["folded", "released", "hold_ended"]
    assert fleet.folds("web") == ["folded"]
    [web] = await stack.store.incidents_caused_by(db.id)
    assert (web.project, web.state) == ("web", "resolved")
    # On its own now, past its hold: the Auto-Fixer may act.
    assert await dependency_hold(stack.store, fleet.config, api, clock.now()) is None


async def test_a_project_with_dependencies_is_held_then_its_hold_ends_once(
    stack: Stack, clock: FakeClock
) -> None:
    fleet = Fleet(stack)
    await fleet.status("api", "down")  # db is fine: maybe not for long
    api = await fleet.down("api")
    hold = await dependency_hold(stack.store, fleet.config, api, clock.now())
    assert hold is not None and hold.kind == "wait"
    await fleet.sweep()
    assert fleet.folds("api") == []
    await clock.advance(GRACE)
    await fleet.sweep()
    await fleet.sweep()
    assert fleet.folds("api") == ["hold_ended"]
    assert await dependency_hold(stack.store, fleet.config, api, clock.now()) is None
    # A project without dependencies is never held.
    await fleet.status("cron", "down")
    cron = await fleet.down("cron")
    assert await dependency_hold(stack.store, fleet.config, cron, clock.now()) is None


async def test_a_folded_outage_is_left_to_its_root(stack: Stack, clock: FakeClock) -> None:
    fleet = Fleet(stack)
    await fleet.status("db", "down")
    await fleet.status("api", "down")
    await clock.advance(GRACE * 2)
    hold = await dependency_hold(stack.store, fleet.config, await fleet.down("api"), clock.now())
    assert hold is not None
    assert hold.kind == "stand_down"
    assert hold.why == "folded into db's outage: only the root is remediated"


def test_outages_explained_by_a_dependency_are_no_mass_failure() -> None:
    assert explained_by_dependency(config(), ["db", "api", "web", "cron"]) == {"api", "web"}
    assert explained_by_dependency(config(), ["api", "cron"]) == set()


async def test_after_the_root_recovers_the_next_one_down_becomes_the_root(
    stack: Stack, clock: FakeClock
) -> None:
    fleet = Fleet(stack)
    for name in ("db", "api", "web"):
        await fleet.status(name, "down")
    await fleet.status("db", "healthy")
    await clock.advance(GRACE)
    await fleet.sweep()
    # api is down on its own: its own incident; web, which needs api, folds into it.
    api = await fleet.down("api")
    assert api.caused_by is None
    assert (await fleet.down("web")).caused_by == api.id
    assert fleet.folds("web") == ["folded", "folded"]


async def test_a_folded_outage_is_analysed_only_when_a_person_asks(stack: Stack) -> None:
    fleet = Fleet(stack)
    agent = DecisionAgent(stack.store, lambda: fleet.config, lambda: None, advisor=None,
                          rules=rules_engine.analyze, wake=stack.relay.wake)  # fmt: skip
    await fleet.status("db", "down")
    await fleet.status("api", "down")
    api = await fleet.down("api")
    assert api.caused_by is not None
    assert await agent.analyze("api", api.id) is None  # the root's analysis covers it
    assert await stack.store.analyses_for(api.id) == []
    asked = await agent.analyze("api", api.id, requested_by="U0ALICE")
    assert asked is not None and asked.new.incident_id == api.id
    await stack.settle()
    assert [e.project for e in stack.of_type(ANALYSIS_COMPLETED)] == ["api"]


async def test_a_dependency_dropped_from_the_config_releases_the_fold(stack: Stack) -> None:
    fleet = Fleet(stack)
    await fleet.status("db", "down")
    await fleet.status("api", "down")
    assert (await fleet.down("api")).caused_by is not None
    fleet.config = Config.model_validate({
        "projects": [{"name": n, "url": f"http://127.0.0.1:{i}"}
                     for i, n in enumerate(("disk", "db", "api", "web", "cron"), 1)],
    })  # fmt: skip
    await fleet.sweep()
    assert (await fleet.down("api")).caused_by is None
    assert fleet.folds("api") == ["folded", "released"]
