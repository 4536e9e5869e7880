"""Escalation: handing a problem to humans with what they need to act (DESIGN §4, §6).

``escalation.raised`` carries the context an on-call engineer would gather first: the
project's recent probes, the redacted tail of its ``/logs``, the actions already tried
and how they ended, and the group's on-call user group to mention.  Everything is bounded
(a few probes, a few short log lines), and every log line is redacted before it is
stored: the event goes to the store, to Slack, and later to Claude.

An escalation's event id is derived from what it is about (an incident and a reason, or
a fleet-wide episode), and the store keeps one event per id: two replicas, a retry or a
redelivery escalating the same thing store it once, so humans are paged once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

import aiohttp

from agents.analysis_context import fetch_log_lines, recent_probe_lines
from agents.clock import Clock
from agents.events import ESCALATION_RAISED, Event
from bot.config import Config, Project
from storage.base import Incident, Store

log = logging.getLogger(__name__)

SOURCE: Final = "autofixer"
PROBES_SHOWN: Final = 5
LOG_LINES: Final = 15


def escalation_id(subject: str, reason: str) -> str:
    """The same escalation always gets the same event id (stored once)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"orch:escalation:{subject}:{reason}").hex


def dead_letter_escalation(role: str, event: Event, error: str, now: datetime) -> Event:
    """A bus event that consumer ``role`` failed on five times, as an escalation people
    see rather than a silent log line.  Its id is derived from the dead entry, so a
    repeated callback stores one escalation."""
    context = {"role": role, "event_id": event.id, "event_type": event.type,
               "error": error[:500]}  # fmt: skip
    return Event(
        ESCALATION_RAISED, now, "bus", {"reason": "dead_letter", "context": context},
        project=event.project, incident_id=event.incident_id,
        id=uuid.uuid5(uuid.NAMESPACE_URL, f"orch:dead:{role}:{event.id}").hex,
    )  # fmt: skip


class Escalator:
    def __init__(
        self,
        store: Store,
        config: Callable[[], Config],
        session: Callable[[], aiohttp.ClientSession | None],
        *,
        clock: Clock,
        wake: Callable[[], None],
    ) -> None:
        self._store = store
        self._config = config
        self._session = session
        self._clock = clock
        self._wake = wake

    async def escalate(
        self, project: Project, incident: Incident | None, reason: str, summary: str
    ) -> Event:
        """Raise (once per incident and reason) an escalation about ``project``."""
        context: dict[str, Any] = {
            "summary": summary,
            "recent_probes": await recent_probe_lines(self._store, project.name, PROBES_SHOWN),
            "logs": await self._logs(project),
            "actions": await self._actions(incident),
        }
        oncall = self._oncall(project)
        if oncall:
            context["oncall"] = oncall
        subject = incident.id if incident is not None else f"project:{project.name}"
        event = Event(
            ESCALATION_RAISED, self._clock.now(), SOURCE, {"reason": reason, "context": context},
            project=project.name, incident_id=incident.id if incident else None,
            id=escalation_id(subject, reason),
        )  # fmt: skip
        await self._emit(event)
        return event

    async def escalate_fleet(
        self, reason: str, summary: str, episode: str, down: list[str]
    ) -> Event:
        """A fleet-wide escalation (no one project), once per ``episode``."""
        context = {"summary": summary, "down": down[:50], "down_count": len(down)}
        event = Event(
            ESCALATION_RAISED, self._clock.now(), SOURCE, {"reason": reason, "context": context},
            id=escalation_id(f"fleet:{episode}", reason),
        )  # fmt: skip
        await self._emit(event)
        return event

    async def _emit(self, event: Event) -> None:
        await self._store.append_events([event])  # an id already stored is ignored
        self._wake()

    def _oncall(self, project: Project) -> str | None:
        group = self._config().orchestrators.get(project.orchestrator or "")
        return group.oncall if group is not None else None

    async def _actions(self, incident: Incident | None) -> list[dict[str, Any]]:
        if incident is None:
            return []
        return [{"action_id": a.id, "action": a.action, "origin": a.origin, "state": a.state,
                 "outcome": a.outcome, "error": a.error}
                for a in await self._store.incident_actions(incident.id)]  # fmt: skip

    async def _logs(self, project: Project) -> list[dict[str, str]]:
        """The tail of ``/logs``, redacted; [] when it cannot be read (the escalation
        must not wait on a project that is down)."""
        lines = await fetch_log_lines(project, self._session(), LOG_LINES, [])
        return [{"ts": line.ts, "level": line.level, "message": line.message} for line in lines]
