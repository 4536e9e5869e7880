"""View models: the plain data each Slack card, reply and view is rendered from.

Builders turn incidents, events and statuses into these; the templates in ``templates/``
turn them into Block Kit (``bot.render``).  Nothing here knows Block Kit, escaping or
limits: values are raw (a summary may hold ``<!channel>``; the template layer makes it
inert), lists are complete (templates cap what they show), numbers stay numbers.
Fields ending in ``_id`` that the templates mention or put in buttons must be Slack or
opaque ids; the render filters refuse anything else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from agents.events import Event
from bot.escalation_text import describe_escalation
from bot.payload_text import text_of
from bot.render import format_duration
from storage.autonomy_store import Approval
from storage.base import Incident

_SLACK_ID: Final = re.compile(r"[USW][A-Z0-9]{2,31}")
# Failing first: the order every list of projects is shown in.
STATUS_RANK: Final = {"down": 0, "degraded": 1, "unknown": 2, "healthy": 3}


def slack_id_or_none(value: object) -> str | None:
    """``value`` if it is a Slack user (U…, W…) or user-group (S…) id, else None."""
    return value if isinstance(value, str) and _SLACK_ID.fullmatch(value) else None


@dataclass(frozen=True, slots=True)
class AffectedProject:
    """A project whose outage is folded into the card's incident (``depends_on``)."""

    project: str
    recovered: bool


@dataclass(frozen=True, slots=True)
class IncidentCardView:
    """The one card per incident; edited in place as the incident changes."""

    incident_id: str
    project: str
    fingerprint: str
    severity: str  # critical | warning
    summary: str
    resolved: bool
    opened_at: datetime
    resolved_at: datetime | None
    downtime_s: float | None  # set once resolved
    project_status: str  # healthy | degraded | down | unknown
    timeline_len: int  # entries in the card's thread
    oncall_id: str | None  # who to mention; None = nobody
    # Shared dependencies (bot.dependency_cards): the outages folded into this one, and,
    # for a card posted before its outage was folded, the project it is folded into.
    also_affected: tuple[AffectedProject, ...] = ()
    folded_into: str = ""

    @classmethod
    def from_incident(
        cls,
        incident: Incident,
        *,
        project_status: str = "unknown",
        timeline_len: int = 0,
        oncall_id: str | None = None,
        mention_oncall: bool = True,
    ) -> IncidentCardView:
        """``oncall_id`` is mentioned only on an open critical incident and only when
        ``mention_oncall`` (the notifier passes False for a silenced project or an edit
        that must not ping again).  An id that is not a Slack id raises ValueError."""
        if oncall_id is not None and slack_id_or_none(oncall_id) is None:
            raise ValueError(f"oncall_id is not a Slack user or user-group id: {oncall_id!r}")
        resolved = incident.state == "resolved"
        downtime = incident.duration_s
        if resolved and downtime is None and incident.resolved_at is not None:
            downtime = (incident.resolved_at - incident.opened_at).total_seconds()
        ping = mention_oncall and not resolved and incident.severity == "critical"
        return cls(
            incident_id=incident.id,
            project=incident.project,
            fingerprint=incident.fingerprint,
            severity=incident.severity,
            summary=incident.summary,
            resolved=resolved,
            opened_at=incident.opened_at,
            resolved_at=incident.resolved_at,
            downtime_s=downtime if resolved else None,
            project_status=project_status,
            timeline_len=timeline_len,
            oncall_id=oncall_id if ping else None,
        )


@dataclass(frozen=True, slots=True)
class IncidentLine:
    """One incident in a list (storm message, App Home)."""

    project: str
    severity: str
    summary: str
    fingerprint: str
    opened_at: datetime

    @classmethod
    def from_incident(cls, incident: Incident) -> IncidentLine:
        i = incident
        return cls(i.project, i.severity, i.summary, i.fingerprint, i.opened_at)


@dataclass(frozen=True, slots=True)
class StormView:
    """Many incidents opened at once in one channel, folded into one message."""

    incidents: tuple[IncidentLine, ...]
    window_s: float

    @classmethod
    def from_incidents(cls, incidents: Iterable[Incident], window_s: float = 30) -> StormView:
        lines = sorted(
            (IncidentLine.from_incident(i) for i in incidents),
            key=lambda line: (line.severity != "critical", line.opened_at, line.project),
        )
        return cls(tuple(lines), window_s)


@dataclass(frozen=True, slots=True)
class ProjectRow:
    """One project on the status reply and the App Home board."""

    name: str
    status: str  # healthy | degraded | down | unknown
    uptime_24h: float | None  # percent; None when nothing was observed
    open_incidents: int
    orchestrator: str  # the group's name; "" when the project is in none


def failing_first(rows: Iterable[ProjectRow]) -> tuple[ProjectRow, ...]:
    return tuple(sorted(rows, key=lambda r: (STATUS_RANK.get(r.status, 2), r.name)))


def _totals(rows: Sequence[ProjectRow]) -> dict[str, int]:
    counts = {status: 0 for status in STATUS_RANK}
    for row in rows:
        key = row.status if row.status in counts else "unknown"
        counts[key] += 1
    return {status: n for status, n in counts.items() if n}


@dataclass(frozen=True, slots=True)
class StatusReplyView:
    """``/orch status``: the fleet table, failing first."""

    rows: tuple[ProjectRow, ...]
    totals: dict[str, int]  # status -> count, failing statuses first, zeros left out
    generated_at: datetime

    @classmethod
    def build(cls, rows: Iterable[ProjectRow], now: datetime) -> StatusReplyView:
        ordered = failing_first(rows)
        return cls(ordered, _totals(ordered), now)


@dataclass(frozen=True, slots=True)
class CommandHelp:
    usage: str
    description: str


DEFAULT_COMMANDS: Final = (
    CommandHelp("/orch status", "every project's status, 24 h uptime and open incidents"),
    CommandHelp("/orch help", "this list"),
)


@dataclass(frozen=True, slots=True)
class HelpView:
    commands: tuple[CommandHelp, ...] = DEFAULT_COMMANDS


@dataclass(frozen=True, slots=True)
class ErrorView:
    """An ephemeral reply when a command or button cannot be done."""

    message: str
    hint: str = ""  # what to do instead; "" for none
    icon: str = "⚠️"  # the answer to a button is not always a failure (✅, 👎, ⌛…)
    mention_id: str | None = None  # a Slack user mentioned after the message
    after: str = ""  # the words after the mention


@dataclass(frozen=True, slots=True)
class ApprovalView:
    """An approval request; its buttons carry only ``approval_id`` (DESIGN §5)."""

    approval_id: str  # opaque; the handler re-reads project and action from the store
    project: str
    action: str
    reason: str
    requested_by: str  # a Slack user id (mentioned) or an agent's name (shown as text)
    state: str  # pending | granted | denied | expired
    expires_at: datetime
    decided_by: str = ""  # likewise
    incident_summary: str = ""
    decided_at: datetime | None = None  # when granted or denied (an expiry: expires_at)

    @classmethod
    def of(cls, approval: Approval, incident_summary: str = "") -> ApprovalView:
        """From the row as stored now."""
        a = approval
        return cls(a.id, a.project, a.action, a.reason, a.requested_by, a.state, a.expires_at,
                   a.decided_by or "", incident_summary, a.decided_at)  # fmt: skip

    @property
    def requester_id(self) -> str | None:
        return slack_id_or_none(self.requested_by)

    @property
    def decided_by_id(self) -> str | None:
        return slack_id_or_none(self.decided_by)


@dataclass(frozen=True, slots=True)
class HomeView:
    """The App Home status board."""

    rows: tuple[ProjectRow, ...]  # grouped by orchestrator, failing groups and rows first
    totals: dict[str, int]
    incidents: tuple[IncidentLine, ...]  # open, newest first
    approvals: tuple[ApprovalView, ...]  # pending, oldest first
    generated_at: datetime

    @classmethod
    def build(
        cls,
        rows: Iterable[ProjectRow],
        incidents: Iterable[IncidentLine],
        approvals: Iterable[ApprovalView],
        now: datetime,
    ) -> HomeView:
        ordered = failing_first(rows)
        worst: dict[str, int] = {}
        for row in ordered:
            rank = STATUS_RANK.get(row.status, 2)
            worst[row.orchestrator] = min(worst.get(row.orchestrator, rank), rank)
        grouped = sorted(ordered, key=lambda r: (worst[r.orchestrator], r.orchestrator))
        return cls(
            rows=tuple(grouped),  # sorted() is stable: failing first inside each group
            totals=_totals(ordered),
            incidents=tuple(sorted(incidents, key=lambda i: i.opened_at, reverse=True)),
            approvals=tuple(sorted(approvals, key=lambda a: a.expires_at)),
            generated_at=now,
        )


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One line in an incident card's thread, for any event."""

    event_type: str
    at: datetime
    headline: str
    details: tuple[str, ...]  # further lines (reason, error, evidence…)
    mention_id: str | None  # on-call (escalations), who decided (approvals); else None
    mention_label: str = ""  # words before the mention ("" for a bare ping)

    @classmethod
    def from_event(cls, event: Event, oncall_id: str | None = None) -> TimelineEntry:
        headline, details = describe_event(event.type, event.payload)
        if event.type == "escalation.raised":
            return cls(event.type, event.ts, headline, details, slack_id_or_none(oncall_id))
        decider = slack_id_or_none(event.payload.get("by"))
        if event.type in DECIDED and decider is not None:
            return cls(event.type, event.ts, headline, details, decider, "Decided by")
        return cls(event.type, event.ts, headline, details, None)


_SUSPENDED: Final = {
    "budget_exhausted": "the restart budget is used up",
    "breaker_open": "the circuit breaker is open",
    "flapping": "the project is flapping",
    "paused": "remediation is paused",
    "mass_failure": "too many projects are down at once (suspecting orch itself)",
}
MAX_EVIDENCE: Final = 5
DECIDED: Final = frozenset({"approval.granted", "approval.denied"})


def _probe_line(probe: Any) -> str:
    if not isinstance(probe, dict):
        return text_of(probe)
    parts = [f"probe {text_of(probe.get('level')) or '?'}"]
    if probe.get("http_status") is not None:
        parts.append(f"HTTP {text_of(probe['http_status'])}")
    if isinstance(probe.get("latency_ms"), int | float):
        parts.append(f"{probe['latency_ms']:.0f} ms")
    return ", ".join(parts)


def _or_q(p: dict[str, Any], key: str) -> str:
    return text_of(p.get(key)) or "?"


def _by(p: dict[str, Any]) -> str:
    return f" by {text_of(p['by'])}" if p.get("by") else ""


def _analysis(p: dict[str, Any]) -> tuple[str, list[str]]:
    lines = [text_of(p.get("diagnosis"), 2000)]
    evidence = p.get("evidence")
    items = evidence if isinstance(evidence, list) else [evidence] if evidence else []
    lines += [f"• {text_of(item)}" for item in items[:MAX_EVIDENCE]]
    if len(items) > MAX_EVIDENCE:
        lines.append(f"• and {len(items) - MAX_EVIDENCE} more")
    confidence = p.get("confidence")
    if isinstance(confidence, int | float) and 0 <= confidence <= 1:
        confidence = f"{confidence:.0%}"
    lines.append(
        f"Recommended: {text_of(p.get('recommended_action')) or 'nothing'}"
        f" (confidence {text_of(confidence) or '?'}, risk {text_of(p.get('risk')) or '?'})"
    )
    if p.get("explanation"):
        lines.append(text_of(p.get("explanation"), 1000))
    if p.get("claude_unavailable"):
        lines.append(f"(Rule engine: {text_of(p.get('claude_unavailable'), 200)})")
    category = text_of(p.get("root_cause_category")).replace("_", " ")
    engine = text_of(p.get("engine")) or "unknown engine"
    return f"Analysis by {engine}" + (f": {category}" if category else ""), lines


def _approval(kind: str, action: str, p: dict[str, Any]) -> tuple[str, list[str]]:
    """A decider who is a Slack user is mentioned by the template (``mention_id``); an
    operator at a terminal is named here."""
    by = p.get("by")
    named = f" by {text_of(by)}" if by and slack_id_or_none(by) is None else ""
    ident = text_of(p.get("approval_id"))[:8]
    if kind == "approval.requested":
        lines = [text_of(p.get("reason")), f"Requested by {_or_q(p, 'requested_by')}"]
        if ident:
            lines.append(f"Approve or deny on the card, or at a terminal: orch approve {ident}")
        return f"Approval needed: {action}", lines
    if kind == "approval.granted":
        return f"{action} approved{named}", []
    if kind == "approval.denied":
        return f"{action} denied{named}: it will not run", []
    if kind == "approval.expired":
        return f"{action} approval expired: nothing ran", []
    return f"Approval {kind.removeprefix('approval.')}{_by(p)}", []


def _reload(p: dict[str, Any]) -> tuple[str, list[str]]:
    """A ``config.reloaded`` (bot.config_reload): what changed, or why it was refused."""
    by = f" (asked by {text_of(p.get('by'))})" if p.get("by") else ""
    trigger = text_of(p.get("trigger")) or "a reload"
    if p.get("ok"):
        lists = {k: p.get(k) for k in ("added", "removed", "changed")}
        parts = [
            f"{k} {', '.join(map(text_of, v))}"
            for k, v in lists.items()
            if isinstance(v, list) and v
        ]
        return f"Configuration reloaded on {trigger}{by}", ["; ".join(parts)]
    errors = p.get("errors")
    lines = [text_of(e) for e in errors] if isinstance(errors, list) else []
    count = p.get("error_count")
    if isinstance(count, int) and count > len(lines):
        lines.append(f"… and {count - len(lines)} more (orch's log has them all)")
    headline = f"{text_of(p.get('file')) or 'projects.yml'} refused on {trigger}{by}"
    return f"{headline}: orch keeps running the previous configuration", lines


def describe_event(kind: str, p: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    """(headline, detail lines) for a thread entry: the event's story in words."""
    action = text_of(p.get("action") or p.get("action_id")) or "action"
    headline: str
    details: list[str] = []
    if kind == "project.status_changed":
        headline = f"Status {_or_q(p, 'from')} → {_or_q(p, 'to')}"
        details = [text_of(p.get("reason")), _probe_line(p.get("probe"))]
    elif kind == "project.flapping":
        started = bool(p.get("started"))
        headline = "Started flapping: no auto-fix" if started else "Stopped flapping"
    elif kind == "metric.anomaly":
        headline = (
            f"{_or_q(p, 'metric')} = {_or_q(p, 'value')}"
            f" beyond {_or_q(p, 'threshold')} ({_or_q(p, 'level')})"
        )
    elif kind == "metric.recovered":
        headline = f"{_or_q(p, 'metric')} back to {_or_q(p, 'value')}"
    elif kind == "incident.updated" and p.get("acked_by"):
        headline = f"Acknowledged by {text_of(p.get('acked_by'))}"
    elif kind in ("incident.opened", "incident.updated"):
        verb = "opened" if kind == "incident.opened" else "updated, now"
        headline = f"Incident {verb} {text_of(p.get('severity')) or 'of unknown severity'}"
        details = [text_of(p.get("summary"), 2000)]
    elif kind == "incident.resolved":
        seconds = p.get("duration_s")
        ok = isinstance(seconds, int | float) and not isinstance(seconds, bool)
        headline = f"Resolved: down for {format_duration(seconds)}" if ok else "Resolved"
    elif kind == "action.requested":
        headline = f"{action} requested by {text_of(p.get('requested_by')) or 'someone'}"
        details = [text_of(p.get("reason"))]
        if p.get("needs_approval"):
            details.append("Needs approval")
    elif kind.startswith("action."):
        headline = f"{action} {kind.removeprefix('action.')}"
        details = [f"Error: {text_of(p['error'])}" if p.get("error") else ""]
    elif kind.startswith("approval."):
        headline, details = _approval(kind, action, p)
    elif kind == "remediation.suspended":
        reason = p.get("reason")
        why = _SUSPENDED.get(reason, text_of(reason)) if isinstance(reason, str) else ""
        headline = f"Auto-remediation suspended: {why or 'no reason given'}"
    elif kind == "escalation.raised":
        headline, details = describe_escalation(p)
    elif kind == "analysis.completed":
        headline, details = _analysis(p)
    elif kind == "config.reloaded":
        headline, details = _reload(p)
    else:
        headline = kind
        details = [f"{k}: {text_of(v)}" for k, v in sorted(p.items())]
    return headline, tuple(line for line in details if line)
