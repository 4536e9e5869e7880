"""The Action Executor: runs requested and approved actions, once, and checks they worked.

One path for every origin (Slack, ``orch`` at a terminal, the Auto-Fixer, Claude's
recommendation once approved).  For one action:

1. re-read the action and its project from the *current* config (removed project,
   action no longer allowed, now needing approval, no secret or command: ``failed``
   without calling anything);
2. take the project lock ``act:<project>`` and one of the fleet-wide
   ``remediation-slot:<i>`` leases (``max_concurrent_remediations``); when either is
   busy nothing is claimed and the sweep tries again later;
3. claim the row (compare-and-set to ``running``), count a restart against the budget
   unless the Auto-Fixer already took it, and call ``/control`` once, signed, with the
   action id as idempotency key (or run the configured command);
4. classify: 2xx accepted, 400/401/403/404/409/422 refused (``failed``), anything else
   (timeout, connection error, 5xx, a redirect) *unknown*: the action may have happened,
   so ``/health`` and ``/status`` are read and recorded, and ``/control`` is never sent
   again for this action;
5. re-probe every ``verify_interval`` until the project is healthy (``verified``) or
   ``verify_timeout`` passes (``failed``), then write the audit row.

Every state change commits with its event (``storage.execution_store``); the relay is
woken after each.  An action left ``running``/``verifying`` by a replica that died (its
project lock expired) is taken over by any replica's sweep: its outcome is unknown, so it
is verified by probing, never called again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

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
from agents.executor_calls import ProbeFn, ProjectCalls, SessionRef, probe_timeout
from agents.lifecycle import cancel_and_wait
from agents.probe_result import ProbeResult
from agents.redact import redact
from bot.config import Config, Project
from storage.autonomy_store import AuditEntry
from storage.base import Store
from storage.execution_store import APPROVED, FAILED, RUNNING, VERIFIED, VERIFYING
from storage.operations_store import REQUESTED, ActionEventFor, ActionRequest

log = logging.getLogger(__name__)

SOURCE: Final = "executor"
ROLE: Final = "executor"
LOCK_PREFIX: Final = "act:"
SLOT_PREFIX: Final = "remediation-slot:"
LEASE_MARGIN_S: Final = 30.0
SWEEP_REQUESTED_LIMIT: Final = 1000
ACTOR_KIND: Final = {"user": "user", "operator": "operator", "autofix": "agent", "rules": "agent",
                     "claude": "claude"}  # fmt: skip


def runnable(action: ActionRequest) -> bool:
    return (action.state == REQUESTED and not action.needs_approval) or action.state == APPROVED


def lock_name(project: str) -> str:
    return f"{LOCK_PREFIX}{project}"


def slot_names(slots: int) -> list[str]:
    return [f"{SLOT_PREFIX}{i}" for i in range(slots)]


def lease_ttl(project: Project) -> float:
    """Long enough for the call, the check after an unknown outcome, the verification and
    its last probe, with a margin."""
    policy = project.policy
    return (
        policy.control_timeout
        + policy.verify_timeout
        + 3 * probe_timeout(project)
        + (LEASE_MARGIN_S)
    )


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
        stop_grace: float = 15.0,
        command_env: Mapping[str, str] | None = None,
    ) -> None:
        """``session``: the shared aiohttp session, or a callable returning it (the
        runtime opens it at start).  ``probe``: ``ProbeClient(session, clock).probe``.
        ``secret_for``: a project's /control secret (``bot.secrets.control_secret``).
        ``wake``: the outbox relay's.  ``replica_id`` owns the leases and is stored as
        the action's ``executor``."""
        self._store = store
        self._config = config
        self._calls = ProjectCalls(session, probe, secret_for, clock, command_env)
        self.replica_id = replica_id
        self._clock = clock
        self._wake = wake
        self._sweep_interval = sweep_interval
        self._stop_grace = stop_grace
        self._tasks: dict[str, asyncio.Task[ActionRequest | None]] = {}
        self._kick = asyncio.Event()
        self._deferred = False  # an action waited for a lock or slot: sweep when one frees
        self._sweeper: asyncio.Task[None] | None = None
        self._stopping = False
        self.finished: Counter[tuple[str, str]] = Counter()  # (action, outcome) -> count

    # -- wiring and lifecycle ----------------------------------------------------------
    def register(self, bus: EventBus) -> None:
        # One delivery fleet-wide; the store's compare-and-set settles any duplicate.
        bus.subscribe(ROLE, self._on_event, types=[ACTION_REQUESTED, APPROVAL_GRANTED])

    async def start(self) -> None:
        self._stopping = False
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="executor-sweep")

    async def stop(self) -> None:
        """Stop sweeping; let running actions finish for up to ``stop_grace`` seconds, then
        cancel them (their leases are released; the row stays ``running``/``verifying``
        and another replica's sweep takes it over, verifying without calling again)."""
        self._stopping = True
        await cancel_and_wait(self._sweeper)
        self._sweeper = None
        tasks = list(self._tasks.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self._stop_grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

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
        except Exception as exc:
            log.exception("executing action %s failed", action_id)
            if not claimed:
                return None
            error = redact(f"executor error: {type(exc).__name__}: {exc}")
            try:
                final = await self._move(claimed[-1], [RUNNING, VERIFYING], FAILED,
                                         ACTION_FAILED, error=error)  # fmt: skip
                if final is not None:
                    await self._audit(final)
                return final
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
        held = await self._take_leases(project, config.defaults.max_concurrent_remediations)
        if held is None:
            self._deferred = True
            return None
        try:
            started = await self._store.start_action(
                action.id, self.replica_id, self._event_for(ACTION_STARTED)
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
            await self._release(held)
            if self._deferred:  # a lock and a slot just came free
                self._kick.set()

    async def _call_and_verify(
        self, project: Project, action: ActionRequest, claimed: list[ActionRequest]
    ) -> ActionRequest | None:
        call = await self._calls.call(project, action)
        first: ProbeResult | None = None
        if call.outcome == "refused":
            final = await self._move(action, [RUNNING], FAILED, ACTION_FAILED,
                                     outcome="refused", error=call.detail)  # fmt: skip
            if final is not None:
                await self._audit(final, output=call.output)
            return final
        if call.outcome == "accepted":
            extra = {"output": call.output[-1000:]} if call.output else {}
            moved = await self._move(action, [RUNNING], VERIFYING, ACTION_SUCCEEDED,
                                     outcome="accepted", extra=extra)  # fmt: skip
        else:
            check = await self._calls.check(project, call.detail)
            first = check.probe
            # Not action.succeeded (nothing confirmed it): the same "started" story, now
            # with its unknown outcome and what /health and /status said.
            moved = await self._move(action, [RUNNING], VERIFYING, ACTION_STARTED,
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
        ttl = lease_ttl(project) if project else LEASE_MARGIN_S
        lock = lock_name(action.project)
        if not await self._store.acquire_leases(self.replica_id, [lock], ttl, 1):
            return None  # its executor is still at work (or someone else took it over)
        try:
            current = await self._store.get_action(action.id)
            if current is None or current.state not in (RUNNING, VERIFYING):
                return None
            claimed.append(current)
            log.warning("action %s: taking over from executor %s", current.id, current.executor)
            if project is None:
                error = f"{current.project} was removed from the config while {current.action} ran"
                final = await self._move(current, [RUNNING, VERIFYING], FAILED, ACTION_FAILED,
                                         error=error)  # fmt: skip
                if final is not None:
                    await self._audit(final)
                return final
            first = None
            if current.state == RUNNING:
                why = f"executor {current.executor} stopped during the call"
                check = await self._calls.check(project, why)
                first = check.probe
                moved = await self._move(current, [RUNNING], VERIFYING, ACTION_STARTED,
                                         outcome="unknown", error=check.error,
                                         extra=check.payload)  # fmt: skip
                if moved is None:
                    return None
                current = moved
                claimed.append(current)
            return await self._verify_and_close(project, current, first)
        finally:
            await self._release([lock])

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
        final = await self._move(action, [action.state], FAILED, ACTION_FAILED, error=why)
        if final is not None:
            log.warning("action %s refused: %s", action.id, why)
            await self._audit(final, decision="refused")
        return final

    async def _verify_and_close(
        self, project: Project, action: ActionRequest, first: ProbeResult | None,
        output: str = "",
    ) -> ActionRequest | None:  # fmt: skip
        healthy, why = await self._calls.verify(project, action, first)
        if healthy:
            final = await self._move(action, [VERIFYING], VERIFIED, ACTION_VERIFIED)
        else:
            error = f"still failing after {project.policy.verify_timeout:g} s: {why}"
            final = await self._move(action, [VERIFYING], FAILED, ACTION_FAILED, error=error)
        if final is not None:
            log.info("action %s: %s on %s %s", final.id, final.action, final.project, final.state)
            await self._audit(final, output=output)
        return final

    # -- store plumbing ---------------------------------------------------------------
    def _event_for(
        self, kind: str, *, error: bool = False, extra: dict[str, Any] | None = None
    ) -> ActionEventFor:
        def build(row: ActionRequest) -> Event:
            payload: dict[str, Any] = {"action_id": row.id, "action": row.action,
                                       "origin": row.origin}  # fmt: skip
            if row.outcome:
                payload["outcome"] = row.outcome
            if error and row.error:
                payload["error"] = row.error
            payload.update(extra or {})
            ts: datetime = row.finished_at or self._clock.now()
            if kind == ACTION_STARTED and row.state == RUNNING and row.started_at:
                ts = row.started_at
            return Event(kind, ts, SOURCE, payload, row.project, row.incident_id)

        return build

    async def _move(
        self,
        action: ActionRequest,
        from_states: Sequence[str],
        to_state: str,
        kind: str,
        *,
        outcome: str | None = None,
        error: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> ActionRequest | None:
        row = await self._store.move_action(
            action.id, from_states, to_state,
            self._event_for(kind, error=error is not None, extra=extra),
            outcome=outcome, error=error,
        )  # fmt: skip
        if row is not None:
            self._wake()
        return row

    async def _audit(self, final: ActionRequest, *, decision: str = "allowed",
                     output: str = "") -> None:  # fmt: skip
        # Every finished action passes here once: orch's /metrics counts them.
        self.finished[final.action, "refused" if decision == "refused" else final.state] += 1
        details: dict[str, Any] = {"outcome": final.outcome, "error": final.error,
                                   "executor": self.replica_id}  # fmt: skip
        if output:
            details["output"] = output[-1000:]
        entry = AuditEntry(
            actor=final.requested_by, actor_kind=ACTOR_KIND.get(final.origin, "agent"),
            action=final.action, decision=decision, project=final.project,
            reason=final.reason, outcome=final.state, action_id=final.id, details=details,
        )  # fmt: skip
        try:
            await self._store.append_audit(entry)
        except Exception:  # the state change is recorded; the audit row must not undo it
            log.exception("audit row for action %s failed", final.id)

    async def _take_leases(self, project: Project, slots: int) -> list[str] | None:
        """The project lock and one remediation slot, or None (nothing held) if busy."""
        ttl, lock = lease_ttl(project), lock_name(project.name)
        if not await self._store.acquire_leases(self.replica_id, [lock], ttl, 1):
            return None
        try:
            slot = await self._store.acquire_leases(self.replica_id, slot_names(slots), ttl, 1)
        except BaseException:
            await self._release([lock])
            raise
        if not slot:
            await self._release([lock])
            return None
        return [lock, *slot]

    async def _release(self, names: list[str]) -> None:
        try:
            await self._store.release_leases(self.replica_id, names)
        except Exception:  # they expire on their own (TTL)
            log.exception("releasing %s failed", names)
