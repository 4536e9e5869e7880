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
- Thread lines are **batched**: a line for a folded incident is marked ``storm_line``
  (the storm's id) by the notifier, and when the outbox sends one it takes along the
  lines queued behind it for the same storm (``storm_batch``, up to ``BATCH_LINES``), as
  one message; the others become ``folded`` ("sent with row N").  A storm of 150
  incidents per channel with three lines each (escalated, analysed, resolved) is about
  twenty thread messages, not 450, so the channel keeps up at one message a second.
- Nothing is dropped: every folded card and batched line stays in the outbox with what it
  rendered, and every incident is recorded and tracked as usual.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from bot.cards import StormView
from bot.render import render_blocks
from storage.base import Incident, Store
from storage.slack_store import STORM_AFTER, STORM_WINDOW_S, SlackOutboxRow

__all__ = [
    "BATCH_LINES",
    "STORM_AFTER",
    "STORM_LINE",
    "STORM_WINDOW_S",
    "incident_line",
    "render_storm",
    "storm_batch",
]

TEMPLATE: Final = "storm.json.j2"
STORM_LINE: Final = "storm_line"  # payload key of a thread line in a storm's thread: its id
BATCH_LINES: Final = 20  # lines per batched message (2 blocks each; Slack allows 50)
MAX_BLOCKS: Final = 50
MAX_TEXT: Final = 4000  # the notification text; the blocks carry every line
BATCH_SCAN: Final = 1000  # pending rows of the channel looked through for a batch


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
    """The grouped message listing the folded incidents (``lines`` from their cards).  Its
    title says "opened within" the folding window, or the time from the first folded
    incident to the last when the storm lasted longer (a minute-long storm is one message)."""
    incidents = [_incident(line) for line in lines]
    opened = [i.opened_at for i in incidents]
    span = math.ceil((max(opened) - min(opened)).total_seconds()) if opened else 0
    return render_blocks(TEMPLATE, storm=StormView.from_incidents(incidents, max(window_s, span)))


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


async def storm_batch(
    store: Store, row: SlackOutboxRow, message: Mapping[str, Any]
) -> tuple[dict[str, Any], list[SlackOutboxRow]]:
    """``row``'s message (a line in a storm's thread) merged with the lines queued behind it
    for the same storm, and those rows; the caller marks them ``folded`` once it is sent."""
    storm_id = row.payload.get(STORM_LINE)
    pending = await store.slack_rows(channel=row.channel, state="pending", limit=BATCH_SCAN)
    mates = [
        r for r in pending
        if r.id != row.id and r.kind == "thread_reply" and r.payload.get(STORM_LINE) == storm_id
    ]  # fmt: skip
    messages = [dict(message)]
    batched: list[SlackOutboxRow] = []
    blocks = len(message.get("blocks") or ())
    for mate in mates[: BATCH_LINES - 1]:
        mate_message = mate.payload.get("message") or {}
        more = len(mate_message.get("blocks") or ())
        if blocks + more > MAX_BLOCKS:
            break
        blocks += more
        messages.append(mate_message)
        batched.append(mate)
    return merge_lines(messages), batched


def merge_lines(messages: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Several thread lines as one message: their blocks in order, their texts joined."""
    if len(messages) == 1:
        return dict(messages[0])
    text = "\n".join(str(m.get("text") or "") for m in messages)
    if len(text) > MAX_TEXT:
        text = text[: MAX_TEXT - 1] + "…"
    blocks = [block for m in messages for block in (m.get("blocks") or ())]
    return {"text": text, "blocks": blocks}
