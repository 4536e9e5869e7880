"""Shared dependencies: a project down because a project it depends on is down is folded
into that outage's incident (issue 9; Alertmanager inhibition, PagerDuty dependencies).

Every outage keeps its own incident row (its downtime, probes and events are recorded as
for any other); the folder only sets or clears the row's ``caused_by``
(``storage.incident_links``), with an ``incident.updated`` event in one transaction.  The
rule, re-applied to all open ``down`` incidents whenever one opens or resolves and in a
sweep (``reconcile``; the same inputs give the same answer on every replica, and each
change is a compare-and-set, so concurrent replicas change a row once):

- **fold**: P is down and a project it depends on, directly or transitively, is down.
  P's incident points at the root cause: the deepest dependency that is down (several:
  the oldest outage).  P going down *before* its dependency is folded too when it went
  down at most ``dependency_grace`` (30 s) before it: dependents often fail first.  An
  older outage of P stays an incident of its own (it began for a reason of its own).
- **hold**: a project with ``depends_on`` that is down on its own gets no card and no
  restart for ``dependency_grace`` after it went down (Alertmanager's ``group_wait``),
  the time for its dependency's outage to be confirmed.  Then the folder announces the
  end of the hold (``fold: hold_ended``, once per incident), which posts its card; the
  Auto-Fixer reads the same age and starts.
- **release**: once the root resolves, its folded incidents stay folded for
  ``dependency_grace`` (most recover with it, and then resolve as usual, folded); those
  still down after that become incidents of their own (``fold: released``): own card,
  normal remediation.  Another dependency going down meanwhile re-points them there.

The Auto-Fixer, the escalations and the Decision agent act only on roots
(``agents.dependency_gate``); Slack shows folded incidents on the root's card and in its
thread (``bot.dependency_cards``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Final

from agents.bus import EventBus
from agents.clock import Clock, sleep_or_wake
from agents.dependency_graph import has_dependencies, root_cause, within_grace
from agents.events import INCIDENT_OPENED, INCIDENT_RESOLVED, INCIDENT_UPDATED, Event
from agents.lifecycle import cancel_and_wait
from bot.config import Config
from storage.base import EventFor, Incident, Store

log = logging.getLogger(__name__)

ROLE: Final = "dependencies"
SOURCE: Final = "dependencies"
FOLDED: Final = "folded"
RELEASED: Final = "released"
HOLD_ENDED: Final = "hold_ended"
_KEEP: Final = "keep"  # the link stays as it is
MAX_SWEEP_S: Final = 5.0


def hold_ended_id(incident_id: str) -> str:
    """One "hold ended" event per incident, whichever replica or sweep announces it."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"orch:dependency-hold:{incident_id}").hex


class DependencyFolder:
    def __init__(
        self,
        store: Store,
        config: Callable[[], Config],
        *,
        clock: Clock,
        wake: Callable[[], None],
    ) -> None:
        self._store = store
        self._config = config
        self._clock = clock
        self._wake = wake
        self._lock = asyncio.Lock()  # one reconciliation at a time in this process
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def register(self, bus: EventBus) -> None:
        bus.subscribe(ROLE, self._on_event, types=[INCIDENT_OPENED, INCIDENT_RESOLVED])

    async def start(self) -> None:
        self._task = asyncio.create_task(self._sweep_loop(), name="dependency-folder")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _on_event(self, event: Event) -> None:
        if str(event.payload.get("fingerprint", "")).endswith(":down"):
            await self.reconcile()

    async def _sweep_loop(self) -> None:
        while True:
            # Often enough that a hold or a release ends close to its grace.
            every = min(MAX_SWEEP_S, max(self._config().defaults.dependency_grace / 4, 0.05))
            await sleep_or_wake(self._clock, every, self._kick)
            try:
                await self.reconcile()
            except Exception:  # the store may be away; the next sweep tries again
                log.exception("dependency sweep failed")

    async def reconcile(self) -> int:
        """Apply the rule to every open down incident; return how many links changed."""
        async with self._lock:
            config = self._config()
            if not any(p.depends_on for p in config.projects) and not await self._linked():
                return 0  # a fleet without depends_on: no scan per incident event
            grace = config.defaults.dependency_grace
            now = self._clock.now()
            open_ = await self._store.list_incidents(open_only=True, limit=100_000)
            down = {i.project: i for i in open_ if i.condition == "down"}
            changed = 0
            for incident in sorted(down.values(), key=lambda i: (i.opened_at, i.project)):
                if incident.caused_by is None and not has_dependencies(config, incident.project):
                    continue
                root = root_cause(config, incident.project, down)
                target = await self._target(incident, root, grace, now)
                if target != _KEEP and target != incident.caused_by:
                    linked = await self._link(incident, target, root)
                    changed += linked is not None
                    incident = down[incident.project] = linked or incident
                if incident.caused_by is None and has_dependencies(config, incident.project):
                    await self._end_hold(incident, grace, now)
            return changed

    async def _linked(self) -> bool:
        """Some open incident is still folded (the config dropped its depends_on since)."""
        return any(i.caused_by for i in await self._store.list_incidents(open_only=True))

    async def _target(
        self, incident: Incident, root: Incident | None, grace: float, now: datetime
    ) -> str | None:
        """The ``caused_by`` the rule wants for ``incident``, or ``_KEEP``."""
        if root is not None:
            if incident.caused_by is None and not within_grace(
                incident.opened_at, root.opened_at, grace
            ):
                return _KEEP  # down well before its dependency: an outage of its own
            return root.id
        if incident.caused_by is None:
            return _KEEP
        cause = await self._store.get_incident(incident.caused_by)
        if cause is None or cause.state == "open" or cause.resolved_at is None:
            return None  # no longer a dependency (the config changed): on its own now
        if now < cause.resolved_at + timedelta(seconds=grace):
            return _KEEP  # the root just recovered: give its dependents the time to
        return None

    async def _link(
        self, incident: Incident, target: str | None, root: Incident | None
    ) -> Incident | None:
        extra: dict[str, Any]
        if target is None:
            extra = {"fold": RELEASED, "released_from": incident.caused_by}
        else:
            assert root is not None
            extra = {"fold": FOLDED, "root_project": root.project}
        linked = await self._store.link_incident(
            incident.id, target, expected=incident.caused_by, event_for=self._event_for(extra)
        )
        if linked is not None:
            log.info("%s %s (%s)", incident.fingerprint, extra["fold"], target or "own incident")
            self._wake()
        return linked

    async def _end_hold(self, incident: Incident, grace: float, now: datetime) -> None:
        if now < incident.opened_at + timedelta(seconds=grace):
            return
        event = replace(self._event_for({"fold": HOLD_ENDED})(incident),
                        id=hold_ended_id(incident.id))  # fmt: skip
        await self._store.append_events([event])  # an id already stored is ignored
        self._wake()

    def _event_for(self, extra: dict[str, Any]) -> EventFor:
        def build(incident: Incident) -> Event:
            payload = {"fingerprint": incident.fingerprint, "severity": incident.severity,
                       "summary": incident.summary, "caused_by": incident.caused_by,
                       **extra}  # fmt: skip
            return Event(INCIDENT_UPDATED, self._clock.now(), SOURCE, payload,
                         project=incident.project, incident_id=incident.id)  # fmt: skip

        return build
