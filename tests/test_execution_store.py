"""Contract tests of ``storage.execution_store`` on every backend (SQLite and PostgreSQL):
claiming runnable actions, compare-and-set moves with their events, and the queries the
Action Executor and the Auto-Fixer read.

The backends and their fixtures are ``tests.test_store_contract``'s (one list, reused).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

import pytest

from agents.events import (
    ACTION_FAILED,
    ACTION_REQUESTED,
    ACTION_STARTED,
    ACTION_SUCCEEDED,
    ACTION_VERIFIED,
    APPROVAL_GRANTED,
    Event,
)
from storage.autonomy_store import Approval, AuditEntry
from storage.base import Store
from storage.execution_store import FINISHED, IN_FLIGHT
from storage.operations_store import ActionEventFor, ActionRequest
from tests.test_store_contract import (  # noqa: F401  (fixtures, used by name)
    OpenStore,
    backend_name,
    open_new,
    store,
)

pytestmark = pytest.mark.timeout(30)

_ACTION_TYPES = [ACTION_REQUESTED, ACTION_STARTED, ACTION_SUCCEEDED, ACTION_VERIFIED, ACTION_FAILED]


def announce(kind: str, calls: list[ActionRequest] | None = None) -> ActionEventFor:
    """The event the executor writes with a move, built from the row as stored."""

    def build(row: ActionRequest) -> Event:
        if calls is not None:
            calls.append(row)
        payload = {"action_id": row.id, "action": row.action, "state": row.state,
                   "outcome": row.outcome, "error": row.error}  # fmt: skip
        ts = row.finished_at or row.started_at or row.created_at
        return Event(kind, ts, "test", payload, row.project, row.incident_id)

    return build


def explode(row: ActionRequest) -> Event:
    raise RuntimeError("event_for failed")


async def request(
    store: Store,  # noqa: F811
    project: str = "email-blast",
    *,
    needs_approval: bool = False,
    incident_id: str | None = None,
    origin: str = "operator",
) -> ActionRequest:
    return await store.request_action(
        project, "restart", "U0OPS", "down", needs_approval, announce(ACTION_REQUESTED),
        incident_id=incident_id, origin=origin,
    )  # fmt: skip


async def approve(store: Store, action: ActionRequest) -> Approval:  # noqa: F811
    def approval_event(row: Approval) -> Event:
        return Event(APPROVAL_GRANTED, row.decided_at or row.created_at, "test",
                     {"approval_id": row.id, "action_id": row.action_id}, row.project)  # fmt: skip

    approval = await store.create_approval(
        action.id, action.project, action.action, action.requested_by, "down", 1800,
        approval_event,
    )  # fmt: skip
    result = await store.decide_approval(
        approval.id, "granted", "U0BOSS", four_eyes=False, event_for=approval_event
    )
    assert result.won and result.approval is not None
    return result.approval


async def action_events(store: Store, action_id: str) -> list[Event]:  # noqa: F811
    events = await store.list_events(types=_ACTION_TYPES, limit=1000)
    return [e for e in events if e.payload.get("action_id") == action_id]


async def test_only_runnable_actions_are_claimed(store: Store) -> None:  # noqa: F811
    before = await store.db_now()
    calls: list[ActionRequest] = []
    waiting = await request(store, needs_approval=True)
    assert await store.start_action(waiting.id, "r1", announce(ACTION_STARTED, calls)) is None
    assert await store.start_action("nope", "r1", announce(ACTION_STARTED, calls)) is None
    assert calls == []

    approved = await request(store, "chatbot", needs_approval=True)
    await approve(store, approved)
    running = await store.start_action(approved.id, "r1", announce(ACTION_STARTED, calls))
    assert running is not None and calls == [running]
    assert (running.state, running.executor, running.outcome) == ("running", "r1", None)
    assert running.started_at is not None and running.started_at >= before
    assert running.finished_at is None
    assert await store.get_action(approved.id) == running

    direct = await request(store, "social-media")
    claimed = await store.start_action(direct.id, "r2", announce(ACTION_STARTED))
    assert claimed is not None and claimed.state == "running" and claimed.executor == "r2"
    # Claimed already: nobody gets it again, and nothing is written.
    assert await store.start_action(direct.id, "r1", announce(ACTION_STARTED, calls)) is None
    assert len(calls) == 1
    # A failing event_for rolls the claim back.
    other = await request(store, "other")
    with pytest.raises(RuntimeError):
        await store.start_action(other.id, "r1", explode)
    still = await store.get_action(other.id)
    assert still is not None and still.state == "requested" and still.executor is None
    requested, started = await action_events(store, approved.id)
    assert (requested.type, started.type) == (ACTION_REQUESTED, ACTION_STARTED)
    assert started.payload["state"] == "running"
    waiting_now = await store.get_action(waiting.id)
    assert waiting_now is not None and waiting_now.state == "requested"


async def test_denied_and_awaiting_actions_are_not_claimed(store: Store) -> None:  # noqa: F811
    action = await request(store, needs_approval=True)
    approval = await store.create_approval(
        action.id, action.project, "restart", "U0OPS", "down", 1800,
        lambda a: Event("approval.requested", a.created_at, "test", {}, a.project),
    )  # fmt: skip
    awaiting = await store.get_action(action.id)
    assert awaiting is not None and awaiting.state == "awaiting_approval"
    assert await store.start_action(action.id, "r1", announce(ACTION_STARTED)) is None
    await store.decide_approval(
        approval.id, "denied", "U0BOSS", four_eyes=False,
        event_for=lambda a: Event("approval.denied", a.created_at, "test", {}, a.project),
    )  # fmt: skip
    assert await store.start_action(action.id, "r1", announce(ACTION_STARTED)) is None


async def test_exactly_one_of_ten_concurrent_claims(open_new: OpenStore) -> None:  # noqa: F811
    first, second = await open_new(), await open_new()  # two replicas on one database
    action = await request(first)
    results = await asyncio.gather(
        *(
            (first if i % 2 else second).start_action(action.id, f"r{i}", announce(ACTION_STARTED))
            for i in range(10)
        )
    )
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    stored = await first.get_action(action.id)
    assert stored == winners[0] and stored is not None and stored.state == "running"
    assert [e.type for e in await action_events(first, action.id)] == [
        ACTION_REQUESTED,
        ACTION_STARTED,
    ]


async def test_moves_are_compare_and_set_with_their_events(store: Store) -> None:  # noqa: F811
    action = await request(store, incident_id="inc-1")
    running = await store.start_action(action.id, "r1", announce(ACTION_STARTED))
    assert running is not None
    calls: list[ActionRequest] = []

    verifying = await store.move_action(
        action.id, ["running"], "verifying", announce(ACTION_SUCCEEDED, calls),
        outcome="accepted",
    )  # fmt: skip
    assert verifying is not None and calls == [verifying]
    assert (verifying.state, verifying.outcome, verifying.error) == ("verifying", "accepted", None)
    assert verifying.finished_at is None and verifying.started_at == running.started_at
    # The row has moved on: a second mover from "running" finds nothing and writes nothing.
    late = await store.move_action(
        action.id, ["running"], "failed", announce(ACTION_FAILED, calls), error="late"
    )
    assert late is None and len(calls) == 1

    verified = await store.move_action(
        action.id, ["verifying"], "verified", announce(ACTION_VERIFIED, calls)
    )
    assert verified is not None and verified.state == "verified"
    assert verified.outcome == "accepted"  # kept: only given fields change
    assert isinstance(verified.finished_at, datetime)
    assert verified.started_at is not None and verified.finished_at >= verified.started_at
    assert await store.get_action(action.id) == verified

    events = await action_events(store, action.id)
    assert [e.type for e in events] == [ACTION_REQUESTED, ACTION_STARTED, ACTION_SUCCEEDED,
                                        ACTION_VERIFIED]  # fmt: skip
    assert {e.incident_id for e in events[1:]} == {"inc-1"}
    assert [e.payload["state"] for e in events[1:]] == ["running", "verifying", "verified"]


async def test_unknown_outcome_then_failure_keeps_and_replaces_error(store: Store) -> None:  # noqa: F811
    action = await request(store)
    await store.start_action(action.id, "r1", announce(ACTION_STARTED))
    unknown = await store.move_action(
        action.id, ["running"], "verifying", announce(ACTION_STARTED),
        outcome="unknown", error="outcome unknown: timed out",
    )  # fmt: skip
    assert unknown is not None and unknown.outcome == "unknown"
    assert unknown.error == "outcome unknown: timed out" and unknown.finished_at is None
    failed = await store.move_action(
        action.id, ["running", "verifying"], "failed", announce(ACTION_FAILED),
        error="still failing after 60 s: refused",
    )  # fmt: skip
    assert failed is not None and failed.state == "failed" and failed.outcome == "unknown"
    assert failed.error == "still failing after 60 s: refused" and failed.finished_at is not None
    # Finished is final.
    for to in ("verifying", "verified", "failed"):
        assert (
            await store.move_action(
                action.id, ["running", "verifying"], to, announce(ACTION_FAILED)
            )
            is None
        )


async def test_refused_moves_write_nothing(store: Store) -> None:  # noqa: F811
    action = await request(store)
    await store.start_action(action.id, "r1", announce(ACTION_STARTED))
    with pytest.raises(ValueError):
        await store.move_action(action.id, ["running"], "running", announce(ACTION_STARTED))
    with pytest.raises(ValueError):
        await store.move_action(action.id, ["running"], "requested", announce(ACTION_STARTED))
    with pytest.raises(ValueError):
        await store.move_action(
            action.id, ["running"], "failed", announce(ACTION_FAILED), outcome="maybe"
        )
    with pytest.raises(RuntimeError):
        await store.move_action(action.id, ["running"], "failed", explode, error="x")
    # A runnable action may fail straight away (the executor refuses it: no call made).
    other = await request(store, "chatbot")
    refused = await store.move_action(
        other.id, ["requested"], "failed", announce(ACTION_FAILED), error="not allowed"
    )
    assert refused is not None and refused.finished_at is not None and refused.started_at is None
    still = await store.get_action(action.id)
    assert still is not None and still.state == "running" and still.error is None
    assert [e.type for e in await action_events(store, action.id)] == [
        ACTION_REQUESTED,
        ACTION_STARTED,
    ]


async def test_a_finished_action_and_its_audit_row_are_written_together(
    store: Store,  # noqa: F811
) -> None:
    def audit_row(kind: str) -> Callable[[ActionRequest], AuditEntry]:
        def build(row: ActionRequest) -> AuditEntry:
            return AuditEntry(actor="auto-fixer", actor_kind=kind, action=row.action,
                              decision="allowed", project=row.project, outcome=row.state,
                              action_id=row.id)  # fmt: skip

        return build

    action = await request(store)
    await store.start_action(action.id, "r1", announce(ACTION_STARTED))
    # An audit row that cannot be written: the action stays running, nothing is written.
    with pytest.raises(ValueError, match="actor_kind"):
        await store.move_action(action.id, ["running"], "failed", announce(ACTION_FAILED),
                                error="x", audit=audit_row("nobody"))  # fmt: skip
    still = await store.get_action(action.id)
    assert still is not None and still.state == "running"
    assert await store.list_audit(project="email-blast") == []
    assert ACTION_FAILED not in [e.type for e in await action_events(store, action.id)]
    final = await store.move_action(action.id, ["running"], "failed", announce(ACTION_FAILED),
                                    error="x", audit=audit_row("agent"))  # fmt: skip
    assert final is not None and final.state == "failed"
    (row,) = await store.list_audit(project="email-blast")
    assert (row.entry.action_id, row.entry.outcome) == (action.id, "failed")


async def test_incident_actions_oldest_first(store: Store) -> None:  # noqa: F811
    first = await request(store, incident_id="inc-1", origin="autofix")
    await request(store, incident_id="inc-2")
    await request(store)
    second = await request(store, "email-blast", incident_id="inc-1", origin="user")
    await store.start_action(first.id, "r1", announce(ACTION_STARTED))
    found = await store.incident_actions("inc-1")
    assert [a.id for a in found] == [first.id, second.id]
    assert [(a.origin, a.state) for a in found] == [("autofix", "running"), ("user", "requested")]
    assert await store.incident_actions("inc-none") == []


async def test_actions_in_states_oldest_first(store: Store) -> None:  # noqa: F811
    a = await request(store, "a")
    b = await request(store, "b", needs_approval=True)
    c = await request(store, "c")
    await approve(store, b)
    await store.start_action(c.id, "r1", announce(ACTION_STARTED))
    assert [x.id for x in await store.actions_in(["requested", "approved"])] == [a.id, b.id]
    assert [x.id for x in await store.actions_in(["requested", "approved"], limit=1)] == [a.id]
    assert [x.id for x in await store.actions_in(sorted(IN_FLIGHT))] == [a.id, b.id, c.id]
    assert await store.actions_in(sorted(FINISHED)) == []
    assert await store.actions_in([]) == []
    with pytest.raises(ValueError):
        await store.actions_in(["requested"], limit=-1)
