"""The whole process acting on its own: the real Runtime against the simulated fleet over
real HTTP (signed /control calls to the services' supervisors), on SQLite.  Timings are
shortened by configuration only (1 s probes, short verification), never by mocks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agents.actions import approval_event
from agents.events import (
    ACTION_VERIFIED,
    APPROVAL_REQUESTED,
    ESCALATION_RAISED,
    INCIDENT_RESOLVED,
)
from bot.runtime import Runtime, RuntimeOptions
from bot.settings import Settings
from demo.fleet import Fleet
from tests.acting_fleet import ENV, acting_config, running_fleet
from tests.support import eventually


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    async with running_fleet() as fleet:
        yield fleet


@pytest.fixture
async def runtime(fleet: Fleet, tmp_path: Path) -> AsyncIterator[Runtime]:
    settings = Settings(sqlite_path=tmp_path / "orch.db", port=0, env=ENV)
    runtime = Runtime(settings, acting_config(fleet), options=RuntimeOptions(serve_web=False))
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


async def events_of(runtime: Runtime, kind: str, project: str) -> list[Any]:
    return await runtime.store.list_events(project=project, types=[kind], limit=100)


async def test_a_crash_is_fixed_by_one_automatic_restart(fleet: Fleet, runtime: Runtime) -> None:
    await fleet.inject("email-blast", "crash")

    async def resolved() -> bool:
        return bool(await events_of(runtime, INCIDENT_RESOLVED, "email-blast"))

    await eventually(resolved, "the crash incident resolved", timeout=30)
    assert fleet.service("email-blast").restarts == 1
    [action] = await runtime.store.list_actions(project="email-blast")
    assert (action.action, action.origin, action.state) == ("restart", "autofix", "verified")
    assert action.outcome == "accepted"
    [verified] = await events_of(runtime, ACTION_VERIFIED, "email-blast")
    [incident] = await runtime.store.list_incidents(project="email-blast")
    assert verified.incident_id == incident.id and incident.duration_s is not None
    # Nobody else was touched.
    assert fleet.service("chatbot").restarts == fleet.service("social-media").restarts == 0


async def test_a_full_disk_gets_two_restarts_then_an_escalation_and_an_approval(
    fleet: Fleet, runtime: Runtime
) -> None:
    await fleet.inject("social-media", "disk_full")

    async def asked() -> bool:
        return bool(await events_of(runtime, APPROVAL_REQUESTED, "social-media"))

    await eventually(asked, "an approval asked after two restarts", timeout=40)
    assert fleet.service("social-media").restarts == 2
    [escalation] = await events_of(runtime, ESCALATION_RAISED, "social-media")
    assert escalation.payload["reason"] == "attempts_exhausted"
    context = escalation.payload["context"]
    assert [a["state"] for a in context["actions"]] == ["failed", "failed"]
    assert context["recent_probes"] and context["recent_probes"][0]["level"] == "fail"
    assert any("No space left" in line["message"] for line in context["logs"])

    # An operator approves (as `orch approve` does): the restart runs exactly once.
    [approval] = await runtime.store.pending_approvals("social-media")
    result = await runtime.store.decide_approval(
        approval.id,
        "granted",
        "alice",
        four_eyes=False,
        actor_kind="operator",
        event_for=approval_event(escalation.incident_id, "cli"),
    )
    assert result.won
    runtime.relay.wake()

    async def third_done() -> bool:
        action = await runtime.store.get_action(approval.action_id)
        return action is not None and action.state in ("verified", "failed")

    await eventually(third_done, "the approved restart finished", timeout=30)
    assert fleet.service("social-media").restarts == 3
    # Still broken (the disk is full): no fourth restart, one escalation.
    assert len(await events_of(runtime, ESCALATION_RAISED, "social-media")) == 1
    actions = await runtime.store.list_actions(project="social-media")
    assert len(actions) == 3


async def test_a_project_failing_forever_gets_three_restarts_then_is_left_alone(
    fleet: Fleet, tmp_path: Path
) -> None:
    config = acting_config(fleet)
    config.project("social-media").remediation = config.defaults.remediation.model_copy(
        update={"attempts_per_incident": 10, "verify_timeout": 1.0}
    )
    settings = Settings(sqlite_path=tmp_path / "orch.db", port=0, env=ENV)
    options = RuntimeOptions(serve_web=False)
    await fleet.inject("social-media", "disk_full")
    runtime = Runtime(settings, config, options=options)
    await runtime.start()
    try:

        async def escalated() -> bool:  # written right after the suspension
            return bool(await events_of(runtime, ESCALATION_RAISED, "social-media"))

        await eventually(escalated, "auto-fix suspended and escalated", timeout=40)
        assert await runtime.store.remediation_suspended("social-media") is not None
        assert fleet.service("social-media").restarts == 3
        [escalation] = await events_of(runtime, ESCALATION_RAISED, "social-media")
        assert escalation.payload["reason"] == "budget_exhausted"
    finally:
        await runtime.stop()

    # orch restarts: the suspension is in the store, so nothing more is tried.
    again = Runtime(settings, config, options=options)
    await again.start()
    try:
        decisions = await again.acting.autofixer.sweep()
        assert [d.kind for d in decisions] == ["stand_down"]
        assert fleet.service("social-media").restarts == 3
    finally:
        await again.stop()
