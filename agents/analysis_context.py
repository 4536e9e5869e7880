"""What a good on-call engineer would look at before saying what is wrong: the context
both analysis engines read (Claude and the rule engine), gathered once per analysis.

Everything is bounded (a fixed number of probes, transitions, metrics and log lines, and
a character budget for the logs, so a prompt never grows with the size of a log) and
every text that came from a project (probe reasons, log lines) is redacted
(``agents.redact``) before it is kept here: what is in a context may reach Claude, the
store and orch's logs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import aiohttp

from agents.events import PROJECT_STATUS_CHANGED
from agents.redact import redact
from bot.config import Project
from storage.base import Incident, MetricSample, Store

log = logging.getLogger(__name__)

PROBES: Final = 10
TRANSITIONS: Final = 8
METRIC_WINDOW: Final = timedelta(hours=1)
LOG_FETCH: Final = 200  # entries asked of /logs
LOG_TAIL: Final = 25  # the newest lines kept as they are
ERROR_LINES: Final = 15  # lines matching an error pattern, from the whole fetch
LOG_LINE_CHARS: Final = 300
LOG_BUDGET_CHARS: Final = 8_000  # tail + error lines together (about 2,000 tokens)
SIMILAR: Final = 5
LOGS_TIMEOUT_S: Final = 5.0

# A line worth quoting even when it is not among the newest.
ERROR_PATTERN: Final = re.compile(
    r"error|exception|fatal|fail|refused|timed? ?out|denied|panic|killed|oom|"
    r"no space|too many|unavailable|expired|traceback|429|5\d\d\b",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class LogLine:
    ts: str
    level: str
    message: str  # redacted, at most LOG_LINE_CHARS


@dataclass(frozen=True, slots=True)
class MetricSummary:
    metric: str
    samples: int
    first: float
    last: float
    low: float
    high: float
    trend: str  # rising | falling | flat
    threshold: float | None  # the warn level, when the config has one
    crossed_at: str | None  # when it first went beyond the threshold in the window


@dataclass(frozen=True)
class AnalysisContext:
    project: str
    kind: str  # contract | http | prometheus
    allowed_actions: tuple[str, ...]
    incident: dict[str, Any] | None  # id, condition, severity, summary, opened_at
    probes: tuple[dict[str, Any], ...] = ()  # newest first
    transitions: tuple[str, ...] = ()  # oldest first
    metrics: tuple[MetricSummary, ...] = ()
    logs: tuple[LogLine, ...] = ()  # the newest lines, oldest first
    error_lines: tuple[LogLine, ...] = ()  # older lines that look like errors
    actions: tuple[str, ...] = ()  # what was tried for this incident, and how it ended
    similar: tuple[str, ...] = ()  # this project's earlier incidents like this one
    notes: tuple[str, ...] = field(default=())  # what could not be gathered, and why

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def all_log_lines(self) -> list[LogLine]:
        return [*self.error_lines, *self.logs]


async def gather_context(
    store: Store,
    project: Project,
    incident: Incident | None,
    session: Callable[[], aiohttp.ClientSession | None],
    now: datetime,
) -> AnalysisContext:
    notes: list[str] = []
    logs, errors = await _logs(project, session(), notes)
    return AnalysisContext(
        project=project.name,
        kind=project.kind,
        allowed_actions=tuple(project.allowed_actions),
        incident=_incident(incident),
        probes=tuple(await recent_probe_lines(store, project.name, PROBES)),
        transitions=tuple(await _transitions(store, project.name)),
        metrics=tuple(await _metrics(store, project, now)),
        logs=tuple(logs),
        error_lines=tuple(errors),
        actions=tuple(await _actions(store, incident)),
        similar=tuple(await _similar(store, project.name, incident)),
        notes=tuple(notes),
    )


def _incident(incident: Incident | None) -> dict[str, Any] | None:
    if incident is None:
        return None
    return {
        "id": incident.id,
        "condition": incident.condition,
        "severity": incident.severity,
        "summary": redact(incident.summary),
        "opened_at": incident.opened_at.isoformat(),
    }


async def recent_probe_lines(store: Store, name: str, limit: int) -> list[dict[str, Any]]:
    """The project's newest ``limit`` probes, newest first, reasons redacted."""
    return [{"ts": p.ts.isoformat(timespec="seconds"), "level": p.level,
             "reason": redact(p.reason)[:200], "http_status": p.http_status,
             "latency_ms": round(p.latency_ms, 1)}
            for p in await store.recent_probes(name, limit)]  # fmt: skip


async def _transitions(store: Store, name: str) -> list[str]:
    events = await store.list_events(project=name, types=[PROJECT_STATUS_CHANGED],
                                     limit=TRANSITIONS)  # fmt: skip
    lines = []
    for e in events:
        p = e.payload
        reason = redact(str(p.get("reason") or ""))[:160]
        lines.append(f"{e.ts:%H:%M:%S} {p.get('from')} -> {p.get('to')}: {reason}")
    return lines


async def _metrics(store: Store, project: Project, now: datetime) -> list[MetricSummary]:
    out = []
    for metric, threshold in sorted(project.thresholds.items()):
        series = await store.metric_series(project.name, metric, now - METRIC_WINDOW)
        summary = summarise(metric, series, threshold.warn, threshold.direction)
        if summary is not None:
            out.append(summary)
    return out


def summarise(
    metric: str, series: Sequence[MetricSample], warn: float | None, direction: str = "above"
) -> MetricSummary | None:
    values = [(s.ts, s.value) for s in series if math.isfinite(s.value)]
    if not values:
        return None
    numbers = [v for _, v in values]
    first, last = numbers[0], numbers[-1]
    span = max(numbers) - min(numbers)
    trend = "flat"
    if span > 0 and abs(last - first) > 0.2 * span:
        trend = "rising" if last > first else "falling"
    crossed = None
    if warn is not None:
        beyond = (lambda v: v > warn) if direction == "above" else (lambda v: v < warn)
        crossed = next((ts.isoformat(timespec="seconds") for ts, v in values if beyond(v)), None)
    return MetricSummary(metric, len(numbers), first, last, min(numbers), max(numbers), trend,
                         warn, crossed)  # fmt: skip


async def _logs(
    project: Project, session: aiohttp.ClientSession | None, notes: list[str]
) -> tuple[list[LogLine], list[LogLine]]:
    """(the newest lines, older error lines), redacted and within the character budget."""
    lines = await fetch_log_lines(project, session, LOG_FETCH, notes)
    tail = lines[-LOG_TAIL:]
    older = lines[: -LOG_TAIL or None] if len(lines) > LOG_TAIL else []
    errors = _dedupe([line for line in older if _is_error(line)])[-ERROR_LINES:]
    return _within_budget(tail, errors)


async def fetch_log_lines(
    project: Project, session: aiohttp.ClientSession | None, limit: int, notes: list[str]
) -> list[LogLine]:
    """The newest ``limit`` lines of a contract project's ``/logs``, oldest first, each
    redacted and cut to LOG_LINE_CHARS; [] (and a note why) when it cannot be read: a
    project that is down often cannot answer, and nobody waits longer than
    LOGS_TIMEOUT_S for it."""
    if project.kind != "contract" or session is None:
        return []
    try:
        async with asyncio.timeout(LOGS_TIMEOUT_S):
            async with session.get(
                f"{project.url}/logs", params={"limit": str(limit)}, allow_redirects=False
            ) as response:
                if response.status != 200:
                    notes.append(f"/logs answered HTTP {response.status}")
                    return []
                body = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        notes.append(f"/logs could not be read: {type(exc).__name__}")
        return []
    entries = body.get("entries") if isinstance(body, dict) else None
    if not isinstance(entries, list):
        notes.append("/logs did not answer with entries")
        return []
    return [_line(e) for e in entries[-limit:] if isinstance(e, dict)]


def _line(entry: dict[str, Any]) -> LogLine:
    return LogLine(str(entry.get("ts", ""))[:40], str(entry.get("level", ""))[:10],
                   redact(str(entry.get("message", "")))[:LOG_LINE_CHARS])  # fmt: skip


def _is_error(line: LogLine) -> bool:
    return line.level.lower() in ("error", "critical", "fatal") or bool(
        ERROR_PATTERN.search(line.message)
    )


def _dedupe(lines: list[LogLine]) -> list[LogLine]:
    """The same message repeated a hundred times is one line of evidence (the last)."""
    seen: dict[str, LogLine] = {}
    for line in lines:
        key = re.sub(r"\d+", "#", line.message)
        seen.pop(key, None)
        seen[key] = line
    return list(seen.values())


def _within_budget(
    tail: list[LogLine], errors: list[LogLine]
) -> tuple[list[LogLine], list[LogLine]]:
    """Drop the oldest lines first until tail + errors fit LOG_BUDGET_CHARS."""

    def size(lines: list[LogLine]) -> int:
        return sum(len(line.message) + 30 for line in lines)

    while errors and size(tail) + size(errors) > LOG_BUDGET_CHARS:
        errors = errors[1:]
    while tail and size(tail) > LOG_BUDGET_CHARS:
        tail = tail[1:]
    return tail, errors


async def _actions(store: Store, incident: Incident | None) -> list[str]:
    if incident is None:
        return []
    out = []
    for a in await store.incident_actions(incident.id):
        line = f"{a.action} by {a.origin}: {a.state}"
        if a.outcome:
            line += f" (answer {a.outcome})"
        if a.error:
            line += f": {redact(a.error)[:200]}"
        out.append(line)
    return out


async def _similar(store: Store, name: str, incident: Incident | None) -> list[str]:
    if incident is None:
        return []
    recent = await store.list_incidents(project=name, limit=50)
    earlier = [i for i in recent if i.id != incident.id and i.condition == incident.condition]
    earlier = earlier[:SIMILAR]
    out = []
    for i in earlier:
        took = f"resolved after {i.duration_s:.0f} s" if i.duration_s is not None else i.state
        analyses = await store.analyses_for(i.id)
        cause = (
            f"; cause then: {analyses[-1].new.payload.get('root_cause_category')}"
            if analyses
            else ""
        )
        out.append(f"{i.opened_at:%Y-%m-%d %H:%M} {redact(i.summary)[:160]} ({took}{cause})")
    return out
