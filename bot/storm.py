"""Storm folding: many incidents at once in one channel become one grouped message.

The rule (decided atomically by the store when a card is queued, ``slack_enqueue``):

- A new incident card is **folded** when ``STORM_AFTER`` (5) or more cards were already
  queued for the same channel in the last ``STORM_WINDOW_S`` (30 s); folded cards count
  too, so a storm lasts until the channel has had fewer than 5 new incidents in 30 s.
  With 8 incidents in a burst: cards 1-5 are posted, 6-8 are folded.
- Folded cards of one storm share **one grouped message** (``storm.json.j2``), queued
  when the first card folds.  Cards that fold before it is sent are simply in it (it is
  rendered at send time from every member); a card that folds after it was sent queues
  a ``chat.update`` of that same message, so it keeps listing the whole storm.  A storm
  ends when no card folded into it for 30 s; the next fold starts a new one.
- A folded incident has no card of its own: its card **is** the grouped message.  Its
  card edits are not sent (state ``folded``: the grouped message does not show states);
  its timeline replies go to the grouped message's thread, each line prefixed with the
  project (``bot.notifier``), so the thread tells every folded incident's story.
- Nothing is dropped: every folded card stays in the outbox with its rendered card, and
  every incident is recorded and tracked as usual.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final

from bot.cards import StormView
from bot.render import render_blocks
from storage.base import Incident
from storage.slack_store import STORM_AFTER, STORM_WINDOW_S

__all__ = ["STORM_AFTER", "STORM_WINDOW_S", "incident_line", "render_storm"]

TEMPLATE: Final = "storm.json.j2"


def incident_line(incident: Incident) -> dict[str, Any]:
    """What a card carries for the storm message, should it be folded (JSON-safe)."""
    return {
        "id": incident.id,
        "project": incident.project,
        "severity": incident.severity,
        "summary": incident.summary,
        "fingerprint": incident.fingerprint,
        "opened_at": incident.opened_at.isoformat(),
    }


def render_storm(
    lines: Iterable[Mapping[str, Any]], window_s: float = STORM_WINDOW_S
) -> dict[str, Any]:
    """The grouped message listing the folded incidents (``lines`` from their cards)."""
    incidents = [_incident(line) for line in lines]
    return render_blocks(TEMPLATE, storm=StormView.from_incidents(incidents, window_s))


def _incident(line: Mapping[str, Any]) -> Incident:
    fingerprint = str(line.get("fingerprint", "?"))
    return Incident(
        id=str(line.get("id", "")),
        fingerprint=fingerprint,
        project=str(line.get("project", "?")),
        condition=fingerprint.partition(":")[2],
        severity=str(line.get("severity", "warning")),
        summary=str(line.get("summary", "")),
        opened_at=datetime.fromisoformat(str(line["opened_at"])),
    )
