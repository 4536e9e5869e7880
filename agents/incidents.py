"""IncidentManager: opens, updates and resolves incidents from status and metric events.

One incident per fingerprint ``project:condition`` (DESIGN §5): ``<project>:down`` and
``<project>:metric:<name>``.  Every change goes through the store together with its
``incident.*`` event in one transaction (``event_for``); the relay then publishes it.

Delivery is at least once and, with several consumers, not always in order, so every
handler is idempotent and ignores stale events:

- an incident's ``opened_at`` / ``resolved_at`` are the ``ts`` of the events that caused
  them (the moment of detection, not of handling), which makes a redelivery recognisable;
- open: the store allows one open incident per fingerprint, and an event no newer than
  the last resolution of that fingerprint is old news, not a new outage;
- update: only when the severity really changes, never from an event older than the
  incident;
- resolve: a no-op when nothing is open, and refused for an event older than the open
  incident (a late "recovered" must not close the next outage).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from agents.bus import EventBus
from agents.clock import Clock
from agents.events import (
    INCIDENT_OPENED,
    INCIDENT_RESOLVED,
    INCIDENT_UPDATED,
    METRIC_ANOMALY,
    METRIC_RECOVERED,
    PROJECT_STATUS_CHANGED,
    Event,
)
from agents.outbox import OutboxRelay
from storage.base import EventFor, Incident, Store

log = logging.getLogger(__name__)

SOURCE: Final = "incidents"
ROLE: Final = "incidents"
CRITICAL: Final = "critical"
WARNING: Final = "warning"
_SEVERITY: Final = {"warn": WARNING, "crit": CRITICAL}


def down_fingerprint(project: str) -> str:
    return f"{project}:down"


def metric_fingerprint(project: str, metric: str) -> str:
    return f"{project}:metric:{metric}"


def main_incident(incidents: Sequence[Incident]) -> Incident | None:
    """Of a project's open incidents (newest first), the one an action or an analysis is
    about: the project being down, else the newest."""
    down = [i for i in incidents if i.condition == "down"]
    return next(iter(down or incidents), None)


class IncidentManager:
    def __init__(self, store: Store, relay: OutboxRelay, clock: Clock) -> None:
        self._store = store
        self._relay = relay
        self._clock = clock

    def register(self, bus: EventBus) -> None:
        bus.subscribe(
            ROLE, self.handle, types=[PROJECT_STATUS_CHANGED, METRIC_ANOMALY, METRIC_RECOVERED]
        )

    async def handle(self, event: Event) -> None:
        project = event.project
        if project is None:
            log.warning("%s %s without a project; ignored", event.type, event.id)
            return
        payload = event.payload
        if event.type == PROJECT_STATUS_CHANGED:
            to = payload.get("to")
            if to == "down":
                summary = f"{project} is down: {payload.get('reason') or 'no answer'}"
                await self._open(event, project, "down", CRITICAL, summary)
            elif to in ("healthy", "degraded"):
                # Any good status closes an outage, whatever it came from: after a restart
                # of orch the monitor starts from unknown.
                await self._resolve(event, down_fingerprint(project))
        elif event.type == METRIC_ANOMALY:
            metric = str(payload["metric"])
            severity = _SEVERITY.get(str(payload.get("level")), WARNING)
            summary = (
                f"{project} {metric} is {payload['value']:g}, beyond the "
                f"{payload.get('level')} threshold {payload['threshold']:g}"
            )
            await self._open_or_update(event, project, f"metric:{metric}", severity, summary)
        elif event.type == METRIC_RECOVERED:
            await self._resolve(event, metric_fingerprint(project, str(payload["metric"])))

    # -- transitions ---------------------------------------------------------------------
    async def _open(
        self, cause: Event, project: str, condition: str, severity: str, summary: str
    ) -> Incident | None:
        fingerprint = f"{project}:{condition}"
        if await self._already_resolved_after(project, fingerprint, cause.ts):
            log.info("stale %s for %s ignored", cause.type, fingerprint)
            return None
        incident = Incident(
            id=uuid.uuid4().hex,
            fingerprint=fingerprint,
            project=project,
            condition=condition,
            severity=severity,
            summary=summary,
            opened_at=cause.ts,
        )
        opened = await self._store.open_incident(incident, self._event_for(INCIDENT_OPENED))
        if opened is not None:
            log.debug("incident opened %s (%s)", fingerprint, severity)
            self._relay.wake()
        return opened

    async def _open_or_update(
        self, cause: Event, project: str, condition: str, severity: str, summary: str
    ) -> None:
        fingerprint = f"{project}:{condition}"
        current = await self._store.get_open_incident(fingerprint)
        if current is None:
            if await self._open(cause, project, condition, severity, summary) is not None:
                return
            # Lost a race with another replica (or the cause was stale): look again.
            current = await self._store.get_open_incident(fingerprint)
            if current is None:
                return
        if current.severity == severity or cause.ts < current.opened_at:
            return
        updated = await self._store.update_incident(
            fingerprint, severity, summary, self._event_for(INCIDENT_UPDATED)
        )
        if updated is not None:
            log.debug("incident updated %s (%s)", fingerprint, severity)
            self._relay.wake()

    async def _resolve(self, cause: Event, fingerprint: str) -> None:
        current = await self._store.get_open_incident(fingerprint)
        if current is None or cause.ts < current.opened_at:
            return
        resolved = await self._store.resolve_incident(
            fingerprint, cause.ts, self._event_for(INCIDENT_RESOLVED)
        )
        if resolved is not None:
            log.debug("incident resolved %s after %ss", fingerprint, resolved.duration_s)
            self._relay.wake()

    async def _already_resolved_after(self, project: str, fingerprint: str, ts: datetime) -> bool:
        """True when the newest incident of ``fingerprint`` was resolved at or after
        ``ts``: the event that would open it again is a late redelivery."""
        for incident in await self._store.list_incidents(project=project, limit=100):
            if incident.fingerprint == fingerprint:  # newest opened first
                return incident.resolved_at is not None and incident.resolved_at >= ts
        return False

    def _event_for(self, event_type: str) -> EventFor:
        def build(incident: Incident) -> Event:
            payload: dict[str, Any] = {
                "fingerprint": incident.fingerprint,
                "severity": incident.severity,
                "summary": incident.summary,
            }
            if event_type == INCIDENT_RESOLVED:
                payload["duration_s"] = incident.duration_s
            return Event(
                event_type,
                self._clock.now(),
                SOURCE,
                payload,
                project=incident.project,
                incident_id=incident.id,
            )

        return build
