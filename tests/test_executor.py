"""The Action Executor against real services over HTTP: the demo fleet (``demo.services``)
and small contract servers written here (``orch_kit.Contract``) whose ``/control`` hangs,
answers 502 after acting, or waits at a gate; plus the command adapter and redaction.

Time that matters is a FakeClock (the executor's verification waits and its sweep); the
only real waits are the short timeouts under test, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from agents.actions import approval_event, request_action
from agents.clock import FakeClock
from agents.command_adapter import OUTPUT_LIMIT, run_command
from agents.events import (
    ACTION_FAILED,
    ACTION_STARTED,
    ACTION_SUCCEEDED,
    ACTION_VERIFIED,
    Event,
)
from agents.executor import ActionExecutor, lock_name
from agents.executor_calls import classify
from agents.probe import ProbeClient
from agents.redact import RULES, redact
from bot.config import Config
from bot.settings import Settings
from demo.fleet import Fleet
from demo.services.listener import Listener
from orch_kit import Callbacks, Check, Contract, ControlRequest, Health, LogEntry, LogQuery
from storage.base import Store
from tests.support import Stack, eventually
from tests.test_store_contract import postgres_backend

pytestmark = pytest.mark.timeout(30)

SECRET = b"executor-test-secret"
ACTION_TYPES = [ACTION_STARTED, ACTION_SUCCEEDED, ACTION_VERIFIED, ACTION_FAILED]


# -- helpers ----------------------------------------------------------------------------


class Holder:
    """The current config, as the runtime's reload would swap it."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def __call__(self) -> Config:
        return self.config


def config_of(*projects: dict[str, Any], **defaults: Any) -> Config:
    return Config.model_validate({"defaults": defaults, "projects": list(projects)})


def contract(name: str, url: str, control_url: str | None = None, **more: Any) -> dict[str, Any]:
    entry = {"name": name, "url": url, "control_url": control_url or url,
             "control_secret_env": "TEST_CONTROL_SECRET",
             "allowed_actions": ["restart", "pause", "resume", "clear_cache"]}  # fmt: skip
    return entry | more


def executor(
    store: Store,
    clock: FakeClock,
    session: aiohttp.ClientSession,
    config: Callable[[], Config],
    *,
    replica: str = "r1",
    secret: bytes | None = SECRET,
    wake: Callable[[], None] = lambda: None,
) -> ActionExecutor:
    return ActionExecutor(
        store, config, session, ProbeClient(session, clock).probe, lambda _: secret, replica,
        clock=clock, wake=wake, stop_grace=2.0,
    )  # fmt: skip


async def ask(
    store: Store, project: str, action: str = "restart", *, origin: str = "operator",
    needs_approval: bool = False, incident_id: str | None = "inc-1",
) -> str:  # fmt: skip
    requested = await request_action(
        store, project, action, requested_by="U0OPS", reason="test", origin=origin,
        needs_approval=needs_approval, incident_id=incident_id, source="test",
    )  # fmt: skip
    return requested.action.id


async def events_of(store: Store, action_id: str) -> list[Event]:
    events = await store.list_events(types=ACTION_TYPES, limit=1000)
    return [e for e in events if e.payload.get("action_id") == action_id]


async def state_of(store: Store, action_id: str) -> str | None:
    action = await store.get_action(action_id)
    return action.state if action else None


async def finish(
    clock: FakeClock, work: Awaitable[Any], step: float = 2.0, sleepers: int = 0
) -> Any:
    """Run ``work`` to the end, advancing the clock by ``step`` whenever the executor
    sleeps (more than ``sleepers`` sleepers, e.g. a sweep loop, are parked)."""
    task = asyncio.ensure_future(work)
    for _ in range(500):
        await eventually(lambda: task.done() or clock.sleepers > sleepers, "a sleep or the end")
        if task.done():
            return task.result()
        await clock.advance(step)
    raise AssertionError("the work never finished")


class FakeProject:
    """A contract service (orch_kit) whose ``/control`` does what a test needs: ``ok``,
    ``hang`` (until released), ``gate`` (waits for ``gate``, then acts), ``502`` (acts,
    then answers 502 as a proxy would).  It counts every authentic call it received."""

    def __init__(self, clock: FakeClock, mode: str = "ok", *, healthy: bool = True,
                 gate: asyncio.Event | None = None, shared: dict[str, int] | None = None,
                 heal_after_probes: int = 0) -> None:  # fmt: skip
        self.mode = mode
        self.healthy = healthy
        self.state = "running"
        self.calls = 0
        self.heal_after_probes = heal_after_probes  # after an action: unhealthy probes left
        self.gate = gate or asyncio.Event()
        self.shared = shared if shared is not None else {"now": 0, "max": 0}
        callbacks = Callbacks(health=self._health, metrics=lambda: {"cpu_percent": 1.0},
                              status=lambda: {"state": self.state, "queue_depth": 0,
                                              "uptime_s": 1.0},
                              logs=self._logs, control=self._control)  # fmt: skip
        self.contract = Contract(callbacks, secret=SECRET, now=lambda: clock.now().timestamp())
        self.listener = Listener(self._app, "127.0.0.1", 0)

    @property
    def url(self) -> str:
        return self.listener.url

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._bad_gateway])
        self.contract.mount(app)
        return app

    @web.middleware
    async def _bad_gateway(self, request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        if request.path == "/control" and self.mode == "502" and response.status == 202:
            return web.json_response({"error": "upstream closed"}, status=502)
        return response

    def _health(self) -> Health:
        if self.healthy and self.heal_after_probes > 0:
            self.heal_after_probes -= 1
            return Health("fail", output="still starting")
        check = Check("pass") if self.healthy else Check("fail", "worker down")
        return Health.from_checks({"app:ok": [check]})

    def _logs(self, query: LogQuery) -> list[LogEntry]:
        return []

    async def _control(self, request: ControlRequest) -> dict[str, Any]:
        self.calls += 1
        self.shared["now"] += 1
        self.shared["max"] = max(self.shared["max"], self.shared["now"])
        try:
            if self.mode in ("hang", "gate"):
                await self.gate.wait()
        finally:
            self.shared["now"] -= 1
        if request.action == "pause":
            self.state = "paused"
        elif request.action in ("restart", "resume"):
            self.state, self.healthy = "running", True
        return {}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def fakes(clock: FakeClock) -> AsyncIterator[Callable[..., Awaitable[FakeProject]]]:
    started: list[FakeProject] = []

    async def make(*args: Any, **kwargs: Any) -> FakeProject:
        fake = FakeProject(clock, *args, **kwargs)
        await fake.listener.start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.gate.set()  # release hung handlers before closing
        await fake.listener.stop()


@pytest.fixture
async def fleet(clock: FakeClock) -> AsyncIterator[Fleet]:
    # Its own clock (same wall time, so signatures agree): the executor's sleeps are then
    # the only sleepers on ``clock``.
    async with Fleet.ephemeral(
        ["email-blast", "chatbot"], {"email-blast": SECRET, "chatbot": SECRET},
        clock=FakeClock(), starting_s=0,
    ) as running:  # fmt: skip
        yield running


def fleet_config(fleet: Fleet, **defaults: Any) -> Config:
    return config_of(
        *(contract(n, fleet.url(n), fleet.control_url(n)) for n in ("email-blast", "chatbot")),
        **defaults,
    )


# -- the demo fleet: the whole path ----------------------------------------------------


async def test_crash_restart_runs_once_and_is_verified(
    stack: Stack, session: aiohttp.ClientSession, fleet: Fleet
) -> None:
    service = fleet.service("email-blast")
    await service.inject("crash")
    woken: list[int] = []
    ex = executor(stack.store, stack.clock, session, Holder(fleet_config(fleet)),
                  wake=lambda: woken.append(1))  # fmt: skip
    ex.register(stack.bus)
    action_id = await ask(stack.store, "email-blast")

    await stack.settle()  # action.requested reaches the executor (role "executor")
    await ex.drain()
    await stack.settle()

    final = await stack.store.get_action(action_id)
    assert final is not None and (final.state, final.outcome, final.executor) == (
        "verified", "accepted", "r1",
    )  # fmt: skip
    assert final.finished_at is not None and final.error is None
    assert service.restarts == 1 and service.control_calls == {"restart": 1}
    assert service.contract.performed == 1 and service.contract.replayed == 0
    assert service.state == "running" and woken  # the relay was woken for each write
    events = await events_of(stack.store, action_id)
    assert [e.type for e in events] == [ACTION_STARTED, ACTION_SUCCEEDED, ACTION_VERIFIED]
    assert {(e.project, e.incident_id, e.source) for e in events} == {
        ("email-blast", "inc-1", "executor")
    }
    assert events[1].payload["outcome"] == "accepted"
    assert [e.type for e in stack.of_type(*ACTION_TYPES)] == [e.type for e in events]
    # An operator's restart counts against the restart budget; the audit says who and how.
    assert await stack.store.count_attempts("email-blast", "restart", 900) == 1
    (audit,) = await stack.store.list_audit(project="email-blast")
    entry = audit.entry
    assert (entry.actor, entry.actor_kind, entry.action, entry.decision, entry.outcome) == (
        "U0OPS", "operator", "restart", "allowed", "verified",
    )  # fmt: skip
    assert entry.action_id == action_id and entry.details["executor"] == "r1"
    assert await stack.store.held_leases("r1") == []
    # Running it again does nothing: it is finished.
    assert await ex.run(action_id) is None and service.restarts == 1


async def test_approval_granted_runs_it_and_autofix_restarts_take_no_budget(
    stack: Stack, session: aiohttp.ClientSession, fleet: Fleet
) -> None:
    ex = executor(stack.store, stack.clock, session, Holder(fleet_config(fleet)))
    ex.register(stack.bus)
    requested = await request_action(
        stack.store, "chatbot", "clear_cache", requested_by="auto-fixer", reason="memory",
        origin="autofix", needs_approval=True, incident_id="inc-2",
    )  # fmt: skip
    assert requested.approval is not None
    await stack.settle()
    await ex.drain()
    assert await state_of(stack.store, requested.action.id) == "awaiting_approval"
    assert fleet.service("chatbot").control_calls == {}

    await stack.store.decide_approval(
        requested.approval.id, "granted", "U0BOSS", four_eyes=False,
        event_for=approval_event("inc-2", "test"),
    )  # fmt: skip
    await stack.settle()
    await ex.drain()
    assert await state_of(stack.store, requested.action.id) == "verified"
    assert fleet.service("chatbot").control_calls == {"clear_cache": 1}
    (audit,) = [r for r in await stack.store.list_audit() if r.entry.actor == "auto-fixer"]
    assert (audit.entry.actor_kind, audit.entry.outcome) == ("agent", "verified")
    # The Auto-Fixer takes its budget itself, before asking.
    assert await stack.store.count_attempts("chatbot", "clear_cache", 900) == 0


async def test_pause_is_verified_by_status(
    stack: Stack, session: aiohttp.ClientSession, fleet: Fleet
) -> None:
    ex = executor(stack.store, stack.clock, session, Holder(fleet_config(fleet)))
    final = await ex.run(await ask(stack.store, "chatbot", "pause"))
    assert final is not None and final.state == "verified"
    assert fleet.service("chatbot").state == "paused"
    final = await ex.run(await ask(stack.store, "chatbot", "resume"))
    assert final is not None and final.state == "verified"
    assert fleet.service("chatbot").state == "running"


async def test_wrong_secret_is_refused_and_failed(
    stack: Stack, session: aiohttp.ClientSession, fleet: Fleet
) -> None:
    service = fleet.service("email-blast")
    ex = executor(stack.store, stack.clock, session, Holder(fleet_config(fleet)),
                  secret=b"not-the-secret")  # fmt: skip
    action_id = await ask(stack.store, "email-blast")
    final = await ex.run(action_id)
    assert final is not None and (final.state, final.outcome) == ("failed", "refused")
    assert final.error is not None and "HTTP 401" in final.error
    assert service.contract.refused == 1 and service.contract.performed == 0
    assert service.restarts == 0
    events = await events_of(stack.store, action_id)
    assert [e.type for e in events] == [ACTION_STARTED, ACTION_FAILED]
    assert events[1].payload["outcome"] == "refused" and "401" in events[1].payload["error"]
    (audit,) = await stack.store.list_audit(project="email-blast")
    assert (audit.entry.decision, audit.entry.outcome) == ("allowed", "failed")
    assert await stack.store.held_leases("r1") == []


async def test_config_is_read_again_before_acting(
    stack: Stack, session: aiohttp.ClientSession, fleet: Fleet
) -> None:
    holder = Holder(fleet_config(fleet))
    ex = executor(stack.store, stack.clock, session, holder)
    removed = await ask(stack.store, "email-blast")
    not_allowed = await ask(stack.store, "chatbot", "pause")
    holder.config = config_of(
        contract("chatbot", fleet.url("chatbot"), fleet.control_url("chatbot"),
                 allowed_actions=["restart"])
    )  # fmt: skip
    gone = await ex.run(removed)
    assert gone is not None and gone.state == "failed" and gone.outcome is None
    assert gone.error == "email-blast is not in the config any more"
    refused = await ex.run(not_allowed)
    assert refused is not None and refused.state == "failed"
    assert refused.error == "pause is not an allowed action of chatbot any more"
    assert fleet.service("email-blast").control_calls == {}
    assert fleet.service("chatbot").control_calls == {}
    assert [e.type for e in await events_of(stack.store, removed)] == [ACTION_FAILED]
    audit = await stack.store.list_audit()
    assert {(r.entry.decision, r.entry.outcome) for r in audit} == {("refused", "failed")}
    # An action that needs approval since the config changed does not run unapproved.
    unapproved = await ask(stack.store, "chatbot", "clear_cache")
    holder.config = config_of(
        contract("chatbot", fleet.url("chatbot"), fleet.control_url("chatbot"),
                 needs_approval=["clear_cache"])
    )  # fmt: skip
    needs = await ex.run(unapproved)
    assert needs is not None and needs.state == "failed" and needs.error is not None
    assert needs.error.startswith("clear_cache on chatbot needs approval now")
    assert fleet.service("chatbot").control_calls == {}
    # No secret in the environment: refused before any call.
    holder.config = fleet_config(fleet)
    secretless = executor(stack.store, stack.clock, session, holder, secret=None)
    failed = await secretless.run(await ask(stack.store, "chatbot"))
    assert failed is not None and failed.state == "failed" and failed.error is not None
    assert "TEST_CONTROL_SECRET" in failed.error


# -- unknown outcomes: checked, never repeated ------------------------------------------


async def test_hanging_control_is_unknown_checked_and_not_repeated(
    stack: Stack, session: aiohttp.ClientSession, fakes: Any
) -> None:
    fake = await fakes("hang")
    config = config_of(contract("hangs", fake.url), remediation={"control_timeout": "200ms"})
    ex = executor(stack.store, stack.clock, session, Holder(config))
    action_id = await ask(stack.store, "hangs")
    final = await finish(stack.clock, ex.run(action_id))
    assert final is not None and (final.state, final.outcome) == ("verified", "unknown")
    assert fake.calls == 1  # one /control, never a second
    assert final.error is not None
    assert final.error.startswith("outcome unknown: /control did not answer within 0.2 s")
    assert "not sent again; /health: pass; /status: running" in final.error
    events = await events_of(stack.store, action_id)
    assert [e.type for e in events] == [ACTION_STARTED, ACTION_STARTED, ACTION_VERIFIED]
    unknown = events[1].payload
    assert (unknown["outcome"], unknown["health"], unknown["status"]) == (
        "unknown", "pass", "running",
    )  # fmt: skip
    # The sweep and a redelivered event find it finished: still one call.
    assert await ex.run(action_id) is None
    assert fake.calls == 1


async def test_502_after_restarting_is_unknown_then_verified_once_healthy(
    stack: Stack, session: aiohttp.ClientSession, fakes: Any
) -> None:
    fake = await fakes("502", healthy=False, heal_after_probes=3)
    ex = executor(stack.store, stack.clock, session, Holder(config_of(contract("flaky", fake.url))))
    action_id = await ask(stack.store, "flaky")
    final = await finish(stack.clock, ex.run(action_id))
    assert final is not None and (final.state, final.outcome) == ("verified", "unknown")
    assert fake.calls == 1 and fake.contract.performed == 1
    unknown = (await events_of(stack.store, action_id))[1].payload
    assert unknown["health"] == "fail" and "HTTP 502" in unknown["error"]
    assert "upstream closed" in unknown["error"]
    assert stack.clock.monotonic() == pytest.approx(6.0)  # three 2 s verify intervals


async def test_still_failing_after_the_verify_timeout_fails(
    stack: Stack, session: aiohttp.ClientSession, fakes: Any
) -> None:
    # The restart is accepted, but the service never comes up again.
    fake = await fakes("ok", healthy=False, heal_after_probes=10_000)
    ex = executor(
        stack.store, stack.clock, session, Holder(config_of(contract("broken", fake.url)))
    )
    action_id = await ask(stack.store, "broken")
    final = await finish(stack.clock, ex.run(action_id))
    assert final is not None and (final.state, final.outcome) == ("failed", "accepted")
    assert final.error is not None
    assert final.error.startswith("still failing after 60 s: ")
    assert "still starting" in final.error
    assert stack.clock.monotonic() == pytest.approx(60.0)
    assert fake.calls == 1


async def test_unreachable_control_is_unknown_and_checked(
    stack: Stack, session: aiohttp.ClientSession, fakes: Any
) -> None:
    fake = await fakes("ok")
    with socket.socket() as free:  # a port nobody listens on once closed
        free.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{free.getsockname()[1]}"
    ex = executor(stack.store, stack.clock, session,
                  Holder(config_of(contract("gone", fake.url, control_url=closed))))  # fmt: skip
    final = await ex.run(await ask(stack.store, "gone"))
    assert final is not None and (final.state, final.outcome) == ("verified", "unknown")
    assert final.error is not None and final.error.startswith("outcome unknown: /control failed")
    assert "/health: pass; /status: running" in final.error and fake.calls == 0


async def test_classify_answers() -> None:
    assert classify(202, {}).outcome == "accepted"
    for code in (400, 401, 403, 404, 409, 422):
        assert classify(code, {"error": "no"}).outcome == "refused"
    for code in (301, 429, 500, 502, 503, 504):
        assert classify(code, {}).outcome == "unknown"
    assert "[REDACTED:slack_token]" in classify(500, {"error": "xoxb-1234567890-abc"}).detail


# -- locks, slots, replicas -------------------------------------------------------------


async def test_two_executors_racing_on_one_action_call_once(
    stack: Stack, session: aiohttp.ClientSession, fleet: Fleet
) -> None:
    holder = Holder(fleet_config(fleet))
    one = executor(stack.store, stack.clock, session, holder, replica="r1")
    two = executor(stack.store, stack.clock, session, holder, replica="r2")
    await fleet.service("email-blast").inject("crash")
    action_id = await ask(stack.store, "email-blast")
    results = await asyncio.gather(one.run(action_id), two.run(action_id), one.run(action_id))
    assert sum(r is not None for r in results) == 1
    assert fleet.service("email-blast").control_calls == {"restart": 1}
    assert await state_of(stack.store, action_id) == "verified"


@pytest.mark.postgres
async def test_two_replicas_on_postgres_call_once(
    tmp_path: Path, clock: FakeClock, session: aiohttp.ClientSession, fleet: Fleet
) -> None:
    async with postgres_backend(tmp_path) as make:
        stores = [make(), make()]
        for store in stores:
            await store.open()
        try:
            holder = Holder(fleet_config(fleet))
            replicas = [
                executor(store, clock, session, holder, replica=f"r{i}")
                for i, store in enumerate(stores)
            ]
            await fleet.service("chatbot").inject("crash")
            action_id = await ask(stores[0], "chatbot")
            results = await asyncio.gather(*(r.run(action_id) for r in replicas * 3))
            assert sum(r is not None for r in results) == 1
            assert fleet.service("chatbot").control_calls == {"restart": 1}
            assert await state_of(stores[1], action_id) == "verified"
            assert await stores[0].lease_owners() == {}
        finally:
            for store in stores:
                await store.close()


async def test_busy_project_lock_waits_for_the_sweep(
    stack: Stack, session: aiohttp.ClientSession, fleet: Fleet
) -> None:
    store = stack.store
    await store.acquire_leases("other-replica", [lock_name("email-blast")], 300, 1)
    ex = executor(store, stack.clock, session, Holder(fleet_config(fleet)))
    action_id = await ask(store, "email-blast")
    await ex.start()
    try:
        await eventually(lambda: stack.clock.sleepers == 1 and not ex.in_flight, "a sweep")
        assert await state_of(store, action_id) == "requested"
        assert fleet.service("email-blast").control_calls == {}
        await store.release_leases("other-replica", [lock_name("email-blast")])
        await stack.clock.advance(5.0)  # the next sweep
        await eventually(lambda: _is(state_of(store, action_id), "verified"), "the sweep to run it")
        assert fleet.service("email-blast").control_calls == {"restart": 1}
    finally:
        await ex.stop()


async def _is(value: Awaitable[Any], expected: Any) -> bool:
    return await value == expected


async def test_at_most_two_remediations_fleet_wide(
    stack: Stack, session: aiohttp.ClientSession, fakes: Any
) -> None:
    gate, shared = asyncio.Event(), {"now": 0, "max": 0}
    fakes_ = [await fakes("gate", gate=gate, shared=shared) for _ in range(3)]
    config = config_of(*(contract(f"p{i}", f.url) for i, f in enumerate(fakes_)))
    assert config.defaults.max_concurrent_remediations == 2
    ex = executor(stack.store, stack.clock, session, Holder(config))
    ids = [await ask(stack.store, f"p{i}") for i in range(3)]
    await ex.start()
    try:
        await eventually(lambda: shared["now"] == 2 and len(ex.in_flight) == 2, "two calls")
        states = [await state_of(stack.store, i) for i in ids]
        assert sorted(states) == ["requested", "running", "running"]
        gate.set()  # the two finish; their freed slot wakes the sweep for the third
        for action_id in ids:
            await eventually(lambda a=action_id: _is(state_of(stack.store, a), "verified"))
        assert shared["max"] == 2 and [f.calls for f in fakes_] == [1, 1, 1]
        assert stack.clock.monotonic() == 0  # no sweep interval had to pass
    finally:
        await ex.stop()
    assert await stack.store.lease_owners() == {}


async def test_an_action_left_running_by_a_dead_replica_is_verified_not_repeated(
    stack: Stack, session: aiohttp.ClientSession, fleet: Fleet
) -> None:
    store = stack.store
    action_id = await ask(store, "email-blast")
    # The dead replica claimed it, held the project lock, and vanished mid-call.
    await store.acquire_leases("dead", [lock_name("email-blast")], 100, 1)
    started = await store.start_action(action_id, "dead", lambda a: Event(
        ACTION_STARTED, stack.clock.now(), "test", {"action_id": a.id}, a.project))  # fmt: skip
    assert started is not None
    ex = executor(store, stack.clock, session, Holder(fleet_config(fleet)))
    assert await ex.run(action_id) is None  # its lock is still held: maybe still at work
    await stack.clock.advance(101)  # the lease expires (SQLite: the store's clock)
    final = await ex.run(action_id)
    assert final is not None and (final.state, final.outcome) == ("verified", "unknown")
    assert final.error is not None and "executor dead stopped during the call" in final.error
    assert fleet.service("email-blast").control_calls == {}
    assert await store.lease_owners() == {}


async def test_stop_cancels_in_flight_work_and_releases_its_leases(
    stack: Stack, session: aiohttp.ClientSession, fakes: Any
) -> None:
    fake = await fakes("hang")
    ex = ActionExecutor(
        stack.store, Holder(config_of(contract("hangs", fake.url))), session,
        ProbeClient(session, stack.clock).probe, lambda _: SECRET, "r1",
        clock=stack.clock, wake=lambda: None, stop_grace=0.05,
    )  # fmt: skip
    action_id = await ask(stack.store, "hangs")
    assert ex.submit(action_id) is not None
    await eventually(lambda: fake.calls == 1, "the call")
    await ex.stop()
    assert await stack.store.lease_owners() == {}
    assert await state_of(stack.store, action_id) == "running"  # another replica verifies it
    assert ex.submit(action_id) is None  # stopped: takes nothing new


# -- the command adapter -----------------------------------------------------------------


def py(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


async def test_command_success_and_failure() -> None:
    ok = await run_command(py("print('restarted web-1')"), 10)
    assert (ok.outcome, ok.exit_code, ok.output, ok.error) == (
        "accepted", 0, "restarted web-1\n", None,
    )  # fmt: skip
    code = "import sys; print('auth with token=hunter2 failed', file=sys.stderr); sys.exit(3)"
    bad = await run_command(py(code), 10)
    assert (bad.outcome, bad.exit_code) == ("refused", 3)
    assert bad.error is not None and bad.error.startswith(f"{sys.executable} exited 3: ")
    assert "token=[REDACTED:token]" in bad.error and "hunter2" not in bad.output
    missing = await run_command(["/nonexistent/orch-test-binary"], 10)
    assert missing.outcome == "refused" and missing.exit_code is None
    assert missing.error is not None and "cannot run" in missing.error


async def test_command_argv_never_goes_through_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    result = await run_command(
        py("import sys; print(sys.argv[1:])", f"$(touch {marker})", "a; touch x", "*", "`id`"),
        10,
    )
    assert result.outcome == "accepted"
    assert result.output == f"['$(touch {marker})', 'a; touch x', '*', '`id`']\n"
    assert not marker.exists()


async def test_command_output_is_bounded_and_redacted() -> None:
    code = "print('x' * 20000); print('xoxb-1234567890-secret AKIAIOSFODNN7EXAMPLE')"
    result = await run_command(py(code), 10)
    assert len(result.output) <= OUTPUT_LIMIT and result.output.startswith("…")
    assert result.output.endswith("[REDACTED:slack_token] [REDACTED:aws_access_key]\n")


async def test_command_sees_only_the_environment_it_is_given() -> None:
    env = {"PATH": "/usr/bin:/bin", "SLACK_BOT_TOKEN": "xoxb-1-2-3", "HOME": "/root",
           "DATABASE_URL": "postgresql://u:p@db/orch"}  # fmt: skip
    settings = Settings(env=env)
    code = "import os; print(sorted(k for k in os.environ if k not in ('LC_CTYPE',)))"
    result = await run_command(py(code), 10, env=settings.command_env())
    assert result.output == "['HOME', 'PATH']\n"


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"  # a zombie no one reaped yet is dead


async def test_command_timeout_kills_the_whole_process_group() -> None:
    code = (
        "import subprocess, sys, time;"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        "print(child.pid, flush=True); time.sleep(60)"
    )
    result = await run_command(py(code), 0.5)
    assert (result.outcome, result.exit_code) == ("unknown", None)
    assert result.error is not None and "timed out after 0.5 s and was killed" in result.error
    child = int(result.output.split()[0])
    await eventually(lambda: _gone(child), "the child to be killed with its parent")


async def test_command_adapter_through_the_executor(
    stack: Stack, session: aiohttp.ClientSession, fakes: Any, tmp_path: Path
) -> None:
    fake = await fakes("ok")
    done = tmp_path / "restarted"
    commands = {
        "restart": py(f"open({str(done)!r}, 'w').write('1'); print('ok password=s3cret')"),
        "pause": py("import time; time.sleep(30)"),
    }
    project = {"name": "legacy", "url": f"{fake.url}/health", "kind": "http",
               "allowed_actions": ["restart", "pause"], "control_commands": commands,
               "remediation": {"control_timeout": "300ms"}}  # fmt: skip
    ex = executor(stack.store, stack.clock, session, Holder(config_of(project)))
    final = await ex.run(await ask(stack.store, "legacy"))
    assert final is not None and (final.state, final.outcome) == ("verified", "accepted")
    assert done.read_text() == "1" and fake.calls == 0
    succeeded = (await events_of(stack.store, final.id))[1]
    assert succeeded.payload["output"] == "ok password=[REDACTED:password]\n"
    (audit,) = [r for r in await stack.store.list_audit() if r.entry.action_id == final.id]
    assert "s3cret" not in str(audit.entry.details)
    # A command that hangs is killed: unknown, and a pause cannot be observed: failed.
    hung = await finish(stack.clock, ex.run(await ask(stack.store, "legacy", "pause")))
    assert hung is not None and (hung.state, hung.outcome) == ("failed", "unknown")
    assert hung.error is not None and "a pause cannot be observed" in hung.error


# -- redaction ---------------------------------------------------------------------------

REDACTED: Mapping[str, tuple[str, str]] = {
    "slack bot token": ("token xoxb-1234567890-abcdefghij ok", "token [REDACTED:slack_token] ok"),
    "slack app token": ("xapp-1-A0123456-7890-abcdef", "[REDACTED:slack_token]"),
    "aws keys": ("AKIAIOSFODNN7EXAMPLE,ASIAABCDEFGHIJKLMNOP",
                 "[REDACTED:aws_access_key],[REDACTED:aws_access_key]"),
    "jwt": ("t=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0T",
            "t=[REDACTED:jwt]"),
    "bearer": ("Authorization: Bearer abc.def-ghi_12345",
               "Authorization: Bearer [REDACTED:bearer]"),
    "pem": ("a -----BEGIN RSA PRIVATE KEY-----\nMIIEpAIB\n-----END RSA PRIVATE KEY----- b",
            "a [REDACTED:private_key] b"),
    "dsn": ("postgresql://orch:hunter2@db:5432/x", "postgresql://orch:[REDACTED:password]@db:5432/x"),
    "redis without user": ("redis://:pw@r:6379/0", "redis://:[REDACTED:password]@r:6379/0"),
    "response_url": ("POST https://hooks.slack.com/actions/T0/1/abc failed",
                     "POST [REDACTED:slack_url] failed"),
    "email": ("mail ops@example.com now", "mail [REDACTED:email] now"),
    "phones": ("+44 20 7946 0958 / (415) 555-2671 / +14155552671",
               "[REDACTED:phone] / [REDACTED:phone] / [REDACTED:phone]"),
    "key values": ('password=hunter2 DB_PASSWORD: x {"client_secret": "a b"} api_key=k',
                   'password=[REDACTED:password] DB_PASSWORD: [REDACTED:password] '
                   '{"client_secret": "[REDACTED:secret]"} api_key=[REDACTED:api_key]'),
    "token key keeps the typed value": ("token=xoxb-1234567890-zzz",
                                        "token=[REDACTED:slack_token]"),
}  # fmt: skip

KEPT = [
    "2026-01-01T12:00:00Z 10.0.0.1 v1.2.3 pid 4123 latency 123.45 ms port 8101",
    "tokens_used=12 token_count=3 secretary=no",
    "GET http://127.0.0.1:8101/health -> 503",
    "restart requested by U012ABC for email-blast:down",
]


@pytest.mark.parametrize("name", sorted(REDACTED))
def test_redact_replaces_each_kind(name: str) -> None:
    text, expected = REDACTED[name]
    assert redact(text) == expected


@pytest.mark.parametrize("text", KEPT)
def test_redact_keeps_ordinary_text(text: str) -> None:
    assert redact(text) == text


def test_redact_rules_are_one_named_table() -> None:
    names = [rule.name for rule in RULES]
    assert len(names) == len(set(names)) and "slack_token" in names and "email" in names
    assert redact(redact(REDACTED["key values"][0])) == REDACTED["key values"][1]  # idempotent
