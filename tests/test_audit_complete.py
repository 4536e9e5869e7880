"""The audit log is complete (issue 10.11): a scripted day of acting, driven through the
real Runtime against the simulated fleet over HTTP, leaves exactly one audit row per
decision and per execution, no more, no fewer.

The script: the Auto-Fixer restarts a crashed service; an operator approves a request
(``orch approve``'s code) and the Executor runs it; another request is denied; a /control
call fails (orch holds the wrong secret, so the service answers 401); the Executor refuses
an action the project does not allow.  Five happenings, six rows: an approved action has
two, the person's decision and the Executor's run, each with its own actor.

On SQLite, and on PostgreSQL as the non-owner runtime role (``orch db grant-runtime``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agents.actions import request_action
from bot.cli_approvals import decide_at_terminal
from bot.runtime import Runtime, RuntimeOptions
from bot.settings import Settings
from demo.fleet import Fleet
from tests.acting_fleet import ENV, acting_config, running_fleet, secret_env
from tests.pg_roles import runtime_role
from tests.services import database_url
from tests.support import eventually

pytestmark = pytest.mark.timeout(90)

FINAL = ("verified", "failed")


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    async with running_fleet() as fleet:
        yield fleet


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def settings(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Settings]:
    env = {**ENV, secret_env("chatbot"): "not-chatbots-secret"}
    if request.param == "sqlite":
        yield Settings(sqlite_path=tmp_path / "orch.db", port=0, env=env)
        return
    async with runtime_role(database_url()) as role:
        yield Settings(database_url=role.runtime_url, port=0, env=env)


async def test_one_row_per_decision_and_per_execution(fleet: Fleet, settings: Settings) -> None:
    config = acting_config(fleet)
    config.project("social-media").allowed_actions = ["restart", "clear_cache"]  # no pause
    runtime = Runtime(settings, config, options=RuntimeOptions(serve_web=False))
    await runtime.start()
    store = runtime.store
    try:

        async def audited(n: int) -> None:
            async def reached() -> bool:
                return len(await store.list_audit()) >= n

            await eventually(reached, f"{n} audit rows", timeout=30)

        async def finished(action_id: str) -> None:
            async def done() -> bool:
                action = await store.get_action(action_id)
                return action is not None and action.state in FINAL

            await eventually(done, f"action {action_id} finished", timeout=30)

        # 1. A crash, fixed by the Auto-Fixer's one restart.
        await fleet.inject("email-blast", "crash")
        await audited(1)
        [autofix] = await store.list_actions(project="email-blast")
        await finished(autofix.id)

        # 2. Asked, approved at the terminal, run by the Executor.
        asked = await request_action(
            store, "social-media", "clear_cache", requested_by="U0ASKER",
            reason="cache is stale", origin="user", needs_approval=True,
        )  # fmt: skip
        assert asked.approval is not None
        assert await decide_at_terminal(store, config, asked.approval.id, "granted", "alice") == 0
        runtime.relay.wake()
        await finished(asked.action.id)

        # 3. Asked and denied: nothing runs.
        refused = await request_action(
            store, "chatbot", "restart", requested_by="U0ASKER", reason="feels slow",
            origin="user", needs_approval=True,
        )  # fmt: skip
        assert refused.approval is not None
        assert await decide_at_terminal(store, config, refused.approval.id, "denied", "bob") == 0

        # 4. A /control call the service refuses (orch's secret for chatbot is wrong).
        failing = await request_action(
            store, "chatbot", "clear_cache", requested_by="carol", reason="memory",
            origin="operator", needs_approval=False,
        )  # fmt: skip
        runtime.relay.wake()
        await finished(failing.action.id)

        # 5. An action social-media does not allow: the Executor refuses it, calls nothing.
        barred = await request_action(
            store, "social-media", "pause", requested_by="dave", reason="noisy",
            origin="operator", needs_approval=False,
        )  # fmt: skip
        runtime.relay.wake()
        await finished(barred.action.id)
        await runtime.acting.executor.drain()
        rows = list(reversed(await store.list_audit()))
    finally:
        await runtime.stop()

    assert [
        (r.entry.actor, r.entry.actor_kind, r.entry.project, r.entry.action, r.entry.decision,
         r.entry.outcome)
        for r in rows
    ] == [
        ("autofixer", "agent", "email-blast", "restart", "allowed", "verified"),
        ("alice", "operator", "social-media", "clear_cache", "granted", "won"),
        ("U0ASKER", "user", "social-media", "clear_cache", "allowed", "verified"),
        ("bob", "operator", "chatbot", "restart", "denied", "won"),
        ("carol", "operator", "chatbot", "clear_cache", "allowed", "failed"),
        ("dave", "operator", "social-media", "pause", "refused", "failed"),
    ]  # fmt: skip
    reasons = [r.entry.reason for r in rows]
    assert reasons[1:] == ["cache is stale", "cache is stale", "feels slow", "memory", "noisy"]
    assert reasons[0].startswith("auto-fix: email-blast is down")
    # Each row names what it is about; the failure and the refusal say why.
    assert rows[1].entry.approval_id == asked.approval.id
    assert rows[2].entry.action_id == asked.action.id
    assert rows[3].entry.approval_id == refused.approval.id
    assert rows[4].entry.details["error"] == (
        "/control refused: HTTP 401: unauthorized: signature does not match"
    )
    assert (
        rows[5].entry.details["error"] == "pause is not an allowed action of social-media any more"
    )
    assert fleet.service("email-blast").restarts == 1
    assert fleet.service("chatbot").restarts == fleet.service("social-media").restarts == 0
