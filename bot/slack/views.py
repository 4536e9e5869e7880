"""View models of the ``/orch`` replies that ``bot.cards`` does not cover: the data each
``templates/*_reply.json.j2`` of this module renders.

As in ``bot.cards``: values are raw (a reason may hold ``<!channel>``; the templates make
it inert), numbers stay numbers, and who did something is kept as given (``by``): the
``*_id`` properties hand the templates a Slack id to mention only when it is one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from agents.events import Event
from bot.cards import describe_event, slack_id_or_none
from storage.base import Incident, ProbeRecord
from storage.operations_store import ActionRequest, IncidentAck, Silence

SHORT_ID: Final = 8  # characters of an id shown; /orch ack takes 6 or more
MAX_HISTORY: Final = 40  # timeline entries shown (the newest)


def short_id(ident: str) -> str:
    return ident[:SHORT_ID]


@dataclass(frozen=True, slots=True)
class SilenceView:
    """``/orch silence`` (state created) and ``/orch unsilence`` (state ended)."""

    project: str
    state: str  # created | ended
    by: str  # who silenced (created) or unsilenced (ended)
    until: datetime  # when it runs (or ran) out by itself
    duration_s: float  # from its start to ``until``
    reason: str
    set_by: str  # who created it

    @property
    def by_id(self) -> str | None:
        return slack_id_or_none(self.by)

    @property
    def set_by_id(self) -> str | None:
        return slack_id_or_none(self.set_by)

    @classmethod
    def of(cls, silence: Silence, state: str, by: str) -> SilenceView:
        length = (silence.ends_at - silence.starts_at).total_seconds()
        return cls(silence.project, state, by, silence.ends_at, length, silence.reason,
                   silence.created_by)  # fmt: skip


@dataclass(frozen=True, slots=True)
class AckView:
    short_id: str
    fingerprint: str
    severity: str
    summary: str
    opened_at: datetime
    by: str

    @property
    def by_id(self) -> str | None:
        return slack_id_or_none(self.by)

    @classmethod
    def of(cls, incident: Incident, by: str) -> AckView:
        i = incident
        return cls(short_id(i.id), i.fingerprint, i.severity, i.summary, i.opened_at, by)


@dataclass(frozen=True, slots=True)
class ActionRequestView:
    short_id: str
    project: str
    action: str  # as users type it (clear-cache)
    requested_by: str
    needs_approval: bool
    approval_reason: str  # why it does (or does not) need approval, as a sentence

    @property
    def requester_id(self) -> str | None:
        return slack_id_or_none(self.requested_by)

    @classmethod
    def of(cls, request: ActionRequest, why: str) -> ActionRequestView:
        r = request
        action = r.action.replace("_", "-")
        return cls(short_id(r.id), r.project, action, r.requested_by, r.needs_approval, why)


@dataclass(frozen=True, slots=True)
class IncidentListLine:
    short_id: str
    fingerprint: str
    severity: str
    summary: str
    opened_at: datetime
    acked_by: str  # "" when nobody acknowledged it

    @property
    def acked_by_id(self) -> str | None:
        return slack_id_or_none(self.acked_by)

    @classmethod
    def of(cls, incident: Incident, ack: IncidentAck | None) -> IncidentListLine:
        i = incident
        by = ack.acked_by if ack is not None else ""
        return cls(short_id(i.id), i.fingerprint, i.severity, i.summary, i.opened_at, by)


@dataclass(frozen=True, slots=True)
class IncidentListView:
    """``/orch incidents``: open incidents, newest first, with the ids ``ack`` takes."""

    lines: tuple[IncidentListLine, ...]
    more: bool  # more are open than listed


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    at: datetime
    event_type: str
    headline: str
    detail: str

    @classmethod
    def of(cls, event: Event) -> HistoryEntry:
        headline, details = describe_event(event.type, event.payload)
        return cls(event.ts, event.type, headline, details[0] if details else "")


@dataclass(frozen=True, slots=True)
class HistoryView:
    """``/orch history``: availability numbers and a timeline over a window."""

    project: str
    window: str  # 24h | 7d
    uptime_pct: float | None  # None: nothing observed
    downtime_s: float
    mttr_s: float | None  # None: no down incident resolved in the window
    incidents_opened: int
    entries: tuple[HistoryEntry, ...]  # oldest first, at most MAX_HISTORY
    earlier: int  # entries in the window before the ones shown


@dataclass(frozen=True, slots=True)
class ProjectStatusView:
    """``/orch status <project>``."""

    name: str
    status: str
    uptime_24h: float | None
    last_probe: ProbeRecord | None
    incidents: tuple[IncidentListLine, ...]
    silenced_until: datetime | None
    silenced_by: str  # "" when not silenced

    @property
    def silenced_by_id(self) -> str | None:
        return slack_id_or_none(self.silenced_by)


@dataclass(frozen=True, slots=True)
class ProjectLine:
    name: str
    kind: str
    group: str  # the orchestrator; "" for none
    url: str  # without credentials, query or fragment


@dataclass(frozen=True, slots=True)
class ProjectsView:
    """``/orch projects``."""

    projects: tuple[ProjectLine, ...]
