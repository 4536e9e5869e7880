"""TerminalCards: without Slack, the same incident cards printed as text (DESIGN §1).

A bus subscriber (role ``terminal-cards``) that ``orch demo`` registers instead of the
Slack notifier and outbox when there is no ``SLACK_BOT_TOKEN``.  It tells the same
story from the same view models and the ``.txt.j2`` twins of the Slack templates:
``incident.*`` print the card as it now is (red/orange, then green with the downtime),
every other event about an incident prints its timeline line under it, indented, as the
card's thread would show it.  Nothing is queued or stored.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Final

from agents.bus import EventBus
from agents.events import EVENT_TYPES, INCIDENT_OPENED, Event
from bot.cards import IncidentCardView, TimelineEntry
from bot.notifier import INCIDENT_TYPES, derived_status
from bot.render import render_text
from storage.base import Incident, Store

log = logging.getLogger(__name__)

ROLE: Final = "terminal-cards"
INDENT: Final = "      ↳ "
_LOOKUP_LIMIT: Final = 200


def _stdout(text: str) -> None:
    print(text, file=sys.stdout, flush=True)


class TerminalCards:
    def __init__(
        self,
        store: Store,
        *,
        write: Callable[[str], None] = _stdout,
        statuses: Callable[[], Mapping[str, str]] | None = None,
        oncall: Callable[[str], str | None] = lambda _project: None,
    ) -> None:
        """``write`` takes one rendered block of text (``TerminalView.say`` in the demo,
        print by default); ``statuses`` is ``HealthMonitor.statuses``."""
        self._store = store
        self._write = write
        self._statuses = statuses
        self._oncall = oncall
        self._thread_len: Counter[str] = Counter()

    def register(self, bus: EventBus) -> None:
        bus.subscribe(ROLE, self.handle, types=sorted(EVENT_TYPES))

    async def handle(self, event: Event) -> None:
        if event.incident_id is None or event.project is None:
            return
        if event.type not in INCIDENT_TYPES:
            entry = TimelineEntry.from_event(event, self._oncall(event.project))
            self._thread_len[event.incident_id] += 1
            line = render_text("timeline_line.txt.j2", entry=entry)
            self._write(f"{INDENT}{event.project}: {line}")
            return
        incident = await self._incident(event)
        if incident is None:
            return
        if event.type != INCIDENT_OPENED:
            self._thread_len[incident.id] += 1
        statuses = self._statuses() if self._statuses is not None else {}
        card = IncidentCardView.from_incident(
            incident,
            project_status=statuses.get(incident.project) or derived_status(incident),
            timeline_len=self._thread_len[incident.id],
            oncall_id=self._oncall(incident.project),
            mention_oncall=event.type == INCIDENT_OPENED,
        )
        self._write(render_text("incident_card.txt.j2", card=card))

    async def _incident(self, event: Event) -> Incident | None:
        rows = await self._store.list_incidents(project=event.project, limit=_LOOKUP_LIMIT)
        found = next((i for i in rows if i.id == event.incident_id), None)
        if found is None:
            log.warning("%s %s: incident %s not found", event.type, event.id, event.incident_id)
        return found
