"""SIGTERM during an in-flight restart and a pending approval (issue 10, point 3).

Two real ``orch run`` processes on PostgreSQL and Redis Streams, the fake Slack Web API,
and two contract services (``orch_kit``) in this process: ``alpha`` crash-loops and its
``/control`` restart is held open until the test lets it answer; ``bravo``'s restart
needs an approval.  Replica 1 holds both; replica 2 has joined and holds nothing.  SIGTERM
lands on replica 1 while alpha's restart is in flight and bravo's approval card waits.

What is decided (``agents.executor``): the call in flight is let finish and its answer
recorded by replica 1; its verification is handed back, not held for.  Replica 1 exits 0;
replica 2 takes both projects and verifies alpha; an Approve click on replica 2's Slack
endpoint runs bravo's restart.  Counted at the boundaries: one ``/control`` call per
project, one card per incident, one approval card, nothing posted twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from agents.actions import request_action
from agents.executor import ActionExecutor, lock_name
from agents.probe import ProbeClient
from bot.config import Config
from orch_kit import Callbacks, Contract, ControlRequest, Health, LogEntry, LogQuery
from storage.autonomy_store import Approval
from storage.operations_store import ActionRequest
from storage.postgres import PostgresStore
from tests.fake_slack import FakeSlack, block_action, interactive_body, signed_headers
from tests.redis_database import own_redis_database
from tests.support import Stack, eventually

pytestmark = pytest.mark.timeout(120)

SIGNING = "sigterm-signing-secret"
BOSS = "U0BOSS"
NAMES = ("alpha", "bravo")


class Service:
    """One contract service; every POST /control is counted as it arrives, before the
    kit authenticates it.  While ``hold`` is set, a restart answers only once released."""

    def __init__(self, name: str, now: Callable[[], float] = time.time) -> None:
        self.name = name
        self._now = now  # the kit refuses signatures from outside its clock's window
        self.secret = f"secret-{name}-{uuid.uuid4().hex[:8]}"
        self.healthy = True
        self.hold = False
        self.restarts_heal = True  # a restart makes it healthy
        self.release = asyncio.Event()
        self.arrived = asyncio.Event()
        self.control_calls: list[dict[str, Any]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        callbacks = Callbacks(
            health=lambda: Health("pass") if self.healthy else Health("fail", output="crashed"),
            metrics=lambda: {}, status=lambda: {"state": "running", "queue_depth": 0,
                                                "uptime_s": 1},
            logs=self._logs, control=self._control,
        )  # fmt: skip
        app = web.Application(middlewares=[self._count])
        Contract(callbacks, secret=self.secret.encode(), now=self._now).mount(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{next(iter(self._runner.addresses))[1]}"

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _count(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/control":
            self.control_calls.append(json.loads(await request.read()))
            self.arrived.set()
        return await handler(request)

    def _logs(self, _query: LogQuery) -> list[LogEntry]:
        return []

    async def _control(self, request: ControlRequest) -> dict[str, Any]:
        if self.hold:
            await self.release.wait()
        self.healthy = self.restarts_heal
        return {}


class Replica:
    """``orch run`` in its own process; its stderr read on a thread, kept for waits and
    for the failure report."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "run"], env=env, cwd=workdir,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._grew = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = 0

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._grew:
                self.lines.append(line)
                self._grew.notify_all()

    def _line_with(self, needles: tuple[str, ...], timeout: float) -> str:
        def found() -> str | None:
            return next((ln for ln in self.lines if all(n in ln for n in needles)), None)

        with self._grew:
            if not self._grew.wait_for(lambda: found() is not None, timeout):
                raise AssertionError(f"{needles} not logged within {timeout} s")
            line = found()
            assert line is not None
            return line

    async def wait_for(self, *needles: str, timeout: float = 30) -> str:
        return await asyncio.to_thread(self._line_with, needles, timeout)

    async def started(self) -> None:
        line = await self.wait_for("orch: watching", "/healthz on")
        match = re.search(r":(\d+)\s*$", line)
        assert match, line
        self.port = int(match.group(1))

    def owns(self, owner: str) -> bool:
        return f"-{self.proc.pid}-" in owner  # replica ids are host-pid-random

    async def exit_code(self, timeout: float = 60) -> int:
        return await asyncio.to_thread(self.proc.wait, timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(10)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


@pytest.fixture
async def redis_db(redis_url: str) -> AsyncIterator[str]:
    async with own_redis_database(redis_url) as url:
        yield url


def config_text(services: dict[str, Service]) -> str:
    groups = {
        f"{n}-ops": {"channel": f"#ops-{n}", "approvers": [BOSS], "projects": [n]} for n in NAMES
    }
    projects = [
        {"name": n, "url": s.url, "control_secret_env": f"{n.upper()}_CONTROL_SECRET",
         "allowed_actions": ["restart"], "needs_approval": ["restart"] if n == "bravo" else []}
        for n, s in services.items()
    ]  # fmt: skip
    defaults = {
        "interval": "500ms", "timeout": "400ms", "recheck_interval": "200ms",
        "failure_threshold": 2,
        # alpha's restart is held open by the test: its own timeout must not end it first.
        "remediation": {"backoff": "1s", "control_timeout": "20s", "verify_timeout": "20s",
                        "verify_interval": "250ms"},
    }  # fmt: skip
    return json.dumps({"defaults": defaults, "orchestrators": groups, "projects": projects})


class World:
    """The fake Slack, the two services, the shared store, and the replicas started."""

    def __init__(self, slack: FakeSlack, services: dict[str, Service], store: PostgresStore,
                 env: dict[str, str], workdir: Path) -> None:  # fmt: skip
        self.slack, self.store, self.env, self.workdir = slack, store, env, workdir
        self.alpha, self.bravo = services["alpha"], services["bravo"]
        self.replicas: list[Replica] = []

    async def replica(self) -> Replica:
        replica = Replica(self.env, self.workdir)
        self.replicas.append(replica)
        await replica.started()
        return replica

    def posts(self) -> list[dict[str, Any]]:
        return [c.params for c in self.slack.calls_to("chat.postMessage")]

    def approval_cards(self) -> list[dict[str, Any]]:
        return [p for p in self.posts() if "approval_approve" in json.dumps(p)]

    async def owned_by(self, replica: Replica) -> bool:
        owners = await self.store.lease_owners()
        return all(replica.owns(owners.get(f"project:{n}", "")) for n in NAMES)

    async def state_of(self, action_id: str) -> str | None:
        action = await self.store.get_action(action_id)
        return action.state if action else None

    async def restart_in_flight(self) -> tuple[Replica, Replica, ActionRequest, Approval]:
        """Replica 1 alone polls, decides and acts for both projects: alpha crash-loops
        and its restart is held open at /control; bravo's restart awaits approval, its
        card posted.  Then replica 2 joins (within the slack of a fair share it takes
        nothing): (replica 1, replica 2, alpha's restart, bravo's approval)."""
        first = await self.replica()
        for name in NAMES:
            await first.wait_for(name, "project.status_changed", "unknown → healthy")
        await self.store.open()
        assert await self.owned_by(first)
        self.alpha.hold = True
        self.alpha.healthy = self.bravo.healthy = False
        await asyncio.wait_for(self.alpha.arrived.wait(), 30)
        await eventually(lambda: len(self.approval_cards()) == 1, "bravo's approval card", 30)
        [pending] = await self.store.pending_approvals("bravo")
        [restart] = await self.store.list_actions(project="alpha")
        assert restart.state == "running" and first.owns(restart.executor or "")
        second = await self.replica()
        assert await self.owned_by(first)
        return first, second, restart, pending

    def assert_posted_once(self) -> int:
        """One card per incident, one approval card, no Slack message twice."""
        cards = [p for p in self.posts() if "thread_ts" not in p]
        for name in NAMES:
            assert len([c for c in cards if f"{name} is down" in json.dumps(c)]) == 1, name
        assert len(cards) == 2 and len(self.approval_cards()) == 1
        sent = [json.dumps(p, sort_keys=True) for p in self.posts()]
        assert len(sent) == len(set(sent)), "a Slack message was posted twice"
        return len(sent)


@pytest.fixture
async def world(tmp_path: Path, pg_schema: tuple[str, str], redis_db: str) -> AsyncIterator[World]:
    url, schema = pg_schema
    slack = FakeSlack()
    services = {n: Service(n) for n in NAMES}
    await slack.start()
    for service in services.values():
        await service.start()
    (tmp_path / "projects.yml").write_text(config_text(services))
    withheld = ("SLACK_", "ANTHROPIC_", "ORCH_", "DATABASE_", "REDIS_")
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(withheld)}
    env = inherited | {
        "ORCH_CONFIG": str(tmp_path / "projects.yml"), "ORCH_SQLITE_PATH": str(tmp_path / "x.db"),
        "DATABASE_URL": url, "REDIS_URL": redis_db, "PORT": "0",
        "SLACK_BOT_TOKEN": "xoxb-test", "SLACK_SIGNING_SECRET": SIGNING,
        "SLACK_API_URL": slack.api_url,
        **{f"{n.upper()}_CONTROL_SECRET": s.secret for n, s in services.items()},
    }  # fmt: skip
    world = World(slack, services, PostgresStore(url.split("?")[0], schema=schema), env, tmp_path)
    try:
        yield world
    finally:
        for i, replica in enumerate(world.replicas, start=1):
            replica.kill()
            print(f"--- replica {i} (pid {replica.proc.pid}) ---", *replica.lines[-60:], sep="")
        await world.store.close()
        for service in services.values():
            await service.stop()
        await slack.stop()


async def test_sigterm_mid_restart_hands_work_back_without_repeating_it(world: World) -> None:
    first, second, restart_a, pending = await world.restart_in_flight()
    alpha, bravo, store = world.alpha, world.bravo, world.store

    # SIGTERM while alpha's /control call is in flight; the call answers during shutdown.
    sigterm_at = time.monotonic()
    first.proc.send_signal(signal.SIGTERM)
    await first.wait_for("executor", "stopping", "1 action(s) in flight")
    released_at = time.monotonic()
    alpha.release.set()
    assert await first.exit_code() == 0
    exited_at = time.monotonic()

    # Replica 1 recorded the answer ("accepted" comes only from the call; a takeover would
    # say "unknown") and handed the verification back instead of waiting on it.
    await first.wait_for(restart_a.id, "verification handed back", timeout=5)
    handed = await store.get_action(restart_a.id)
    assert handed is not None and handed.outcome == "accepted"

    takeover_s = await eventually(lambda: world.owned_by(second), "replica 2 takes over", 20)

    async def alpha_verified() -> bool:
        return await world.state_of(restart_a.id) == "verified"

    await eventually(alpha_verified, "alpha's restart verified by replica 2", 20)
    verified_s = time.monotonic() - exited_at

    # Approve bravo's restart through replica 2's Slack endpoint.
    [card] = world.approval_cards()
    values = {e["value"] for b in card["blocks"] if b["type"] == "actions" for e in b["elements"]}
    assert values == {pending.id}
    click = block_action("approval_approve", pending.id, user=BOSS,
                         response_url=world.slack.response_url("click"))  # fmt: skip
    body = interactive_body(click)
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"http://127.0.0.1:{second.port}/slack/events", data=body,
                  headers=signed_headers(SIGNING, body)) as response,
    ):  # fmt: skip
        assert response.status == 200

    async def bravo_verified() -> bool:
        return await world.state_of(pending.action_id) == "verified"

    await eventually(bravo_verified, "bravo's approved restart verified", 30)

    async def both_resolved() -> bool:
        return not await store.list_incidents(open_only=True)

    await eventually(both_resolved, "both incidents resolved", 30)
    second.proc.send_signal(signal.SIGTERM)
    assert await second.exit_code() == 0

    # Counted at the services: one /control call each, the action id as its key.
    assert [c["action"] for c in alpha.control_calls] == ["restart"]
    assert [c["idempotency_key"] for c in alpha.control_calls] == [restart_a.id]
    assert [c["idempotency_key"] for c in bravo.control_calls] == [pending.action_id]
    sent = world.assert_posted_once()
    # One audit row per executed action, written by whoever finished it.
    audit = [r.entry for r in await store.list_audit()]
    runs = [e for e in audit if e.action_id == restart_a.id and e.decision == "allowed"]
    assert len(runs) == 1 and second.owns(str(runs[0].details.get("executor")))
    print(
        f"SIGTERM→exit {exited_at - sigterm_at:.2f} s (release→exit"
        f" {exited_at - released_at:.2f} s); exit→takeover {takeover_s:.2f} s;"
        f" exit→alpha verified {verified_s:.2f} s; /control alpha {len(alpha.control_calls)},"
        f" bravo {len(bravo.control_calls)}; Slack posts {sent}"
    )


async def test_killed_mid_restart_the_heir_verifies_and_never_resends(world: World) -> None:
    """Past the platform's grace (SIGKILL, an OOM kill) nothing is handed back: the heir
    waits for the leases to expire, records the outcome as unknown, checks and verifies."""
    first, second, restart_a, pending = await world.restart_in_flight()
    first.proc.kill()
    assert await first.exit_code() == -signal.SIGKILL
    killed_at = time.monotonic()
    world.alpha.release.set()  # the restart happened; its answer died with replica 1
    world.alpha.healthy = True

    takeover_s = await eventually(lambda: world.owned_by(second), "replica 2 takes over", 40)

    async def alpha_verified() -> bool:
        return await world.state_of(restart_a.id) == "verified"

    await eventually(alpha_verified, "alpha's restart verified by replica 2", 40)
    verified_s = time.monotonic() - killed_at
    final = await world.store.get_action(restart_a.id)
    assert final is not None and final.outcome == "unknown"
    assert final.error is not None and "stopped during the call; not sent again" in final.error
    assert len(world.alpha.control_calls) == 1
    assert await world.store.pending_approvals("bravo") == [pending]  # still waiting
    sent = world.assert_posted_once()
    print(f"SIGKILL→takeover {takeover_s:.2f} s; SIGKILL→alpha verified {verified_s:.2f} s;"
          f" /control alpha {len(world.alpha.control_calls)}; Slack posts {sent}")  # fmt: skip


async def test_stop_hands_verification_back_at_once_and_the_heir_finishes_it(
    stack: Stack,
) -> None:
    """In one process, on the fake clock: a stop during verification waits neither for
    ``verify_timeout`` (the clock never moves) nor for the grace (an hour); the row stays
    ``verifying`` with its lock free, and another executor verifies it without calling
    /control again.  The lock was taken for one heartbeat ttl, not the whole budget."""
    alpha = Service("alpha", now=lambda: stack.clock.now().timestamp())
    await alpha.start()
    config = Config.model_validate({"projects": [{
        "name": "alpha", "url": alpha.url, "control_secret_env": "ALPHA_CONTROL_SECRET",
        "allowed_actions": ["restart"],
    }]})  # fmt: skip
    clock, store = stack.clock, stack.store

    def executor(replica: str, session: aiohttp.ClientSession) -> ActionExecutor:
        return ActionExecutor(
            store, lambda: config, session, ProbeClient(session, clock).probe,
            lambda _: alpha.secret.encode(), replica, clock=clock, wake=lambda: None,
            stop_grace=3600.0,  # a /control call could take this long; a verification never
        )  # fmt: skip

    try:
        async with aiohttp.ClientSession() as session:
            first = executor("r1", session)
            first.renewed_by_heartbeat(15.0)
            requested = await request_action(
                store, "alpha", "restart", requested_by="U0OPS", reason="test",
                origin="operator", needs_approval=False,
            )  # fmt: skip
            action_id = requested.action.id
            alpha.healthy = False
            alpha.restarts_heal = False  # still failing after the restart: verification goes on
            assert first.submit(action_id) is not None
            await eventually(lambda: clock.sleepers > 0, "the verification to wait")
            [lock] = await store.leases([lock_name("alpha")])
            assert lock.expires_at is not None  # one heartbeat ttl, not lease_ttl's 115 s
            assert (lock.expires_at - await store.db_now()).total_seconds() <= 15.0

            await first.stop()
            handed = await store.get_action(action_id)
            assert handed is not None and handed.state == "verifying"
            assert handed.outcome == "accepted"  # the call's answer, recorded before stopping
            assert await store.lease_owners() == {} and clock.monotonic() == 0

            alpha.healthy = True
            final = await executor("r2", session).run(action_id)
            assert final is not None and (final.state, final.outcome) == ("verified", "accepted")
            assert len(alpha.control_calls) == 1
    finally:
        await alpha.stop()
