"""What orch says in Slack, as plain mrkdwn text.

Interim: ``bot/render.py`` (jinja2 Block Kit templates) is being written alongside; when it
lands, these functions keep their signatures and return ``Reply(text=…, blocks=
render_blocks(…))``.  Handlers only ever hand data to this module, so nothing else moves.
Every value that came from outside orch (incident summaries, probe reasons, user text) goes
through ``escape`` so it cannot become a mention or a link.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bot.config import Config, Project
from bot.slack.command_parser import USAGE, Command
from storage.base import Incident, ProbeRecord

_MARK = {"healthy": "🟢", "degraded": "🟡", "down": "🔴", "unknown": "⚪"}


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    blocks: list[dict[str, Any]] | None = None


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


def help_reply() -> Reply:
    # Slack reads <…> as a link or mention even inside backticks: escape the usage lines.
    lines = [f"*orch* — `/orch {escape('<command>')}`:"]
    lines += [f"• `/orch {escape(USAGE[name])}`" for name in USAGE]
    return Reply("\n".join(lines))


def error_reply(message: str) -> Reply:
    return Reply(escape(message))


def failure_reply() -> Reply:
    return Reply("orch could not answer that just now (the error is in orch's log).")


def _incident_line(incident: Incident, now: datetime) -> str:
    since = age((now - incident.opened_at).total_seconds())
    return (
        f"• `{incident.fingerprint}` {incident.severity}, open {since}: "
        f"{escape(incident.summary)} (id `{incident.id[:8]}`)"
    )


def status_reply(
    config: Config, statuses: Mapping[str, str], incidents: Sequence[Incident], now: datetime
) -> Reply:
    names = config.project_names()
    counts: dict[str, int] = {}
    for name in names:
        status = statuses.get(name, "unknown")
        counts[status] = counts.get(status, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no projects"
    lines = [f"*Fleet*: {summary}"]
    open_by_project: dict[str, int] = {}
    for incident in incidents:
        open_by_project[incident.project] = open_by_project.get(incident.project, 0) + 1
    for name in names:
        status = statuses.get(name, "unknown")
        extra = f", {open_by_project[name]} open incident(s)" if name in open_by_project else ""
        lines.append(f"{_MARK.get(status, '⚪')} `{name}` {status}{extra}")
    return Reply("\n".join(lines))


def project_status_reply(
    project: Project,
    status: str,
    last: ProbeRecord | None,
    incidents: Sequence[Incident],
    now: datetime,
) -> Reply:
    lines = [f"{_MARK.get(status, '⚪')} *{project.name}* is {status}"]
    if last is None:
        lines.append("No probe recorded yet.")
    else:
        when = age((now - last.ts).total_seconds())
        http = f", HTTP {last.http_status}" if last.http_status is not None else ""
        reason = f": {escape(last.reason)}" if last.reason else ""
        lines.append(f"Last probe {when} ago: {last.level}, {last.latency_ms:.0f} ms{http}{reason}")
    if incidents:
        lines.append("Open incidents:")
        lines += [_incident_line(i, now) for i in incidents]
    return Reply("\n".join(lines))


def projects_reply(config: Config) -> Reply:
    if not config.projects:
        return Reply("No projects are configured.")
    lines = [f"*{len(config.projects)} projects*"]
    for p in config.projects:
        group = p.orchestrator or "no orchestrator"
        lines.append(f"• `{p.name}` {p.kind}, {group}, {escape(display_url(p.url))}")
    return Reply("\n".join(lines))


def incidents_reply(incidents: Sequence[Incident], now: datetime, more: bool) -> Reply:
    if not incidents:
        return Reply("No open incidents. 🎉")
    lines = [f"*{len(incidents)}{'+' if more else ''} open incident(s)*"]
    lines += [_incident_line(i, now) for i in incidents]
    return Reply("\n".join(lines))


def coming_reply(command: Command, feature: str) -> Reply:
    target = f" for {command.project}" if command.project else ""
    return Reply(
        f"`/orch {command.name}`{target} is understood but not available yet: it comes with"
        f" {feature}. Nothing was changed."
    )


def home_view(
    config: Config, statuses: Mapping[str, str], incidents: Sequence[Incident], now: datetime
) -> dict[str, Any]:
    """The App Home tab: the fleet summary in one section (a template replaces it later)."""
    text = status_reply(config, statuses, incidents, now).text
    if incidents:
        text += "\n\n*Open incidents*\n" + "\n".join(_incident_line(i, now) for i in incidents)
    # A section's text is capped at 3000 characters by Slack.
    if len(text) > 3000:
        text = text[:2990] + "\n…"
    return {
        "type": "home",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    }
