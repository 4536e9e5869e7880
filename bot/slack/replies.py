"""What orch says in Slack: Block Kit from ``templates/`` (``bot.render``) with a plain
mrkdwn ``text`` fallback in every message.

Handlers only hand data to this module.  The blocks come from the templates, which escape
every value; the fallback texts built here (notifications, screen readers, clients
without Block Kit) pass every value that came from outside orch (incident summaries,
probe reasons, user text) through ``escape`` so it cannot become a mention or a link.
Most answers concern only the asker (``ephemeral``); what the team should know (who
silenced, acked, asked to run something) goes ``in_channel``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

from bot.cards import (
    CommandHelp,
    ErrorView,
    HelpView,
    HomeView,
    ProjectRow,
    StatusReplyView,
    slack_id_or_none,
)
from bot.config import Config, Project
from bot.render import render_blocks
from bot.slack.command_parser import USAGE, Command
from bot.slack.views import (
    AckView,
    ActionRequestView,
    HistoryView,
    IncidentListLine,
    IncidentListView,
    ProjectLine,
    ProjectStatusView,
    ProjectsView,
    SilenceView,
    short_id,
)
from storage.autonomy_store import DecisionResult
from storage.base import Incident, ProbeRecord
from storage.operations_store import ActionRequest, IncidentAck, Silence

_MARK = {"healthy": "🟢", "degraded": "🟡", "down": "🔴", "unknown": "⚪"}
MAX_TEXT_LINES: Final = 100  # fallback lines of a list; the blocks show more
DESCRIPTIONS: Final = {
    "help": "this list",
    "status": "every project's status and 24 h uptime, or one project's details",
    "projects": "the configured projects",
    "incidents": "open incidents, with the ids /orch ack takes",
    "history": "uptime, downtime, MTTR and a timeline over 24 h or 7 days",
    "restart": "restart a project (an approver: at once; anyone else: asks for approval)",
    "pause": "pause a project (an approver: at once; anyone else: asks for approval)",
    "resume": "resume a paused project (likewise)",
    "clear-cache": "clear a project's cache (likewise)",
    "silence": "no new incident posts for a project for a while (still recorded)",
    "unsilence": "end a project's silence early",
    "ack": "take an incident on (by id, its first 6 characters, or fingerprint)",
    "analyze": "ask Claude what is wrong with a project",
    "digest": "post the health digest now",
    "reload": "read projects.yml again (approvers only; an invalid file is refused)",
}
assert set(DESCRIPTIONS) == set(USAGE), "every subcommand needs a help line"


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    blocks: list[dict[str, Any]] | None = None
    response_type: Literal["ephemeral", "in_channel"] = "ephemeral"


def _render(
    template: str,
    *,
    text: str | None = None,
    response_type: Literal["ephemeral", "in_channel"] = "ephemeral",
    **context: Any,
) -> Reply:
    payload = render_blocks(template, **context)
    return Reply(payload["text"] if text is None else text, payload["blocks"], response_type)


def escape(text: str) -> str:
    """Slack's three control characters in message text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if days:
        return f"{days}d {hours % 24}h"
    if hours:
        return f"{hours}h {minutes % 60}m"
    return f"{minutes}m"


def display_url(url: str) -> str:
    """The URL without credentials, query or fragment (a config URL may carry a token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _capped(lines: list[str], total: int) -> list[str]:
    if total > MAX_TEXT_LINES:
        return [*lines[:MAX_TEXT_LINES], f"… and {total - MAX_TEXT_LINES} more"]
    return lines


# -- help, errors ---------------------------------------------------------------------


def help_reply() -> Reply:
    # Slack reads <…> as a link or mention even inside backticks: escape the usage lines.
    lines = [f"*orch* — `/orch {escape('<command>')}`:"]
    lines += [f"• `/orch {escape(USAGE[name])}`" for name in USAGE]
    commands = tuple(CommandHelp(f"/orch {USAGE[n]}", DESCRIPTIONS[n]) for n in USAGE)
    return _render("help_reply.json.j2", text="\n".join(lines), help=HelpView(commands))


def error_reply(message: str, hint: str = "") -> Reply:
    return _render("error_reply.json.j2", text=escape(message), error=ErrorView(message, hint))


def failure_reply() -> Reply:
    return error_reply("orch could not answer that just now (the error is in orch's log).")


def coming_reply(command: Command, feature: str) -> Reply:
    target = f" for {command.project}" if command.project else ""
    rest = (
        f"{target} is understood but not available yet: it comes with {feature}."
        " Nothing was changed."
    )
    view = ErrorView(f"/orch {command.name}{rest}")
    return _render("error_reply.json.j2", text=f"`/orch {command.name}`{rest}", error=view)


# -- reading the fleet ----------------------------------------------------------------


def _incident_line(incident: Incident, now: datetime, ack: IncidentAck | None = None) -> str:
    since = age((now - incident.opened_at).total_seconds())
    acked = f", acked by {escape(ack.acked_by)}" if ack is not None else ""
    return (
        f"• `{incident.fingerprint}` {incident.severity}, open {since}: "
        f"{escape(incident.summary)} (id `{short_id(incident.id)}`){acked}"
    )


def status_reply(rows: Sequence[ProjectRow], now: datetime) -> Reply:
    """The fleet, failing first, with 24 h uptime (``bot.slack.fleet`` reads the rows)."""
    view = StatusReplyView.build(rows, now)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(view.totals.items())) or "no projects"
    lines = []
    for row in rows:
        n = row.open_incidents
        extra = f", {n} open incident(s)" if n else ""
        lines.append(f"{_MARK.get(row.status, '⚪')} `{row.name}` {row.status}{extra}")
    text = "\n".join([f"*Fleet*: {counts}", *_capped(lines, len(lines))])
    return _render("status_reply.json.j2", text=text, status=view)


def project_status_reply(
    project: Project,
    status: str,
    last: ProbeRecord | None,
    incidents: Sequence[Incident],
    acks: Mapping[str, IncidentAck],
    uptime_24h: float | None,
    silence: Silence | None,
    now: datetime,
) -> Reply:
    lines = [f"{_MARK.get(status, '⚪')} *{project.name}* is {status}"]
    if silence is not None:
        lines.append(f"Silenced until {silence.ends_at:%Y-%m-%d %H:%M} UTC")
    if last is None:
        lines.append("No probe recorded yet.")
    else:
        when = age((now - last.ts).total_seconds())
        http = f", HTTP {last.http_status}" if last.http_status is not None else ""
        reason = f": {escape(last.reason)}" if last.reason else ""
        lines.append(f"Last probe {when} ago: {last.level}, {last.latency_ms:.0f} ms{http}{reason}")
    if incidents:
        lines.append("Open incidents:")
        lines += [_incident_line(i, now, acks.get(i.id)) for i in incidents]
    view = ProjectStatusView(
        project.name, status, uptime_24h, last,
        tuple(IncidentListLine.of(i, acks.get(i.id)) for i in incidents),
        silence.ends_at if silence else None, silence.created_by if silence else "",
    )  # fmt: skip
    return _render("project_status_reply.json.j2", text="\n".join(lines), project=view)


def projects_reply(config: Config) -> Reply:
    view = ProjectsView(
        tuple(
            ProjectLine(p.name, p.kind, p.orchestrator or "", display_url(p.url))
            for p in config.projects
        )
    )
    if not config.projects:
        return _render("projects_reply.json.j2", text="No projects are configured.", projects=view)
    lines = [f"*{len(config.projects)} projects*"]
    for line in view.projects:
        group = line.group or "no orchestrator"
        lines.append(f"• `{line.name}` {line.kind}, {group}, {escape(line.url)}")
    text = "\n".join([lines[0], *_capped(lines[1:], len(lines) - 1)])
    return _render("projects_reply.json.j2", text=text, projects=view)


def incidents_reply(
    incidents: Sequence[Incident], acks: Mapping[str, IncidentAck], now: datetime, more: bool
) -> Reply:
    view = IncidentListView(tuple(IncidentListLine.of(i, acks.get(i.id)) for i in incidents), more)
    if not incidents:
        return _render("incidents_reply.json.j2", text="No open incidents. 🎉", incidents=view)
    lines = [f"*{len(incidents)}{'+' if more else ''} open incident(s)*"]
    lines += [_incident_line(i, now, acks.get(i.id)) for i in incidents]
    return _render("incidents_reply.json.j2", text="\n".join(lines), incidents=view)


def history_reply(view: HistoryView, *, chart: str = "none", channel: str = "") -> Reply:
    """``chart``: queued (to ``channel``), no_group, failed, or none."""
    return _render("history_reply.json.j2", history=view, chart=chart, channel=channel)


def digest_reply(channels: Sequence[tuple[str, str]]) -> Reply:
    """``/orch digest``: which group's digest went to which channel."""
    if not channels:
        hint = "Groups and their channels are set in projects.yml (orchestrators)."
        return error_reply("No orchestrator group to post a digest for.", hint)
    where = ", ".join(f"{group} to {channel}" for group, channel in channels)
    return notice_reply("📨", f"Posting the health digest now: {where}.", "The chart follows each.")


def home_view(view: HomeView) -> dict[str, Any]:
    """The App Home tab (a ``views.publish`` view)."""
    return render_blocks("app_home.json.j2", home=view)


# -- changing things (told to the channel) --------------------------------------------


def silence_reply(silence: Silence, by: str) -> Reply:
    view = SilenceView.of(silence, "created", by)
    return _render("silence_reply.json.j2", response_type="in_channel", silence=view)


def unsilence_reply(silence: Silence, by: str) -> Reply:
    view = SilenceView.of(silence, "ended", by)
    return _render("silence_reply.json.j2", response_type="in_channel", silence=view)


def ack_reply(incident: Incident, by: str) -> Reply:
    return _render("ack_reply.json.j2", response_type="in_channel", ack=AckView.of(incident, by))


def action_reply(request: ActionRequest, why: str) -> Reply:
    view = ActionRequestView.of(request, why)
    return _render("action_request_reply.json.j2", response_type="in_channel", request=view)


# -- approvals (the answers to Approve / Deny, told to the clicker alone) ----------------


def _hhmm(moment: datetime | None) -> str:
    return f"{moment:%H:%M} UTC" if moment is not None else "an unknown time"


def notice_reply(
    icon: str, message: str, hint: str = "", *, mention_id: str | None = None, after: str = ""
) -> Reply:
    """An ephemeral answer that is not necessarily a failure; values raw (the template
    escapes them).  ``mention_id`` (a Slack user) is mentioned after ``message``, then
    ``after`` follows."""
    view = ErrorView(message, hint, icon, mention_id, after)
    tail = f" <@{mention_id}>{escape(after)}" if mention_id else ""
    return _render("error_reply.json.j2", text=f"{icon} {escape(message)}{tail}", error=view)


def _already(word: str, ident: str | None, at: datetime | None) -> Reply:
    """A Slack user who decided is mentioned; anyone else (an operator) is named."""
    user = slack_id_or_none(ident)
    rest = f" at {_hhmm(at)}; nothing changed."
    if user is not None and user[0] in "UW":
        return notice_reply("ℹ️", f"Already {word} by", mention_id=user, after=rest)
    return notice_reply("ℹ️", f"Already {word} by {ident or 'someone'}{rest}")


def decision_reply(result: DecisionResult, decision: str) -> Reply:
    """What ``decide_approval`` came to, for whoever clicked."""
    a = result.approval
    if a is None or result.outcome == "not_found":
        return error_reply("That approval does not exist.", "The App Home lists those waiting.")
    action = a.action.replace("_", "-")
    if result.outcome == "won" and decision == "granted":
        return notice_reply("✅", f"Approved; running {action} on {a.project}.",
                            "The outcome follows in the thread.")  # fmt: skip
    if result.outcome == "won":
        return notice_reply("👎", f"Denied; {action} on {a.project} will not run.")
    if result.outcome == "already_decided":
        return _already("approved" if a.state == "granted" else "denied", a.decided_by,
                        a.decided_at)  # fmt: skip
    if result.outcome == "expired":
        hint = f"Ask again: /orch {action} {a.project}"
        return notice_reply("⌛", f"Expired at {_hhmm(a.expires_at)}, nothing ran.", hint)
    return notice_reply("✋", "You requested it; another approver must approve.")


def refused_reply(message: str, hint: str = "") -> Reply:
    return notice_reply("⛔", message, hint)


# -- the database unreachable (issue 10.1) -------------------------------------------

DATABASE_DOWN: Final = "orch's database is unreachable"


def degraded_status_reply(rows: Sequence[ProjectRow], now: datetime, why: str) -> Reply:
    """``/orch status`` when the store cannot be read: the statuses orch's monitor holds
    in memory, under a banner that says so (the rows carry no uptime or incidents).  Both
    parts come from their templates; the banner is the notice template."""
    banner = notice_reply(
        "⚠️",
        f"Degraded: {DATABASE_DOWN} ({why}). These are the live statuses from orch's "
        "monitor; uptime, incidents and history are unavailable until it is back.",
        "Probes and status changes are kept meanwhile and written when it is back.",
    )
    fleet = status_reply(rows, now)
    return Reply(f"{banner.text}\n{fleet.text}", [*(banner.blocks or []), *(fleet.blocks or [])])


def degraded_project_status_reply(project: Project, status: str, why: str) -> Reply:
    """``/orch status <project>`` when the store cannot be read: the live status only."""
    return notice_reply(
        _MARK.get(status, "⚪"),
        f"{project.name} is {status} (live, from orch's monitor). Degraded: {DATABASE_DOWN} "
        f"({why}); its last probes, incidents and uptime are unavailable until it is back.",
    )


def database_down_reply(command: str, *, action: bool) -> Reply:
    """A command that needs the store, refused because it cannot be reached.  ``action``:
    it would have run something on a project, which orch never does without writing the
    request and its audit row first (it fails closed)."""
    if action:
        return refused_reply(
            f"{command} was refused: {DATABASE_DOWN}, so the request and its audit row "
            "cannot be written, and orch runs nothing it cannot record. Nothing was sent "
            "to the project.",
            "Ask again once the database is back; /orch status answers meanwhile.",
        )
    return refused_reply(
        f"{command} needs orch's database, which is unreachable just now; nothing was done.",
        "Ask again once it is back; /orch status answers meanwhile, from live state.",
    )
