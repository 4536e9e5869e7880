"""IncidentManager: the whole life of incidents over the real bus + outbox relay + SQLite
store, fed by the real HealthMonitor and MetricsAnalyzer."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import pytest

from agents.clock import FakeClock
from agents.events import (
    INCIDENT_OPENED,
    INCIDENT_RESOLVED,
    INCIDENT_UPDATED,
    METRIC_ANOMALY,
    METRIC_RECOVERED,
    PROJECT_STATUS_CHANGED,
    Event,
    new_event_id,
)
from agents.health import HealthMonitor
from agents.incidents import IncidentManager
from agents.metrics_analyzer import MetricsAnalyzer
from agents.probe_result import Level, ProbeResult
from bot.config import Project
from storage.sqlite import SQLiteStore
from tests.support import Stack, make_project

REFUSED = "GET /health: connection refused"


@dataclass
class World:
    """The shared event path plus the three agents that feed and keep incidents."""

    stack: Stack
    manager: IncidentManager
    health: HealthMonitor
    analyzer: MetricsAnalyzer

    @property
    def clock(self) -> FakeClock:
        return self.stack.clock

    @property
    def store(self) -> SQLiteStore:
        return self.stack.store

    @property
    def seen(self) -> list[Event]:
        return self.stack.seen

    async def settle(self) -> None:
        await self.stack.settle()

    def of_type(self, *types: str) -> list[Event]:
        return self.stack.of_type(*types)

    async def probe(
        self, project: Project, level: Level, metrics: dict[str, float] | None = None
    ) -> None:
        reason = REFUSED if level is Level.FAIL else ""
        result = ProbeResult(
            project.name, self.clock.now(), level, 3.0, reason, metrics=metrics or {}
        )
        await self.health.observe(result, project)
        await self.analyzer.observe(result, project)
        await self.settle()


@pytest.fixture
async def world(stack: Stack) -> World:
    manager = IncidentManager(stack.store, stack.relay, stack.clock)
    manager.register(stack.bus)
    return World(
        stack,
        manager,
        HealthMonitor(stack.relay, stack.clock),
        MetricsAnalyzer(stack.relay, stack.clock),
    )


async def test_down_and_recovery_make_one_incident_with_exact_duration(world: World) -> None:
    blast = make_project("email-blast")
    await world.probe(blast, Level.PASS)
    for _ in range(3):
        await world.clock.advance(1)
        await world.probe(blast, Level.FAIL)
    down = world.of_type(PROJECT_STATUS_CHANGED)[-1]
    assert down.payload["to"] == "down"

    opened = world.of_type(INCIDENT_OPENED)
    assert len(opened) == 1
    event = opened[0]
    assert (event.source, event.project) == ("incidents", "email-blast")
    assert event.ts == world.clock.now()
    assert event.payload == {
        "fingerprint": "email-blast:down",
        "severity": "critical",
        "summary": f"email-blast is down: {REFUSED}",
    }
    rows = await world.store.list_incidents(open_only=True)
    assert len(rows) == 1
    incident = rows[0]
    assert incident.id == event.incident_id
    assert (incident.fingerprint, incident.condition, incident.severity) == (
        "email-blast:down",
        "down",
        "critical",
    )
    assert incident.opened_at == down.ts

    # Duplicate deliveries: the same id through the bus, the same event handed straight to
    # the handler (another replica), and a copy with a fresh id (a re-published row).
    await world.stack.bus.publish(down)
    await world.stack.bus.drain()
    await world.manager.handle(down)
    await world.manager.handle(replace(down, id=new_event_id()))
    await world.settle()
    assert len(world.of_type(INCIDENT_OPENED)) == 1
    assert (await world.store.count_rows())["incidents"] == 1

    await world.clock.advance(60)
    await world.probe(blast, Level.PASS)
    assert world.of_type(INCIDENT_RESOLVED) == []  # one good probe is not a recovery
    await world.clock.advance(10)
    await world.probe(blast, Level.PASS)
    resolved = world.of_type(INCIDENT_RESOLVED)
    assert len(resolved) == 1
    assert resolved[0].incident_id == incident.id
    assert resolved[0].payload == {
        "fingerprint": "email-blast:down",
        "severity": "critical",
        "summary": f"email-blast is down: {REFUSED}",
        "duration_s": 70.0,  # from the down transition to the second good probe
    }
    [row] = await world.store.list_incidents(project="email-blast")
    assert row.state == "resolved" and row.duration_s == 70.0
    assert row.resolved_at == down.ts + timedelta(seconds=70)

    # Resolving again, or a late redelivery of the old "down", changes nothing.
    recovery = world.of_type(PROJECT_STATUS_CHANGED)[-1]
    await world.manager.handle(recovery)
    await world.manager.handle(replace(down, id=new_event_id()))
    await world.settle()
    assert len(world.of_type(INCIDENT_OPENED, INCIDENT_RESOLVED)) == 2
    assert (await world.store.count_rows())["incidents"] == 1


async def test_a_second_outage_opens_a_second_incident(world: World) -> None:
    blast = make_project("email-blast")
    for level in [Level.FAIL] * 3 + [Level.PASS] * 2 + [Level.FAIL] * 3:
        await world.clock.advance(1)
        await world.probe(blast, level)
    assert len(world.of_type(INCIDENT_OPENED)) == 2
    assert len(world.of_type(INCIDENT_RESOLVED)) == 1
    assert len(await world.store.list_incidents(open_only=True)) == 1


async def test_metric_incident_opens_updates_and_resolves(world: World) -> None:
    chatbot = make_project("chatbot")
    for value in (0.1, 0.1, 0.1, 0.5, 0.5, 0.5, 0.5, 0.0):
        await world.clock.advance(10)
        await world.probe(chatbot, Level.PASS, {"error_rate": value})
    incident_events = world.of_type(INCIDENT_OPENED, INCIDENT_UPDATED, INCIDENT_RESOLVED)
    assert [(e.type, e.payload["severity"]) for e in incident_events] == [
        (INCIDENT_OPENED, "warning"),
        (INCIDENT_UPDATED, "critical"),
    ]
    assert incident_events[0].payload == {
        "fingerprint": "chatbot:metric:error_rate",
        "severity": "warning",
        "summary": "chatbot error_rate is 0.1, beyond the warn threshold 0.05",
    }
    assert incident_events[1].payload["summary"] == (
        "chatbot error_rate is 0.5, beyond the crit threshold 0.2"
    )
    assert incident_events[0].incident_id == incident_events[1].incident_id
    opened_at = world.of_type(METRIC_ANOMALY)[0].ts

    # The same anomaly again (a redelivery) is no update.
    crit = world.of_type(METRIC_ANOMALY)[-1]
    await world.manager.handle(replace(crit, id=new_event_id()))
    await world.settle()
    assert len(world.of_type(INCIDENT_UPDATED)) == 1

    await world.clock.advance(10)
    await world.probe(chatbot, Level.PASS, {"error_rate": 0.0})
    assert len(world.of_type(METRIC_RECOVERED)) == 1
    [resolved] = world.of_type(INCIDENT_RESOLVED)
    assert resolved.payload["fingerprint"] == "chatbot:metric:error_rate"
    assert resolved.payload["severity"] == "critical"
    [row] = await world.store.list_incidents(project="chatbot")
    assert (row.condition, row.state) == ("metric:error_rate", "resolved")
    assert row.opened_at == opened_at
    assert row.duration_s == 60.0  # 3rd sample (t=30) to the 2nd sample under (t=90)


async def test_stale_events_do_not_touch_a_newer_incident(world: World) -> None:
    chatbot = make_project("chatbot")
    for value in (0.1, 0.1, 0.1, 0.0, 0.0, 0.1, 0.1, 0.1):
        await world.clock.advance(10)
        await world.probe(chatbot, Level.PASS, {"error_rate": value})
    assert len(world.of_type(INCIDENT_OPENED)) == 2
    first_anomaly = world.of_type(METRIC_ANOMALY)[0]
    first_recovery = world.of_type(METRIC_RECOVERED)[0]

    # Redelivered out of order (another consumer crashed holding them): old news.
    await world.manager.handle(replace(first_recovery, id=new_event_id()))
    await world.manager.handle(replace(first_anomaly, id=new_event_id()))
    await world.settle()
    assert len(await world.store.list_incidents(project="chatbot", open_only=True)) == 1
    assert len(world.of_type(INCIDENT_OPENED, INCIDENT_RESOLVED, INCIDENT_UPDATED)) == 3


async def test_statuses_that_are_not_outages_and_events_without_project(world: World) -> None:
    blast = make_project("email-blast")
    await world.probe(blast, Level.WARN)  # unknown → degraded: nothing to resolve
    await world.manager.handle(
        Event(PROJECT_STATUS_CHANGED, world.clock.now(), "test", {"from": "x", "to": "down"})
    )
    await world.settle()
    assert world.of_type(INCIDENT_OPENED, INCIDENT_RESOLVED) == []
    assert (await world.store.count_rows())["incidents"] == 0


async def test_resolves_an_outage_left_open_across_a_restart(world: World) -> None:
    # A previous orch process opened the incident; this one starts from unknown.
    blast = make_project("email-blast")
    down: dict[str, Any] = {"from": "healthy", "to": "down", "reason": REFUSED, "probe": {}}
    await world.manager.handle(
        Event(PROJECT_STATUS_CHANGED, world.clock.now(), "x", down, project="email-blast")
    )
    await world.clock.advance(300)
    await world.probe(blast, Level.PASS)
    [resolved] = world.of_type(INCIDENT_RESOLVED)
    assert resolved.payload["duration_s"] == 300.0
