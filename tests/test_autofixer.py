"""The Auto-Fixer's decisions (DESIGN §6), on the real store and event path with an
injected clock: what it asks the executor to do, when it waits, when it stands down and
when it escalates, and that every limit lives in the store (replicas, restarts)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

from agents.actions import request_action
from agents.autofixer import FLEET, AutoFixer
from agents.escalation import Escalator
from agents.events import (
    ACTION_FAILED,
    ACTION_REQUESTED,
    ACTION_STARTED,
    APPROVAL_REQUESTED,
    ESCALATION_RAISED,
    INCIDENT_OPENED,
    INCIDENT_RESOLVED,
    PROJECT_STATUS_CHANGED,
    REMEDIATION_SUSPENDED,
    Event,
)
from bot.config import Config
from storage.base import Incident
from storage.operations_store import ActionRequest
from tests.support import Stack

SECRET_ENV = "X_SECRET"


def config(names: tuple[str, ...] = ("email-blast",), **remediation: Any) -> Config:
    project = {
        "url": "http://127.0.0.1:9",
        "control_secret_env": SECRET_ENV,
        "allowed_actions": ["restart", "clear_cache", "pause", "resume"],
    }
    return Config.model_validate(
        {
            "defaults": {"remediation": remediation} if remediation else {},
            "projects": [{"name": n, **project} for n in names],
        }
    )


class Fixer:
    """An AutoFixer on ``stack`` holding every configured project."""

    def __init__(self, stack: Stack, cfg: Config, *, replica: str = "r1") -> None:
        self.stack = stack
        self.cfg = cfg
        self.flapping: set[str] = set()
        escalator = Escalator(
            stack.store, lambda: self.cfg, lambda: None, clock=stack.clock, wake=stack.relay.wake
        )
        self.fixer = AutoFixer(
            stack.store,
            lambda: self.cfg,
            escalator,
            clock=stack.clock,
            wake=stack.relay.wake,
            replica_id=replica,
            held=lambda: self.cfg.project_names(),
            is_flapping=lambda name: name in self.flapping,
        )

    async def evaluate(self, name: str = "email-blast") -> str:
        decision = await self.fixer.evaluate(name)
        await self.stack.settle()
        return decision.kind


async def open_incident(
    stack: Stack, name: str = "email-blast", condition: str = "down"
) -> Incident:
    incident = Incident(
        uuid.uuid4().hex,
        f"{name}:{condition}",
        name,
        condition,
        "critical",
        f"{name} is down: HTTP 503",
        stack.clock.now(),
    )
    opened = await stack.store.open_incident(
        incident,
        lambda i: Event(INCIDENT_OPENED, i.opened_at, "test", {}, i.project, i.id),
    )
    assert opened is not None
    return opened


async def fail_action(stack: Stack, action: ActionRequest) -> None:
    """What the executor does with an attempt that did not help."""
    started = await stack.store.start_action(
        action.id, "r1", lambda a: Event(ACTION_STARTED, stack.clock.now(), "test", {}, a.project)
    )
    assert started is not None
    moved = await stack.store.move_action(
        action.id,
        ["running"],
        "failed",
        lambda a: Event(ACTION_FAILED, stack.clock.now(), "test", {}, a.project),
        error="no",
    )
    assert moved is not None


async def announce(stack: Stack, name: str, status: str) -> None:
    await stack.store.append_events(
        [
            Event(
                PROJECT_STATUS_CHANGED,
                stack.clock.now(),
                "test",
                {"from": "healthy", "to": status},
                name,
            )
        ]
    )


async def test_a_down_project_gets_one_restart_then_the_fixer_waits_for_it(stack: Stack) -> None:
    fixer = Fixer(stack, config())
    incident = await open_incident(stack)

    assert await fixer.evaluate() == "act"
    assert await fixer.evaluate() == "wait"  # the restart is still in flight

    [action] = await stack.store.incident_actions(incident.id)
    assert (action.action, action.origin, action.state) == ("restart", "autofix", "requested")
    assert not action.needs_approval
    requested = stack.of_type(ACTION_REQUESTED)
    assert len(requested) == 1 and requested[0].incident_id == incident.id
    # The budget counted it (shared by replicas through the store).
    assert await stack.store.count_attempts("email-blast", "restart", 900) == 1


async def test_two_attempts_with_backoff_then_one_escalation_and_an_approval(
    stack: Stack,
) -> None:
    fixer = Fixer(stack, config())
    incident = await open_incident(stack)
    assert await fixer.evaluate() == "act"
    [first] = await stack.store.incident_actions(incident.id)
    await fail_action(stack, first)

    assert await fixer.evaluate() == "wait"  # backoff: 10 s after the first attempt
    await stack.clock.advance(9)
    assert await fixer.evaluate() == "wait"
    await stack.clock.advance(2)
    assert await fixer.evaluate() == "act"
    second = (await stack.store.incident_actions(incident.id))[-1]
    await fail_action(stack, second)
    await stack.clock.advance(60)

    assert await fixer.evaluate() == "escalate"
    assert await fixer.evaluate() == "wait"  # a human is asked for one more attempt
    [escalation] = stack.of_type(ESCALATION_RAISED)
    assert escalation.payload["reason"] == "attempts_exhausted"
    assert escalation.incident_id == incident.id
    tried = escalation.payload["context"]["actions"]
    assert [(a["action"], a["state"]) for a in tried] == [("restart", "failed")] * 2
    *_, offered = await stack.store.incident_actions(incident.id)
    assert (offered.state, offered.needs_approval) == ("awaiting_approval", True)
    [asked] = stack.of_type(APPROVAL_REQUESTED)
    assert asked.incident_id == incident.id

    # Denied: nothing more runs, and the escalation is not raised twice.
    [approval] = await stack.store.pending_approvals("email-blast")
    await stack.store.decide_approval(
        approval.id,
        "denied",
        "U1",
        four_eyes=False,
        event_for=lambda a: Event("approval.denied", stack.clock.now(), "test", {}, a.project),
    )
    assert await fixer.evaluate() == "escalate"
    assert len(await stack.store.incident_actions(incident.id)) == 3
    assert len(stack.of_type(ESCALATION_RAISED)) == 1


async def test_backoff_doubles_with_recent_attempts(stack: Stack) -> None:
    fixer = Fixer(stack, config(attempts_per_incident=5))
    incident = await open_incident(stack)
    assert await fixer.evaluate() == "act"
    waits = []
    for _ in range(2):
        await fail_action(stack, (await stack.store.incident_actions(incident.id))[-1])
        waited = 0
        while (kind := await fixer.evaluate()) == "wait":
            await stack.clock.advance(1)
            waited += 1
        waits.append((waited, kind))
    assert waits == [(10, "act"), (20, "act")]  # 10 s after the first, 20 s after the second


async def test_budget_of_three_restarts_then_suspended_across_a_restart(stack: Stack) -> None:
    cfg = config(attempts_per_incident=10, backoff="0s")
    fixer = Fixer(stack, cfg)
    incident = await open_incident(stack)
    for _ in range(3):
        assert await fixer.evaluate() == "act"
        await fail_action(stack, (await stack.store.incident_actions(incident.id))[-1])
    assert await fixer.evaluate() == "escalate"

    suspension = await stack.store.remediation_suspended("email-blast")
    assert suspension is not None and suspension.reason == "budget_exhausted"
    [notice] = stack.of_type(REMEDIATION_SUSPENDED)
    assert notice.payload["reason"] == "budget_exhausted"
    assert [e.payload["reason"] for e in stack.of_type(ESCALATION_RAISED)] == ["budget_exhausted"]

    # A new orch process (a fresh fixer on the same store), even 20 minutes later.
    await stack.clock.advance(20 * 60)
    again = Fixer(stack, cfg, replica="r2")
    assert await again.evaluate() == "stand_down"
    assert len(await stack.store.incident_actions(incident.id)) == 3

    # Recovery lifts it: the project is fixable again next time.
    await stack.store.resolve_incident(
        incident.fingerprint,
        stack.clock.now(),
        lambda i: Event(INCIDENT_RESOLVED, stack.clock.now(), "test", {}, i.project, i.id),
    )
    await stack.settle()
    again.fixer.register(stack.bus)
    await stack.bus.publish(
        Event(INCIDENT_RESOLVED, stack.clock.now(), "test", {}, "email-blast", incident.id)
    )
    await stack.bus.drain()
    assert await stack.store.remediation_suspended("email-blast") is None


async def test_operator_restarts_count_against_the_budget(stack: Stack) -> None:
    fixer = Fixer(stack, config())
    for _ in range(3):
        await stack.store.record_attempt("email-blast", "restart", "U_OPERATOR")
    await open_incident(stack)
    assert await fixer.evaluate() == "escalate"
    assert await stack.store.remediation_suspended("email-blast") is not None


async def test_memory_anomaly_clears_the_cache_and_spends_no_restart(stack: Stack) -> None:
    fixer = Fixer(stack, config())
    incident = await open_incident(stack, condition="metric:memory_percent")
    assert await fixer.evaluate() == "act"
    [action] = await stack.store.incident_actions(incident.id)
    assert action.action == "clear_cache"
    assert await stack.store.count_attempts("email-blast", "restart", 900) == 0


async def test_other_metric_incidents_are_left_to_humans(stack: Stack) -> None:
    fixer = Fixer(stack, config())
    await open_incident(stack, condition="metric:error_rate")
    assert await fixer.evaluate() == "nothing"
    assert not stack.of_type(ACTION_REQUESTED, ESCALATION_RAISED)


async def test_flapping_project_is_not_restarted_and_noticed_once(stack: Stack) -> None:
    fixer = Fixer(stack, config())
    fixer.flapping.add("email-blast")
    incident = await open_incident(stack)
    assert await fixer.evaluate() == "stand_down"
    assert await fixer.evaluate() == "stand_down"
    assert await stack.store.incident_actions(incident.id) == []
    [notice] = stack.of_type(REMEDIATION_SUSPENDED)
    assert notice.payload == {"reason": "flapping"} and notice.incident_id == incident.id


async def test_silenced_project_is_left_alone(stack: Stack) -> None:
    fixer = Fixer(stack, config())
    await stack.store.create_silence(
        "email-blast",
        stack.clock.now() + timedelta(hours=1),
        "maintenance",
        "U1",
        lambda s: Event("silence.created", s.starts_at, "test", {}, s.project),
    )
    incident = await open_incident(stack)
    assert await fixer.evaluate() == "stand_down"
    assert await stack.store.incident_actions(incident.id) == []


async def test_action_needing_approval_waits_for_a_human(stack: Stack) -> None:
    cfg = config()
    cfg.project("email-blast").needs_approval = ["restart"]
    fixer = Fixer(stack, cfg)
    incident = await open_incident(stack)
    assert await fixer.evaluate() == "act"
    [action] = await stack.store.incident_actions(incident.id)
    assert action.state == "awaiting_approval"
    [asked] = stack.of_type(APPROVAL_REQUESTED)
    assert asked.incident_id == incident.id and asked.payload["action_id"] == action.id
    assert await fixer.evaluate() == "wait"


async def test_a_forbidden_action_is_escalated_not_run(stack: Stack) -> None:
    cfg = config()
    cfg.project("email-blast").allowed_actions = ["pause"]
    fixer = Fixer(stack, cfg)
    incident = await open_incident(stack)
    assert await fixer.evaluate() == "escalate"
    assert await stack.store.incident_actions(incident.id) == []
    [escalation] = stack.of_type(ESCALATION_RAISED)
    assert escalation.payload["reason"] == "action_not_allowed"


async def test_half_the_fleet_down_restarts_nothing_and_escalates_once(stack: Stack) -> None:
    names = tuple(f"svc-{i}" for i in range(5))
    fixer = Fixer(stack, config(names))
    for name in names[:3]:  # 60 % down
        await announce(stack, name, "down")
        await open_incident(stack, name)
    decisions = [await fixer.evaluate(name) for name in names[:3]]

    assert decisions == ["stand_down"] * 3
    assert await stack.store.list_actions() == []
    [escalation] = stack.of_type(ESCALATION_RAISED)
    assert escalation.payload["reason"] == "mass_failure"
    assert escalation.payload["context"]["down"] == list(names[:3])
    assert (await stack.store.remediation_suspended(FLEET)) is not None

    # The fleet comes back but one: restarts are allowed again.
    for name in names[:2]:
        await announce(stack, name, "healthy")
    assert await fixer.evaluate("svc-2") == "act"
    assert await stack.store.remediation_suspended(FLEET) is None


async def test_two_replicas_deciding_at_once_ask_for_one_restart(stack: Stack) -> None:
    cfg = config()
    one, two = Fixer(stack, cfg, replica="r1"), Fixer(stack, cfg, replica="r2")
    incident = await open_incident(stack)
    await asyncio.gather(*(f.fixer.evaluate("email-blast") for f in (one, two, one, two)))
    assert len(await stack.store.incident_actions(incident.id)) == 1


async def test_events_of_projects_another_replica_polls_are_ignored(stack: Stack) -> None:
    cfg = config()
    escalator = Escalator(
        stack.store, lambda: cfg, lambda: None, clock=stack.clock, wake=stack.relay.wake
    )
    fixer = AutoFixer(
        stack.store,
        lambda: cfg,
        escalator,
        clock=stack.clock,
        wake=stack.relay.wake,
        replica_id="r1",
        held=lambda: (),
        is_flapping=lambda _: False,
    )
    fixer.register(stack.bus)
    incident = await open_incident(stack)
    await stack.settle()
    assert await stack.store.incident_actions(incident.id) == []


async def test_an_opened_incident_is_acted_on_through_the_bus(stack: Stack) -> None:
    fixer = Fixer(stack, config())
    fixer.fixer.register(stack.bus)
    incident = await open_incident(stack)
    await stack.settle()
    [action] = await stack.store.incident_actions(incident.id)
    assert action.action == "restart"


async def test_after_a_verified_fix_the_incident_gets_time_to_close(stack: Stack) -> None:
    fixer = Fixer(stack, config())
    incident = await open_incident(stack, condition="metric:memory_percent")
    assert await fixer.evaluate() == "act"
    [action] = await stack.store.incident_actions(incident.id)
    await stack.store.start_action(
        action.id, "r1", lambda a: Event(ACTION_STARTED, stack.clock.now(), "test", {}, a.project)
    )
    await stack.store.move_action(
        action.id,
        ["running"],
        "verified",
        lambda a: Event("action.verified", stack.clock.now(), "test", {}, a.project),
    )
    await stack.clock.advance(30)
    assert await fixer.evaluate() == "wait"  # the metric has a minute to fall back
    await stack.clock.advance(31)
    assert await fixer.evaluate() == "act"  # it did not: a second attempt
    assert [a.action for a in await stack.store.incident_actions(incident.id)] == [
        "clear_cache",
        "clear_cache",
    ]


async def test_what_claude_recommends_always_waits_for_a_human(stack: Stack) -> None:
    requested = await request_action(
        stack.store, "email-blast", "restart", requested_by="claude", reason="leak suspected",
        origin="claude", needs_approval=False,
    )  # fmt: skip
    assert requested.approval is not None
    assert requested.action.needs_approval
    action = await stack.store.get_action(requested.action.id)
    assert action is not None and action.state == "awaiting_approval"


async def test_a_verified_pause_stands_down_until_a_verified_resume(stack: Stack) -> None:
    fixer = Fixer(stack, config())
    fixer.fixer.register(stack.bus)

    async def verified(action: str) -> None:
        payload = {"action_id": "a", "action": action, "requested_by": "U1"}
        event = Event("action.verified", stack.clock.now(), "test", payload, "email-blast")
        await stack.relay.emit([event])
        await stack.settle()

    await verified("pause")
    suspension = await stack.store.remediation_suspended("email-blast")
    assert suspension is not None and (suspension.reason, suspension.by) == ("paused", "U1")
    incident = await open_incident(stack)
    assert await fixer.evaluate() == "stand_down"
    await verified("resume")
    assert await stack.store.remediation_suspended("email-blast") is None
    assert await fixer.evaluate() == "act"
    assert len(await stack.store.incident_actions(incident.id)) == 1
