"""SlackNotifier: turns incident events into Slack work in the outbox (DESIGN §5).

A bus subscriber (role ``slack-notifier``).  It never talks to Slack: it renders the
templates and queues writes (``storage.slack_store``); ``bot.slack_outbox`` sends them.

- ``incident.opened``: the card (``post_card``) in the project's orchestrator channel.
- ``incident.updated`` / ``incident.resolved``: the card re-rendered from the incident
  as stored now (``update_card``: resolved = green with the downtime) and a line in its
  thread (``thread_reply``).
- ``approval.requested``: the approval card (Approve / Deny, ``approval_card``) in the
  incident's thread once its card is posted, else in the channel.  ``approval.granted |
  denied | expired``: that card re-rendered from the approval as stored now (no buttons:
  who decided and when, or "expired"), and a line in the incident's thread (without an
  incident: in the approval card's own thread).  An approval card is posted even for a
  silenced project (it asks a human to decide) and is never folded into a storm.
- Any other event with an ``incident_id`` (actions, analyses, escalations, suspensions):
  a line in the thread.
- Shared dependencies (``bot.dependency_cards``): an outage folded into a dependency's
  incident gets no card; the root's card lists it and the root's thread tells its story.
  A project with ``depends_on`` that goes down gets its card only once its hold ends.
- ``project.status_changed``, ``project.flapping``, ``metric.*`` (no incident_id): a line
  in the thread of each open incident of that project that already has a card, as probe
  evidence; not in the incident the event itself opens or ends (status and flapping: the
  ``down`` incident; a metric: its own metric's), whose own events tell that story.

Every write has a dedupe key (the event id, or ``card:<incident>`` for a card), so a
redelivered event queues nothing twice and a card is posted once whichever replica or
event asks.  An event whose incident has no card yet queues the card first, in the same
transaction: an update can never be orphaned by an ``incident.opened`` handled elsewhere
or later.  An approval card has no incident of its own: it is stored as the card of the
pseudo incident ``approval:<approval id>`` (``approval_card_id``; dedupe key
``card:approval:<id>``), so the outbox posts it once and any replica edits it by its
stored channel and ts like any card.  A project without an orchestrator goes to
``default_channel`` when given, else it is skipped with one log line per project.
Silenced projects (``is_silenced``) get no new card and no thread lines; an existing
card is still edited, so it does not stay red.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Final

from agents.bus import EventBus
from agents.events import (
    APPROVAL_DENIED,
    APPROVAL_EXPIRED,
    APPROVAL_GRANTED,
    APPROVAL_REQUESTED,
    CONFIG_RELOADED,
    ESCALATION_RAISED,
    EVENT_TYPES,
    INCIDENT_OPENED,
    INCIDENT_RESOLVED,
    INCIDENT_UPDATED,
    METRIC_ANOMALY,
    METRIC_RECOVERED,
    PROJECT_FLAPPING,
    PROJECT_STATUS_CHANGED,
    Event,
)
from agents.incidents import down_fingerprint, metric_fingerprint
from bot.cards import ApprovalView, IncidentCardView, TimelineEntry
from bot.config import Config
from bot.dependency_cards import DependencyCards, posts_own_card
from bot.render import render_blocks
from bot.storm import STORM_AFTER, STORM_LINE, STORM_WINDOW_S, incident_line
from storage.autonomy_store import Approval
from storage.base import Incident, Store
from storage.slack_store import Kind, NewSlackMessage, SlackCard, card_key

log = logging.getLogger(__name__)

ROLE: Final = "slack-notifier"
INCIDENT_TYPES: Final = frozenset({INCIDENT_OPENED, INCIDENT_UPDATED, INCIDENT_RESOLVED})
EVIDENCE_TYPES: Final = frozenset(
    {PROJECT_STATUS_CHANGED, PROJECT_FLAPPING, METRIC_ANOMALY, METRIC_RECOVERED}
)
APPROVAL_TYPES: Final = frozenset(
    {APPROVAL_REQUESTED, APPROVAL_GRANTED, APPROVAL_DENIED, APPROVAL_EXPIRED}
)
# Events never about an incident: not worth a delivery.
IGNORED: Final = frozenset({"silence.created", "silence.ended", "digest.posted"})
_LOOKUP_LIMIT: Final = 200  # newest incidents of a project searched for an event's incident


def approval_card_id(approval_id: str) -> str:
    """The pseudo incident id an approval card is stored under (``slack_messages``)."""
    return f"approval:{approval_id}"


def _never(_project: str) -> bool:
    return False


def derived_status(incident: Incident) -> str:
    """The project status a card shows when no live statuses are wired in."""
    if incident.state == "resolved":
        return "healthy" if incident.condition == "down" else "unknown"
    return "down" if incident.condition == "down" else "degraded"


class SlackNotifier:
    def __init__(
        self,
        store: Store,
        config: Callable[[], Config],
        *,
        wake: Callable[[], None] = lambda: None,
        statuses: Callable[[], Mapping[str, str]] | None = None,
        is_silenced: Callable[[str], bool] = _never,
        default_channel: str | None = None,
        storm_after: int = STORM_AFTER,
        storm_window_s: float = STORM_WINDOW_S,
    ) -> None:
        """``wake`` is ``SlackOutbox.wake`` (send now instead of at the next poll);
        ``statuses`` is ``HealthMonitor.statuses`` (the card's "project status")."""
        self._store = store
        self._config = config
        self._wake = wake
        self._statuses = statuses
        self._is_silenced = is_silenced
        self._default_channel = default_channel
        self._storm_after = storm_after
        self._storm_window_s = storm_window_s
        self._unrouted: set[str] = set()
        self._deps = DependencyCards(store, config, self._channel, is_silenced)

    def register(self, bus: EventBus) -> None:
        bus.subscribe(ROLE, self.handle, types=sorted(EVENT_TYPES - IGNORED))

    async def handle(self, event: Event) -> None:
        project = event.project
        if event.type == ESCALATION_RAISED and event.incident_id is None:
            await self._standalone_escalation(event)
            return
        if event.type == CONFIG_RELOADED:
            await self._config_refused(event)
            return
        if project is None or event.type in IGNORED:
            return
        channel = self._channel(project)
        if channel is None:
            return
        if event.type in APPROVAL_TYPES:
            # storm_after=0: an approval card is never folded, its buttons must stay.
            approval_messages = await self._for_approval(event, channel)
            if approval_messages and await self._store.slack_enqueue(
                approval_messages, storm_after=0
            ):
                self._wake()
            return
        if event.type in INCIDENT_TYPES or event.incident_id is not None:
            messages = await self._for_incident_event(event, channel)
        elif event.type in EVIDENCE_TYPES:
            messages = await self._evidence(event, channel)
        else:
            return
        if messages and await self._store.slack_enqueue(
            messages, storm_after=self._storm_after, storm_window_s=self._storm_window_s
        ):
            self._wake()

    async def _standalone_escalation(self, event: Event) -> None:
        """An escalation about no incident (half the fleet down, an event orch could not
        handle): a message of its own in the project's channel, or, about the fleet, in
        every group's channel, each mentioning that group's on-call."""
        config = self._config()
        if event.project is not None and self._is_silenced(event.project):
            return
        if event.project is not None:
            targets: dict[str | None, str | None] = {
                self._channel(event.project): self._oncall(event.project)
            }
        else:
            targets = {g.channel: g.oncall for g in config.orchestrators.values()}
            if not targets and self._default_channel:
                targets = {self._default_channel: None}
        messages: list[NewSlackMessage] = []
        for channel, oncall in targets.items():
            if channel is None:
                continue
            key = f"escalation:{event.id}:{channel}"
            entry = TimelineEntry.from_event(event, oncall)
            payload = {"message": render_blocks("timeline_line.json.j2", entry=entry)}
            messages.append(NewSlackMessage(channel, "post_card", card_key(key), payload, key,
                                            event.ts))  # fmt: skip
        if messages and await self._store.slack_enqueue(messages, storm_after=0):
            self._wake()

    async def _config_refused(self, event: Event) -> None:
        """A projects.yml that orch refused to load (``bot.config_reload``): told in the
        channel of every group the refusing process runs.  A reload that worked is in the
        log and the event stream only.  Keyed by the problems and the day, so replicas
        refusing the same file at once post it once per channel."""
        payload = event.payload
        groups = payload.get("groups")
        if payload.get("ok") or not isinstance(groups, list):
            return
        config = self._config()
        channels = {config.orchestrators[g].channel for g in groups if g in config.orchestrators}
        if not channels and self._default_channel:
            channels = {self._default_channel}
        problems = json.dumps(payload.get("errors"), sort_keys=True).encode()
        digest = hashlib.sha256(problems).hexdigest()[:16]
        message = render_blocks("timeline_line.json.j2", entry=TimelineEntry.from_event(event))
        messages = [
            NewSlackMessage(
                channel, "post_card", card_key(key), {"message": message}, key, event.ts
            )
            for channel in sorted(channels)
            for key in [f"config-refused:{digest}:{event.ts:%Y-%m-%d}:{channel}"]
        ]
        if messages and await self._store.slack_enqueue(messages, storm_after=0):
            self._wake()

    # -- what to queue -------------------------------------------------------------------
    async def _for_incident_event(self, event: Event, channel: str) -> list[NewSlackMessage]:
        incident = await self._incident(event)
        if incident is None:
            log.warning("%s %s: incident %s not found; nothing for Slack",
                        event.type, event.id, event.incident_id)  # fmt: skip
            return []
        silenced = self._is_silenced(incident.project)
        card = await self._store.slack_card(incident.id)
        # Shared dependencies (bot.dependency_cards): a folded outage has no card of its
        # own; its story goes to its root's card and thread.
        messages: list[NewSlackMessage] = []
        if incident.caused_by is not None or posts_own_card(event):
            messages = await self._deps.messages(event, incident, card, self._update_card)
        if incident.caused_by is not None or self._deps.held(incident, card, event):
            return messages
        if card is None:
            if silenced:
                log.info("%s is silenced: no card for incident %s", incident.project, incident.id)
                return messages
            # Rendered from the incident as stored now, so a card queued late is current.
            messages.append(await self._post_card(incident, event, channel))
        elif event.type in (INCIDENT_UPDATED, INCIDENT_RESOLVED):
            count = await self._store.slack_thread_count(incident.id) + (not silenced)
            messages.append(await self._update_card(incident, event, channel, count))
        if event.type != INCIDENT_OPENED and not silenced and not posts_own_card(event):
            messages.append(self._reply(event, incident, card, channel))
        return messages

    async def _for_approval(self, event: Event, channel: str) -> list[NewSlackMessage]:
        approval_id = event.payload.get("approval_id")
        approval = (
            await self._store.get_approval(approval_id) if isinstance(approval_id, str) else None
        )
        if approval is None:
            log.warning("%s %s: approval %s not found; nothing for Slack",
                        event.type, event.id, approval_id)  # fmt: skip
            return []
        incident = await self._approval_incident(event, approval)
        key = approval_card_id(approval.id)
        card = await self._store.slack_card(key)
        incident_card = await self._store.slack_card(incident.id) if incident else None
        # Rendered from the approval as stored now: a card queued late shows the outcome.
        view = ApprovalView.of(approval, incident.summary if incident else "")
        message = render_blocks("approval_card.json.j2", approval=view)
        messages = []
        if card is None:
            payload: dict[str, Any] = {"message": message}
            if incident_card is not None and incident_card.thread_ts is not None:
                payload["message"] = {**message, "thread_ts": incident_card.thread_ts}
            elif incident is not None:  # its card is still queued: the outbox threads it
                payload["thread_of"] = incident.id
            messages.append(NewSlackMessage(channel, "post_card", card_key(key), payload, key,
                                            event.ts))  # fmt: skip
        elif event.type != APPROVAL_REQUESTED:
            update_key = f"{event.id}:update:{key}"
            messages.append(NewSlackMessage(channel, "update_card", update_key,
                                            {"message": message}, key, event.ts))  # fmt: skip
        if event.type == APPROVAL_REQUESTED or self._is_silenced(approval.project):
            return messages  # the card itself is the request's line in the thread
        if incident is not None and incident_card is not None:
            messages.append(self._reply(event, incident, incident_card, channel))
        elif incident is None:  # the decision goes under the approval card itself
            entry = TimelineEntry.from_event(event)
            reply = {"message": render_blocks("timeline_line.json.j2", entry=entry)}
            messages.append(NewSlackMessage(channel, "thread_reply", f"{event.id}:reply:{key}",
                                            reply, key, event.ts))  # fmt: skip
        return messages

    async def _approval_incident(self, event: Event, approval: Approval) -> Incident | None:
        """The incident the approval's action is about: the event says, else the action
        (an expiry swept without knowing it, a request that came without one)."""
        incident_id = event.incident_id
        if incident_id is None:
            action = await self._store.get_action(approval.action_id)
            incident_id = action.incident_id if action is not None else None
        if incident_id is None:
            return None
        return await self._find_incident(approval.project, incident_id)

    async def _evidence(self, event: Event, channel: str) -> list[NewSlackMessage]:
        project = event.project
        assert project is not None
        if self._is_silenced(project):
            return []
        # The incident this event opens or ends tells it through its own events.
        if event.type in (METRIC_ANOMALY, METRIC_RECOVERED):
            own = metric_fingerprint(project, str(event.payload.get("metric")))
        else:
            own = down_fingerprint(project)
        messages = []
        for incident in await self._store.list_incidents(project=project, open_only=True):
            if incident.fingerprint == own:
                continue
            card = await self._store.slack_card(incident.id)
            if card is not None:
                messages.append(self._reply(event, incident, card, channel))
        return messages

    # -- rendering -------------------------------------------------------------------------
    async def _post_card(self, incident: Incident, event: Event, channel: str) -> NewSlackMessage:
        extras = await self._deps.card_extras(incident)
        view = replace(self._card_view(incident, timeline_len=0, mention=True), **extras)
        payload = {"message": render_blocks("incident_card.json.j2", card=view)}
        payload["line"] = incident_line(incident)
        return self._message(channel, "post_card", card_key(incident.id), payload, incident, event)

    async def _update_card(
        self, incident: Incident, event: Event, channel: str, timeline_len: int
    ) -> NewSlackMessage:
        # An edit does not mention on-call again: the first post did.
        extras = await self._deps.card_extras(incident)
        view = self._card_view(incident, timeline_len=timeline_len, mention=False)
        view = replace(view, **extras)
        payload = {"message": render_blocks("incident_card.json.j2", card=view)}
        key = f"{event.id}:update:{incident.id}"
        return self._message(channel, "update_card", key, payload, incident, event)

    def _reply(
        self, event: Event, incident: Incident, card: SlackCard | None, channel: str
    ) -> NewSlackMessage:
        entry = TimelineEntry.from_event(event, self._oncall(incident.project))
        payload: dict[str, Any] = {}
        if card is not None and card.folded:
            # The storm message's thread holds several incidents' lines: say whose.  Marked,
            # so the outbox sends the lines queued for that thread together (bot.storm).
            entry = replace(entry, headline=f"{incident.project}: {entry.headline}")
            payload[STORM_LINE] = card.storm_id
        payload["message"] = render_blocks("timeline_line.json.j2", entry=entry)
        key = f"{event.id}:reply:{incident.id}"
        return self._message(channel, "thread_reply", key, payload, incident, event)

    def _card_view(
        self, incident: Incident, *, timeline_len: int, mention: bool
    ) -> IncidentCardView:
        statuses = self._statuses() if self._statuses is not None else {}
        return IncidentCardView.from_incident(
            incident,
            project_status=statuses.get(incident.project) or derived_status(incident),
            timeline_len=timeline_len,
            oncall_id=self._oncall(incident.project),
            mention_oncall=mention,
        )

    @staticmethod
    def _message(
        channel: str,
        kind: Kind,
        key: str,
        payload: dict[str, Any],
        incident: Incident,
        event: Event,
    ) -> NewSlackMessage:
        return NewSlackMessage(channel, kind, key, payload, incident.id, event.ts)

    # -- lookups ---------------------------------------------------------------------------
    async def _incident(self, event: Event) -> Incident | None:
        return await self._find_incident(event.project, event.incident_id)

    async def _find_incident(self, project: str | None, wanted: str | None) -> Incident | None:
        rows = await self._store.list_incidents(project=project, limit=_LOOKUP_LIMIT)
        return next((i for i in rows if i.id == wanted), None)

    def _channel(self, project: str) -> str | None:
        config = self._config()
        try:
            group = config.project(project).orchestrator
        except KeyError:
            group = None
        if group is not None and group in config.orchestrators:
            return config.orchestrators[group].channel
        if self._default_channel is None and project not in self._unrouted:
            self._unrouted.add(project)
            log.warning("%s is in no orchestrator and there is no default channel:"
                        " its incidents are not posted to Slack", project)  # fmt: skip
        return self._default_channel

    def _oncall(self, project: str) -> str | None:
        config = self._config()
        try:
            group = config.project(project).orchestrator
        except KeyError:
            return None
        orchestrator = config.orchestrators.get(group) if group else None
        return orchestrator.oncall if orchestrator is not None else None
