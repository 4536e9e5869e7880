"""Slack for shared dependencies (``depends_on``; the rule: ``agents.dependencies``).

One card per root cause, not one per project that went down with it:

- **held**: a project with ``depends_on`` that goes down gets no card at once; its card
  comes with the folder's ``hold_ended`` (after ``dependency_grace``) if its outage was
  not folded by then.  Resolved while held: no card (the incident is still recorded).
- **folded** (the incident's ``caused_by`` is set): no card of its own.  The root's card
  is edited to list it under "Also affected" (✅ once it recovered); those edits are
  marked supersedable, so a burst of twenty folds costs the channel one or two edits
  (``bot.slack_outbox``).  Folding and recovering get no thread lines (twenty dependents
  would be forty lines); any other event of it (an action a person ran, say) goes to the
  root's thread prefixed with its project.  If
  it had a card already (down before its dependency, past the hold), that card is edited
  to say where it went, and its thread says so too.
- **released** (still down after the root recovered): the normal path posts its own card;
  the root's thread says it is on its own now.

How this sits with storm folding (``bot.storm``): a storm folds *cards* already queued in
one channel; a folded dependent queues no card, so it never feeds a storm, and a storm of
unrelated incidents is as before.  If a root's own card was folded into a storm message,
its dependents' lines go to that message's thread (prefixed with their project), and
card edits, which a storm message does not show, are skipped by the outbox as for any
folded card.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, Final

from agents.dependencies import FOLDED, HOLD_ENDED, RELEASED
from agents.dependency_graph import has_dependencies
from agents.events import INCIDENT_OPENED, INCIDENT_RESOLVED, INCIDENT_UPDATED, Event
from bot.cards import AffectedProject, TimelineEntry
from bot.config import Config
from bot.render import render_blocks
from bot.slack_outbox import SUPERSEDABLE
from storage.base import Incident, Store
from storage.slack_store import NewSlackMessage, SlackCard

# Renders an update of ``incident``'s card for ``event`` in ``channel``: the notifier's.
CardUpdate = Callable[[Incident, Event, str, int], Awaitable[NewSlackMessage]]
_RELEASE_EVENTS: Final = frozenset({HOLD_ENDED, RELEASED})
INCIDENT_TYPES: Final = frozenset({INCIDENT_OPENED, INCIDENT_UPDATED, INCIDENT_RESOLVED})
MAX_AFFECTED: Final = 500  # names read for a card (it shows 30 and a count)


def fold_of(event: Event) -> str | None:
    fold = event.payload.get("fold")
    return fold if isinstance(fold, str) else None


def posts_own_card(event: Event) -> bool:
    """The event that ends a hold or a fold: it posts the dependent's own card."""
    return fold_of(event) in _RELEASE_EVENTS


class DependencyCards:
    def __init__(
        self,
        store: Store,
        config: Callable[[], Config],
        channel: Callable[[str], str | None],
        is_silenced: Callable[[str], bool],
    ) -> None:
        self._store = store
        self._config = config
        self._channel = channel
        self._is_silenced = is_silenced

    def held(self, incident: Incident, card: SlackCard | None, event: Event) -> bool:
        """No card yet for this outage of a project with dependencies: it may be folded.
        (And a hold that ends for a card already posted, by a release, changes nothing.)"""
        if fold_of(event) == HOLD_ENDED and card is not None:
            return True
        return (
            card is None
            and incident.condition == "down"
            and incident.caused_by is None
            and event.type in INCIDENT_TYPES
            and not posts_own_card(event)
            and has_dependencies(self._config(), incident.project)
        )

    async def card_extras(self, incident: Incident) -> dict[str, Any]:
        """``IncidentCardView`` fields for ``incident``'s card (names, not a query each)."""
        if incident.condition != "down":
            return {}
        extras: dict[str, Any] = {}
        folded = await self._store.incidents_caused_by(incident.id, MAX_AFFECTED)
        if folded:
            extras["also_affected"] = tuple(
                AffectedProject(i.project, i.state == "resolved") for i in folded
            )
        if incident.caused_by is not None:
            root = await self._store.get_incident(incident.caused_by)
            extras["folded_into"] = root.project if root is not None else "a dependency"
        return extras

    async def messages(
        self, event: Event, incident: Incident, own_card: SlackCard | None, update: CardUpdate
    ) -> list[NewSlackMessage]:
        """What a folded incident's event, or its release, changes on the root's card and
        thread, and on its own card if it has one."""
        root_id = incident.caused_by or event.payload.get("released_from")
        root = await self._store.get_incident(root_id) if isinstance(root_id, str) else None
        out: list[NewSlackMessage] = []
        if root is not None:
            out += await self._on_root(event, incident, root, update)
        if own_card is not None and incident.caused_by is not None and fold_of(event) == FOLDED:
            channel = self._channel(incident.project)
            if channel is not None:
                count = await self._store.slack_thread_count(incident.id) + 1
                out.append(await update(incident, event, channel, count))
                line = f"Folded into {root.project if root else 'a dependency'}'s incident"
                out.append(self._line(event, incident.id, channel, line, []))
        return out

    async def _on_root(
        self, event: Event, incident: Incident, root: Incident, update: CardUpdate
    ) -> list[NewSlackMessage]:
        card = await self._store.slack_card(root.id)
        channel = self._channel(root.project)
        if card is None or channel is None:
            return []  # the root's card, when it is posted, lists what is folded then
        out: list[NewSlackMessage] = []
        headline = _headline(event, incident, root)
        quiet = self._is_silenced(root.project) or self._is_silenced(incident.project)
        if headline is not None and not quiet:
            out.append(self._line(event, root.id, channel, headline, []))
        if event.type in INCIDENT_TYPES:
            count = await self._store.slack_thread_count(root.id) + len(out)
            edit = await update(root, event, channel, count)
            # A burst of dependents folding or recovering: only the newest edit is sent.
            out.append(replace(edit, payload={**edit.payload, SUPERSEDABLE: True}))
        return out

    @staticmethod
    def _line(
        event: Event, incident_id: str, channel: str, headline: str, details: list[str]
    ) -> NewSlackMessage:
        entry = TimelineEntry(event.type, event.ts, headline, tuple(details), None)
        payload = {"message": render_blocks("timeline_line.json.j2", entry=entry)}
        key = f"{event.id}:reply:{incident_id}"
        return NewSlackMessage(channel, "thread_reply", key, payload, incident_id, event.ts)


def _headline(event: Event, incident: Incident, root: Incident) -> str | None:
    """The root thread's line about a dependent's event; None for no line.  Folding and
    recovering are shown on the root's card ("Also affected", ✅), not line by line: twenty
    dependents would be forty lines, forty seconds of the channel's pace."""
    if fold_of(event) == RELEASED:
        return (f"{incident.project} is still down after {root.project} recovered:"
                " now an incident of its own, with its own card")  # fmt: skip
    if event.type in INCIDENT_TYPES:
        return None
    # Anything else about a folded outage (an action a person ran on it, say).
    return f"{incident.project}: {TimelineEntry.from_event(event).headline}"
