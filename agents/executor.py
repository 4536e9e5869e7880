"""The Action Executor: runs requested and approved actions, once, and checks they worked.

One path for every origin (Slack, ``orch`` at a terminal, the Auto-Fixer, Claude's
recommendation once approved).  For one action:

1. re-read the action and its project from the *current* config (removed project,
   action no longer allowed, now needing approval, no secret or command: ``failed``
   without calling anything);
2. take the project lock ``act:<project>`` and one of the fleet-wide
   ``remediation-slot:<i>`` leases (``agents.executor_leases``); when either is busy
   nothing is claimed and the sweep tries again later;
3. claim the row (compare-and-set to ``running``), count a restart against the budget
   unless the Auto-Fixer already took it, and call ``/control`` once, signed, with the
   action id as idempotency key (or run the configured command);
4. classify: 2xx accepted, 400/401/403/404/409/422 refused (``failed``), anything else
   (timeout, connection error, 5xx, a redirect) *unknown*: the action may have happened,
   so ``/health`` and ``/status`` are read and recorded, and ``/control`` is never sent
   again for this action;
5. re-probe every ``verify_interval`` until the project is healthy (``verified``) or
   ``verify_timeout`` passes (``failed``), then write the audit row.

Every state change commits with its event (``agents.executor_records``).  An action left
``running``/``verifying`` by an executor that stopped or died (its project lock free or
expired) is taken over by any replica's sweep: it is verified by probing, never called
again.

Stopping (SIGTERM, ``stop``): nothing new is claimed; a ``/control`` call in flight is
let finish (it is bounded by the project's ``control_timeout``, and the grace is longer)
and its answer recorded; verification is not worth holding a shutdown for, so it is
handed back at once: the action stays ``verifying`` and another replica's sweep takes it
over.  Should the grace run out all the same, the call is abandoned and the row stays
``running``: the replica that takes it over records the outcome as unknown ("stopped
during the call"), reads ``/health`` and ``/status``, and verifies; it never re-sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Final

from agents.bus import EventBus
from agents.clock import Clock, sleep_or_wake
from agents.events import (
    ACTION_FAILED,
    ACTION_REQUESTED,
    ACTION_STARTED,
    ACTION_SUCCEEDED,
    ACTION_VERIFIED,
    APPROVAL_GRANTED,
    Event,
)
from agents.executor_calls import ProbeFn, ProjectCalls, SessionRef
from agents.executor_leases import ExecutorLeases, lease_ttl, lock_name, slot_names
from agents.executor_records import SOURCE, ActionRecords
from agents.lifecycle import cancel_and_wait
from agents.probe_result import ProbeResult
from agents.redact import redact
from bot.config import Config, Project
from storage.base import Store
from storage.execution_store import APPROVED, FAILED, RUNNING, VERIFIED, VERIFYING
from storage.operations_store import REQUESTED, ActionRequest

__all__ = ["SOURCE", "ActionExecutor", "lease_ttl", "lock_name", "runnable", "slot_names"]

log = logging.getLogger(__name__)

ROLE: Final = "executor"
SWEEP_REQUESTED_LIMIT: Final = 1000
# Beyond the longest control_timeout: the call's own 1 s belt, then recording its answer.
CALL_MARGIN_S: Final = 5.0


def runnable(action: ActionRequest) -> bool:
    return (action.state == REQUESTED and not action.needs_approval) or action.state == APPROVED


def stop_grace_for(config: Config) -> float:
    """Long enough for any /control call in flight to end (answered or timed out) and be
    recorded."""
    longest = max((p.policy.control_timeout for p in config.projects), default=10.0)
    return longest + CALL_MARGIN_S


class _HandBack(Exception):
    """Stopping: this action's verification is left to another replica."""


class ActionExecutor:
    def __init__(
        self,
        store: Store,
        config: Callable[[], Config],
        session: SessionRef,
        probe: ProbeFn,
        secret_for: Callable[[Project], bytes | None],
        replica_id: str,
        *,
        clock: Clock,
        wake: Callable[[], None],
        sweep_interval: float = 5.0,
        stop_grace: float | None = None,
        command_env: Mapping[str, str] | None = None,
    ) -> None:
        """``session``: the shared aiohttp session, or a callable returning it (the
        runtime opens it at start).  ``probe``: ``ProbeClient(session, clock).probe``.
        ``secret_for``: a project's /control secret (``bot.secrets.control_secret``).
        ``wake``: the outbox relay's.  ``replica_id`` owns the leases and is stored as
        the action's ``executor``.  ``stop_grace``: how long ``stop`` lets calls in flight
        finish (None: the longest ``control_timeout`` plus a margin)."""
        self._store = store
        self._config = config
        self._calls = ProjectCalls(session, probe, secret_for, clock, command_env)
        self._records = ActionRecords(store, clock, wake, replica_id)
        self._leases = ExecutorLeases(store, replica_id)
        self.replica_id = replica_id
        self._clock = clock
        self._wake = wake
        self._sweep_interval = sweep_interval
        self._stop_grace = stop_grace
        self._tasks: dict[str, asyncio.Task[ActionRequest | None]] = {}
        self._verifying: dict[str, asyncio.Task[object]] = {}  # handed back at stop
        self._kick = asyncio.Event()
        self._deferred = False  # an action waited for a lock or slot: sweep when one frees
        self._sweeper: asyncio.Task[None] | None = None
        self._stopping = False

    def renewed_by_heartbeat(self, ttl_s: float) -> None:
        """This replica's ``LeaseKeeper`` renews every lease the replica owns each
        ``ttl_s / 3`` (``agents.coordination``): take the project lock and slot for
        ``ttl_s`` only, so a replica that dies mid-call (SIGKILL, past the platform's
        grace) frees them within one ``ttl_s``, and another replica takes its action over
        then, instead of after the whole call-and-verify budget (``lease_ttl``)."""
        self._leases.heartbeat_ttl = ttl_s

    @property
    def finished(self) -> Counter[tuple[str, str]]:
        """(action, outcome) -> count of actions this executor finished (/metrics)."""
        return self._records.finished

    # -- wiring and lifecycle ----------------------------------------------------------
    def register(self, bus: EventBus) -> None:
        # One delivery fleet-wide; the store's compare-and-set settles any duplicate.
        bus.subscribe(ROLE, self._on_event, types=[ACTION_REQUESTED, APPROVAL_GRANTED])

    async def start(self) -> None:
        self._stopping = False
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="executor-sweep")

    async def stop(self) -> None:
        """Take nothing new; hand verifications back at once; let /control calls in
        flight finish and be recorded within the grace, then cancel what is left (its
        leases are released; another replica's sweep takes the action over, verifying
        without calling again)."""
        self._stopping = True
        await cancel_and_wait(self._sweeper)
        self._sweeper = None
        tasks = list(self._tasks.values())
        if not tasks:
            return
        grace = self._stop_grace if self._stop_grace is not None else stop_grace_for(self._config())
        handed_back = list(self._verifying.values())
        for task in handed_back:
            task.cancel()
        log.info(
            "executor %s stopping: %d action(s) in flight; %d verification(s) handed back,"
            " the rest finish their call and are recorded (up to %g s)",
            self.replica_id, len(tasks), len(handed_back), grace,
        )  # fmt: skip
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if pending:
            log.warning("executor %s: %d call(s) abandoned after %g s; another replica "
                        "verifies them and never sends them again",
                        self.replica_id, len(pending), grace)  # fmt: skip

    def submit(self, action_id: str) -> asyncio.Task[ActionRequest | None] | None:
        """Run ``action_id`` in the background (once per process at a time)."""
        if self._stopping:
            return None
        task = self._tasks.get(action_id)
        if task is None or task.done():
            task = asyncio.create_task(self.run(action_id), name=f"executor:{action_id}")
            self._tasks[action_id] = task
            task.add_done_callback(self._forget)
        return task

    def _forget(self, task: asyncio.Task[ActionRequest | None]) -> None:
        for action_id, mine in list(self._tasks.items()):
            if mine is task:
                del self._tasks[action_id]

    async def drain(self) -> None:
        """Wait until every action submitted so far has finished (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    @property
    def in_flight(self) -> list[str]:
        return sorted(self._tasks)

    async def sweep(self) -> int:
        """Submit the work no event brought: runnable actions, and actions a dead
        executor left running.  Returns how many were submitted."""
        self._deferred = False
        # Separate reads, so requests that wait forever for an approval never asked (see
        # agents.actions) cannot crowd runnable work out of one oldest-first page.
        found = await self._store.actions_in([APPROVED, RUNNING, VERIFYING])
        found += await self._store.actions_in([REQUESTED], limit=SWEEP_REQUESTED_LIMIT)
        ids = [a.id for a in found if runnable(a) or a.state in (RUNNING, VERIFYING)]
        submitted = [i for i in ids if i not in self._tasks and self.submit(i)]
        return len(submitted)

    async def _sweep_loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:  # the store may be away: the next sweep tries again
                log.exception("executor sweep failed")
            await sleep_or_wake(self._clock, self._sweep_interval, self._kick)

    async def _on_event(self, event: Event) -> None:
        action_id = event.payload.get("action_id")
        if not isinstance(action_id, str):
            return
        if event.type == ACTION_REQUESTED and event.payload.get("needs_approval", True):
            return  # its approval.granted will bring it
        self.submit(action_id)

    @contextlib.contextmanager
    def _handed_back_on_stop(self, action_id: str) -> Iterator[None]:
        """Around checks and verification (never around a /control call): ``stop``
        cancels them, and none starts once stopping."""
        task = asyncio.current_task()
        if self._stopping or task is None:
            raise _HandBack()
        self._verifying[action_id] = task
        try:
            yield
        finally:
            self._verifying.pop(action_id, None)

    # -- one action ------------------------------------------------------------------
    async def run(self, action_id: str) -> ActionRequest | None:
        """Run the action if it is runnable (or take it over if its executor died);
        return its final row, or None when this call did not run it.  Never raises
        (except CancelledError)."""
        claimed: list[ActionRequest] = []
        try:
            return await self._run(action_id, claimed)
        except asyncio.CancelledError:
            raise
        except _HandBack:
            log.info("action %s: verification handed back (stopping)", action_id)
            return None
        except Exception as exc:
            log.exception("executing action %s failed", action_id)
            if not claimed:
                return None
            error = redact(f"executor error: {type(exc).__name__}: {exc}")
            try:
                return await self._records.finish(claimed[-1], [RUNNING, VERIFYING], FAILED,
                                                  ACTION_FAILED, error=error)  # fmt: skip
            except Exception:
                log.exception("could not record the failure of action %s", action_id)
                return None

    async def _run(self, action_id: str, claimed: list[ActionRequest]) -> ActionRequest | None:
        action = await self._store.get_action(action_id)
        if action is None:
            return None
        if action.state in (RUNNING, VERIFYING):
            return await self._take_over(action, claimed)
        if not runnable(action):
            return None
        config = self._config()
        project, refusal = self._authorised(config, action)
        if project is None:
            return await self._refuse(action, refusal)
        held = await self._leases.take_for_action(
            project, config.defaults.max_concurrent_remediations
        )
        if held is None:
            self._deferred = True
            return None
        try:
            if self._stopping:  # not claimed: the replica that takes over runs it
                return None
            started = await self._store.start_action(
                action.id, self.replica_id, self._records.event_for(ACTION_STARTED)
            )
            if started is None:
                return None  # another executor claimed it first
            claimed.append(started)
            self._wake()
            log.info("action %s: %s on %s started", started.id, started.action, project.name)
            if started.action == "restart" and started.origin != "autofix":
                await self._store.record_attempt(
                    project.name, started.action, started.requested_by, started.id
                )
            return await self._call_and_verify(project, started, claimed)
        finally:
            await self._leases.release(held)
            if self._deferred:  # a lock and a slot just came free
                self._kick.set()

    async def _call_and_verify(
        self, project: Project, action: ActionRequest, claimed: list[ActionRequest]
    ) -> ActionRequest | None:
        call = await self._calls.call(project, action)
        first: ProbeResult | None = None
        if call.outcome == "refused":
            return await self._records.finish(action, [RUNNING], FAILED, ACTION_FAILED,
                                              outcome="refused", error=call.detail,
                                              output=call.output)  # fmt: skip
        if call.outcome == "accepted":
            extra = {"output": call.output[-1000:]} if call.output else {}
            moved = await self._records.move(action, [RUNNING], VERIFYING, ACTION_SUCCEEDED,
                                             outcome="accepted", extra=extra)  # fmt: skip
        else:
            check = await self._calls.check(project, call.detail)
            first = check.probe
            # Not action.succeeded (nothing confirmed it): the same "started" story, now
            # with its unknown outcome and what /health and /status said.
            moved = await self._records.move(action, [RUNNING], VERIFYING, ACTION_STARTED,
                                             outcome="unknown", error=check.error,
                                             extra=check.payload)  # fmt: skip
        if moved is None:
            log.warning("action %s was moved by someone else during its call", action.id)
            return None
        claimed.append(moved)
        return await self._verify_and_close(project, moved, first, output=call.output)

    async def _take_over(
        self, action: ActionRequest, claimed: list[ActionRequest]
    ) -> ActionRequest | None:
        """An action ``running``/``verifying`` whose project lock is free: its executor
        stopped or died mid-way.  Its outcome is unknown; verify, never call again."""
        config = self._config()
        try:
            project: Project | None = config.project(action.project)
        except KeyError:
            project = None
        if not await self._leases.take_lock(action.project, self._leases.ttl(project)):
            return None  # its executor is still at work (or someone else took it over)
        try:
            current = await self._store.get_action(action.id)
            if current is None or current.state not in (RUNNING, VERIFYING):
                return None
            claimed.append(current)
            log.warning("action %s: taking over from executor %s", current.id, current.executor)
            if project is None:
                error = f"{current.project} was removed from the config while {current.action} ran"
                return await self._records.finish(current, [RUNNING, VERIFYING], FAILED,
                                                  ACTION_FAILED, error=error)  # fmt: skip
            first = None
            if current.state == RUNNING:
                why = f"executor {current.executor} stopped during the call"
                with self._handed_back_on_stop(current.id):
                    check = await self._calls.check(project, why)
                first = check.probe
                moved = await self._records.move(current, [RUNNING], VERIFYING, ACTION_STARTED,
                                                 outcome="unknown", error=check.error,
                                                 extra=check.payload)  # fmt: skip
                if moved is None:
                    return None
                current = moved
                claimed.append(current)
            return await self._verify_and_close(project, current, first)
        finally:
            await self._leases.release([lock_name(action.project)])

    # -- deciding, calling, checking ---------------------------------------------------
    def _authorised(self, config: Config, action: ActionRequest) -> tuple[Project | None, str]:
        """The project when ``action`` may run on it under the current config, else
        (None, why not)."""
        try:
            project = config.project(action.project)
        except KeyError:
            return None, f"{action.project} is not in the config any more"
        name, what = project.name, action.action
        if what not in project.allowed_actions:
            return None, f"{what} is not an allowed action of {name} any more"
        if action.state == REQUESTED and what in project.needs_approval:
            return None, f"{what} on {name} needs approval now (the config changed); ask again"
        if project.kind == "contract":
            if not self._calls.secret(project):
                return None, f"no /control secret for {name} (set {project.control_secret_env})"
        elif not project.control_commands.get(what):
            return None, f"no command is configured for {what} on {name}"
        return project, ""

    async def _refuse(self, action: ActionRequest, why: str) -> ActionRequest | None:
        final = await self._records.finish(action, [action.state], FAILED, ACTION_FAILED,
                                           error=why, decision="refused")  # fmt: skip
        if final is not None:
            log.warning("action %s refused: %s", action.id, why)
        return final

    async def _verify_and_close(
        self, project: Project, action: ActionRequest, first: ProbeResult | None,
        output: str = "",
    ) -> ActionRequest | None:  # fmt: skip
        with self._handed_back_on_stop(action.id):
            healthy, why = await self._calls.verify(project, action, first)
        if healthy:
            final = await self._records.finish(action, [VERIFYING], VERIFIED, ACTION_VERIFIED,
                                               output=output)  # fmt: skip
        else:
            error = f"still failing after {project.policy.verify_timeout:g} s: {why}"
            final = await self._records.finish(action, [VERIFYING], FAILED, ACTION_FAILED,
                                               error=error, output=output)  # fmt: skip
        if final is not None:
            log.info("action %s: %s on %s %s", final.id, final.action, final.project, final.state)
        return final
