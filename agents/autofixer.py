"""The Auto-Fixer: fixes routine problems by itself, within strict budgets (DESIGN §6).

For each open incident of a project this replica polls, it decides one of: act (ask the
Action Executor for the policy's action: down → restart, memory anomaly → clear_cache),
wait (an action is in flight, or the backoff has not passed), stand down (silenced,
paused, flapping, suspended) or escalate (attempts spent, budget spent, a rule forbids
acting, half the fleet down).  Code decides; every limit is read from the store, so it
holds across replicas and restarts:

- attempts per incident: the incident's actions (``actions.incident_id``);
- the restart budget: ``try_take_budget`` (atomic across replicas), operators' restarts
  counting too; when spent, auto-fix is suspended in the store (so it stays suspended
  after an orch restart) until the project recovers or someone resumes it;
- backoff: ``backoff`` doubling per recent attempt up to ``backoff_max``, counting the
  attempts of the last ``backoff_reset`` (a project healthy that long starts afresh);
- one decision at a time per project: a lease ``fix:<project>`` (two replicas, or an
  event and the sweep, never both act);
- mass failure: when ``mass_failure_ratio`` of the fleet is down at once, orch suspects
  its own network, restarts nothing and escalates once per episode;
- shared dependencies: a project folded into a dependency's outage, or whose dependency
  is down, is left alone (``agents.dependency_gate``); only the root is restarted, and
  such projects do not count towards a mass failure.

Decisions come from events (an incident opened, an action failed) and from a periodic
sweep, which also catches what an event could not decide yet (a backoff running out).
Each replica decides only for the projects it polls: it knows their flapping state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from agents.actions import request_action
from agents.bus import EventBus
from agents.clock import Clock, sleep_or_wake
from agents.dependency_gate import dependency_hold
from agents.dependency_graph import explained_by_dependency
from agents.escalation import Escalator, escalation_id
from agents.events import (
    ACTION_FAILED,
    ACTION_VERIFIED,
    INCIDENT_OPENED,
    INCIDENT_RESOLVED,
    PROJECT_FLAPPING,
    REMEDIATION_SUSPENDED,
    Event,
)
from agents.lifecycle import cancel_and_wait
from bot.config import Config, Project
from storage.base import Incident, Store
from storage.budget_store import Suspension
from storage.execution_store import IN_FLIGHT
from storage.operations_store import ActionRequest

log = logging.getLogger(__name__)

SOURCE: Final = "autofixer"
MEMORY_METRICS: Final = frozenset({"memory_percent", "memory_mb"})
FLEET: Final = "*"  # the suspension row of a fleet-wide stand-down (never a project name)
DECISION_LEASE_S: Final = 30.0
MIN_FLEET_FOR_MASS: Final = 3  # below this, "half the fleet" is one or two projects


@dataclass(frozen=True, slots=True)
class Decision:
    """What the Auto-Fixer decided for a project (logged; tests read it)."""

    kind: str  # act | wait | stand_down | escalate | nothing
    why: str
    action_id: str | None = None


class AutoFixer:
    def __init__(
        self,
        store: Store,
        config: Callable[[], Config],
        escalator: Escalator,
        *,
        clock: Clock,
        wake: Callable[[], None],
        replica_id: str,
        held: Callable[[], Collection[str]],
        is_flapping: Callable[[str], bool],
        sweep_interval: float = 5.0,
    ) -> None:
        self._store = store
        self._config = config
        self._escalator = escalator
        self._clock = clock
        self._wake_relay = wake
        self._replica = replica_id
        self._held = held
        self._is_flapping = is_flapping
        self._sweep_interval = sweep_interval
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def register(self, bus: EventBus) -> None:
        # Per replica: each sees every event and decides only for the projects it polls.
        bus.subscribe(
            f"autofixer:{self._replica}",
            self._on_event,
            types=[INCIDENT_OPENED, INCIDENT_RESOLVED, ACTION_FAILED, ACTION_VERIFIED,
                   PROJECT_FLAPPING],
        )  # fmt: skip

    async def start(self) -> None:
        self._task = asyncio.create_task(self._sweep_loop(), name="autofixer")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    # -- triggers ----------------------------------------------------------------------
    async def _on_event(self, event: Event) -> None:
        name = event.project
        if name is None or name not in self._held():
            return
        if event.type == INCIDENT_RESOLVED:
            await self._lift_budget_suspension(name)
            return
        if event.type == ACTION_VERIFIED:
            await self._follow_pause(name, event)
            return
        await self.evaluate(name)

    async def _sweep_loop(self) -> None:
        while True:
            await sleep_or_wake(self._clock, self._sweep_interval, self._kick)
            self._kick.clear()
            try:
                await self.sweep()
            except Exception:  # the store may be away; the next sweep tries again
                log.exception("auto-fixer sweep failed")

    async def sweep(self) -> list[Decision]:
        held = set(self._held())
        open_ = await self._store.list_incidents(open_only=True, limit=100_000)
        names = sorted({i.project for i in open_ if i.project in held})
        if not names:
            return []
        # The fleet's statuses once per sweep, not once per project: in a mass failure
        # hundreds of projects are open at once.
        down = await self._fleet_down(self._config())
        return [await self.evaluate(name, fleet_down=down) for name in names]

    # -- deciding ----------------------------------------------------------------------
    async def evaluate(self, name: str, *, fleet_down: list[str] | None = None) -> Decision:
        """Decide for project ``name`` now, under its decision lease.  ``fleet_down``: the
        projects announced down, when the caller already read them."""
        lease = f"fix:{name}"
        if not await self._store.acquire_leases(self._replica, [lease], DECISION_LEASE_S, 1):
            return Decision("wait", "another decision on this project is in progress")
        try:
            decision = await self._decide(name, fleet_down)
        finally:
            await self._store.release_leases(self._replica, [lease])
        if decision.kind != "nothing":
            log.info("auto-fix %s: %s (%s)", name, decision.kind, decision.why)
        return decision

    async def _decide(self, name: str, fleet_down: list[str] | None) -> Decision:
        config = self._config()
        try:
            project = config.project(name)
        except KeyError:
            return Decision("nothing", "not configured any more")
        incident, action = await self._fixable(project)
        if incident is None or action is None:
            return Decision("nothing", "no incident auto-fix handles")
        # Before any rule that escalates: a folded outage is the root's to fix and page.
        hold = await dependency_hold(self._store, config, incident, self._clock.now())
        if hold is not None:
            return Decision(hold.kind, hold.why)
        policy = project.policy
        if not policy.auto_fix:
            return await self._escalate(project, incident, "auto_fix_off",
                                        f"auto-fix is off for {name}")  # fmt: skip
        if action not in project.allowed_actions:
            return await self._escalate(project, incident, "action_not_allowed",
                                        f"{action} is not an allowed action of {name}")  # fmt: skip
        if await self._store.active_silence(name) is not None:
            return Decision("stand_down", "silenced (maintenance)")
        if self._is_flapping(name):
            await self._suspended_notice(project, incident, "flapping")
            return Decision("stand_down", "flapping")
        suspension = await self._store.remediation_suspended(name)
        if suspension is not None:
            return Decision("stand_down", f"suspended: {suspension.reason}")
        down = fleet_down if fleet_down is not None else await self._fleet_down(config)
        mass = await self._mass_failure(config, down)
        if mass is not None:
            return mass
        actions = await self._store.incident_actions(incident.id)
        if any(a.state in IN_FLIGHT for a in actions):
            return Decision("wait", "an action is in flight")
        if await self._settling(project, actions):
            return Decision("wait", "the last action worked; waiting for the incident to close")
        tried = [a for a in actions if a.origin == "autofix" and a.action == action]
        exhausted = len(tried) >= policy.attempts_per_incident
        summary = f"{len(tried)} automatic {action} attempt(s) did not fix {name}"
        if len(tried) > policy.attempts_per_incident:  # the extra one was offered already
            return await self._escalate(project, incident, "attempts_exhausted", summary)
        if not exhausted:
            due = await self._backoff_due(project, action)
            if due is not None:
                return Decision("wait", f"backoff until {due.isoformat()}")
        if action == "restart" and not await self._store.try_take_budget(
            name, action, policy.restart_budget, policy.budget_window, SOURCE
        ):
            await self._store.suspend_remediation(
                name, "budget_exhausted", SOURCE, self._suspension_event(incident)
            )
            self._wake_relay()
            return await self._escalate(
                project, incident, "budget_exhausted",
                f"{policy.restart_budget} restarts in {policy.budget_window:g}s already;"
                " auto-fix suspended until it recovers or someone resumes it",
            )  # fmt: skip
        if exhausted:
            # Escalate, and offer a human one more attempt (once: the offered one counts
            # as tried, approved or not).  An approval no one gives expires; nothing runs.
            decision = await self._escalate(project, incident, "attempts_exhausted", summary)
            await self._ask(project, incident, action, needs_approval=True,
                            reason=f"{summary}; approve to try once more")  # fmt: skip
            return decision
        requested = await self._ask(
            project, incident, action, needs_approval=action in project.needs_approval,
            reason=_reason(incident, len(tried)),
        )  # fmt: skip
        return Decision("act", f"{action} (attempt {len(tried) + 1})", requested)

    async def _ask(
        self, project: Project, incident: Incident, action: str, *, needs_approval: bool,
        reason: str,
    ) -> str:  # fmt: skip
        """Ask the executor (through the store) for ``action``; return the action id."""
        requested = await request_action(
            self._store, project.name, action, requested_by=SOURCE, reason=reason,
            origin="autofix", needs_approval=needs_approval, incident_id=incident.id,
            source=SOURCE, approval_ttl_s=project.policy.approval_ttl,
        )  # fmt: skip
        self._wake_relay()
        return requested.action.id

    async def _fixable(self, project: Project) -> tuple[Incident | None, str | None]:
        """The open incident auto-fix handles first (down before memory), and its action."""
        incidents = await self._store.list_incidents(project=project.name, open_only=True)
        policy = project.policy
        for incident in incidents:
            if incident.condition == "down" and policy.on_down:
                return incident, policy.on_down
        for incident in incidents:
            metric = incident.condition.removeprefix("metric:")
            if metric in MEMORY_METRICS and policy.on_memory:
                return incident, policy.on_memory
        return None, None

    async def _backoff_due(self, project: Project, action: str) -> datetime | None:
        """When the next attempt of ``action`` may start, if that is still ahead: the
        backoff doubles with each attempt (anyone's) of the last ``backoff_reset``."""
        policy = project.policy
        now = await self._store.db_now()
        horizon = now - timedelta(seconds=policy.backoff_reset)
        recent = [a for a in await self._store.list_actions(project=project.name, limit=50)
                  if a.action == action and a.created_at > horizon
                  and a.state not in ("denied", "expired")]  # fmt: skip
        if not recent:
            return None
        last = max(a.finished_at or a.started_at or a.created_at for a in recent)
        delay = min(policy.backoff * 2 ** (len(recent) - 1), policy.backoff_max)
        due = last + timedelta(seconds=delay)
        return due if due > now else None

    async def _settling(self, project: Project, actions: list[ActionRequest]) -> bool:
        """The incident's last action was verified: give the incident the time to close
        (probes confirming recovery, a metric falling back) before acting again."""
        last = actions[-1] if actions else None
        if last is None or last.state != "verified" or last.finished_at is None:
            return False
        grace = timedelta(seconds=project.policy.verify_timeout)
        return await self._store.db_now() < last.finished_at + grace

    async def _fleet_down(self, config: Config) -> list[str]:
        """The projects down for no reason orch can see: a project down with a project it
        depends on is explained (agents.dependencies), not a sign of orch's own network."""
        statuses = await self._store.announced_statuses(config.project_names())
        down = sorted(n for n, s in statuses.items() if s == "down")
        explained = explained_by_dependency(config, down)
        return [n for n in down if n not in explained]

    async def _mass_failure(self, config: Config, down: list[str]) -> Decision | None:
        """Half the fleet down at once: restart nothing, escalate once per episode."""
        names = config.project_names()
        massive = len(names) >= MIN_FLEET_FOR_MASS and len(
            down
        ) >= config.defaults.mass_failure_ratio * len(names)
        standing = await self._store.remediation_suspended(FLEET)
        if not massive:
            if standing is not None and standing.reason == "mass_failure":
                await self._store.resume_remediation(FLEET)
            return None
        if standing is None:
            made = await self._store.suspend_remediation(
                FLEET, "mass_failure", SOURCE, self._suspension_event(None)
            )
            await self._escalator.escalate_fleet(
                "mass_failure",
                f"{len(down)} of {len(names)} projects are down at once: orch suspects its own"
                " network and restarts nothing",
                episode=made.since.isoformat(), down=down,
            )  # fmt: skip
        return Decision("stand_down", f"mass failure: {len(down)} of {len(names)} down")

    # -- effects -----------------------------------------------------------------------
    async def _escalate(self, project: Project, incident: Incident, reason: str,
                        summary: str) -> Decision:  # fmt: skip
        await self._escalator.escalate(project, incident, reason, summary)
        return Decision("escalate", reason)

    async def _suspended_notice(self, project: Project, incident: Incident, reason: str) -> None:
        """One ``remediation.suspended`` notice per incident and reason (a stable id)."""
        event = Event(
            REMEDIATION_SUSPENDED, self._clock.now(), SOURCE, {"reason": reason},
            project=project.name, incident_id=incident.id,
            id=escalation_id(f"notice:{incident.id}", reason),
        )  # fmt: skip
        await self._store.append_events([event])
        self._wake_relay()

    def _suspension_event(self, incident: Incident | None) -> Callable[[Suspension], Event]:
        def build(s: Suspension) -> Event:
            project = None if s.project == FLEET else s.project
            return Event(REMEDIATION_SUSPENDED, s.since, SOURCE,
                         {"reason": s.reason, "by": s.by}, project,
                         incident.id if incident else None)  # fmt: skip

        return build

    async def _lift_budget_suspension(self, name: str) -> None:
        """A project that recovered is fixable again (the budget still counts)."""
        suspension = await self._store.remediation_suspended(name)
        if suspension is not None and suspension.reason == "budget_exhausted":
            await self._store.resume_remediation(name)

    async def _follow_pause(self, name: str, event: Event) -> None:
        """A verified pause stands auto-fix down until a verified resume, which also
        lifts a spent budget's suspension: ``/orch resume`` is how people hand a project
        back to auto-fix."""
        action = event.payload.get("action")
        if action == "pause":
            by = str(event.payload.get("requested_by") or SOURCE)
            await self._store.suspend_remediation(name, "paused", by, self._suspension_event(None))
            self._wake_relay()
        elif action == "resume":  # a person says: act on it again (paused or budget spent)
            await self._store.resume_remediation(name)


def _reason(incident: Incident, tried: int) -> str:
    attempt = "" if tried == 0 else f", attempt {tried + 1}"
    return f"auto-fix: {incident.summary}{attempt}"[:300]
