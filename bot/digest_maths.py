"""The digest's numbers for one project over one window, from the store's facts.

Every definition here is stated for users in docs/operations.md ("Digest: the maths");
keep the two in step.  In short, over a window ``[since, until)``:

- **Maintenance** is the union of the project's silences.  Its time counts neither as up
  nor as down, and nothing that *starts* inside it (an incident, an anomaly, a flap) is
  counted.
- **Uptime** is the store's time-weighted uptime (``storage.rollups``) over the window
  minus maintenance: each unsilenced piece's uptime, the pieces weighted by their length.
- **Incidents**: opened in the window, outside maintenance (any condition).
- **Downtime**: the time ``down`` incidents were open (confirmation to resolution; an
  open one until ``until``) inside the window and outside maintenance.
- **MTTR**: the mean whole duration of the ``down`` incidents resolved in the window that
  did not open in maintenance.
- **MTTA**: the mean time from an incident's opening to its first response (the earliest
  of its acknowledgement and the first action asked about it, by anyone, orch's own
  Auto-Fixer included) over the counted incidents that had one before ``until``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from statistics import fmean
from typing import Final

from agents.events import METRIC_ANOMALY, PROJECT_FLAPPING
from storage.report_store import ProjectCounts, ReportFacts, ReportIncident, SilenceSpan

Span = tuple[datetime, datetime]
TOP_ANOMALIES: Final = 3
_NO_COUNTS: Final = ProjectCounts()


# -- spans -------------------------------------------------------------------------------


def merged(spans: Iterable[Span]) -> list[Span]:
    """Sorted, overlapping or touching spans joined; empty ones dropped."""
    out: list[Span] = []
    for lo, hi in sorted(s for s in spans if s[0] < s[1]):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def clipped(spans: Iterable[Span], lo: datetime, hi: datetime) -> list[Span]:
    return [(max(a, lo), min(b, hi)) for a, b in spans if max(a, lo) < min(b, hi)]


def without(span: Span, holes: Sequence[Span]) -> list[Span]:
    """``span`` minus the (merged) ``holes``."""
    pieces, (lo, hi) = [], span
    for a, b in holes:
        if b <= lo or a >= hi:
            continue
        if a > lo:
            pieces.append((lo, a))
        lo = max(lo, b)
    if lo < hi:
        pieces.append((lo, hi))
    return pieces


def seconds(spans: Iterable[Span]) -> float:
    return sum((b - a).total_seconds() for a, b in spans)


def inside(at: datetime, holes: Sequence[Span]) -> bool:
    return any(a <= at < b for a, b in holes)


def maintenance(silences: Iterable[SilenceSpan]) -> dict[str, list[Span]]:
    """Each project's silences, merged (not clipped: an incident that opened in a silence
    before the window is still recognised)."""
    spans: dict[str, list[Span]] = {}
    for s in silences:
        spans.setdefault(s.project, []).append((s.starts_at, s.ends_at))
    return {project: merged(found) for project, found in spans.items()}


# -- one project, one window ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Anomaly:
    metric: str
    count: int
    level: str  # the worst seen: crit | warn


@dataclass(frozen=True, slots=True)
class Timeline:
    """What the chart draws for a project: spans inside the window."""

    down: tuple[Span, ...]
    degraded: tuple[Span, ...]  # metric incidents
    maintenance: tuple[Span, ...]


@dataclass(frozen=True, slots=True)
class Figures:
    uptime_pct: float | None  # None: not observed outside maintenance
    watched_s: float  # the window minus maintenance
    maintenance_s: float
    incidents: int
    open_incidents: int  # open at the window's end
    downtime_s: float
    mtta_s: float | None
    mttr_s: float | None
    fixes_run: int
    fixes_verified: int
    approvals_granted: int
    approvals_denied: int
    approvals_expired: int
    anomalies: tuple[Anomaly, ...]  # the top ones
    flaps: int  # flapping episodes that started
    analyses: int
    claude_tokens: int
    claude_cost_usd: float

    @property
    def fixes_failed(self) -> int:
        return self.fixes_run - self.fixes_verified


def first_response(incident: ReportIncident, until: datetime) -> datetime | None:
    answers = [t for t in (incident.acked_at, incident.first_action_at) if t is not None]
    answers = [t for t in answers if t < until]
    return min(answers) if answers else None


def figures_of(
    project: str,
    facts: ReportFacts,
    holes: Sequence[Span],
    uptime_pct: float | None,
) -> Figures:
    lo, hi = facts.since, facts.until
    mine = [i for i in facts.incidents if i.project == project]
    counted = [i for i in mine if lo <= i.opened_at < hi and not inside(i.opened_at, holes)]
    down = [i for i in mine if i.condition == "down"]
    downtime = sum(
        seconds(without(span, holes))
        for i in down
        for span in clipped([(i.opened_at, i.resolved_at or hi)], lo, hi)
    )
    repaired = [
        (i.resolved_at - i.opened_at).total_seconds()
        for i in down
        if i.resolved_at is not None and lo <= i.resolved_at < hi
        and not inside(i.opened_at, holes)
    ]  # fmt: skip
    answered = [
        max(0.0, (t - i.opened_at).total_seconds())
        for i in counted
        if (t := first_response(i, hi)) is not None
    ]
    counts = facts.counts.get(project, _NO_COUNTS)
    flaps = [
        s for s in facts.signals
        if s.project == project and s.type == PROJECT_FLAPPING
        and s.payload.get("started") is True and not inside(s.ts, holes)
    ]  # fmt: skip
    maintenance_s = seconds(clipped(holes, lo, hi))
    return Figures(
        uptime_pct=uptime_pct,
        watched_s=(hi - lo).total_seconds() - maintenance_s,
        maintenance_s=maintenance_s,
        incidents=len(counted),
        open_incidents=sum(1 for i in mine if i.resolved_at is None or i.resolved_at >= hi),
        downtime_s=downtime,
        mtta_s=fmean(answered) if answered else None,
        mttr_s=fmean(repaired) if repaired else None,
        fixes_run=counts.fixes_run,
        fixes_verified=counts.fixes_verified,
        approvals_granted=counts.approvals_granted,
        approvals_denied=counts.approvals_denied,
        approvals_expired=counts.approvals_expired,
        anomalies=_top_anomalies(project, facts, holes),
        flaps=len(flaps),
        analyses=counts.analyses,
        claude_tokens=counts.claude_tokens,
        claude_cost_usd=counts.claude_cost_usd,
    )


def _top_anomalies(project: str, facts: ReportFacts, holes: Sequence[Span]) -> tuple[Anomaly, ...]:
    found: dict[str, list[int]] = {}  # metric -> [count, crit seen]
    for s in facts.signals:
        if s.project != project or s.type != METRIC_ANOMALY or inside(s.ts, holes):
            continue
        entry = found.setdefault(str(s.payload.get("metric") or "?"), [0, 0])
        entry[0] += 1
        entry[1] |= s.payload.get("level") == "crit"
    ranked = sorted(found.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))
    top = ranked[:TOP_ANOMALIES]
    return tuple(Anomaly(metric, n, "crit" if crit else "warn") for metric, (n, crit) in top)


def timeline_of(project: str, facts: ReportFacts, holes: Sequence[Span]) -> Timeline:
    lo, hi = facts.since, facts.until
    mine = [i for i in facts.incidents if i.project == project]

    def spans(down: bool) -> tuple[Span, ...]:
        raw = [(i.opened_at, i.resolved_at or hi) for i in mine if (i.condition == "down") == down]
        return tuple(merged(clipped(raw, lo, hi)))

    return Timeline(spans(True), spans(False), tuple(clipped(holes, lo, hi)))


def weighted_uptime(parts: Iterable[tuple[float | None, float]]) -> float | None:
    """``(uptime %, weight)`` pairs -> their weighted mean; None when nothing is weighed."""
    known = [(u, w) for u, w in parts if u is not None and w > 0]
    total = sum(w for _, w in known)
    return sum(u * w for u, w in known) / total if total > 0 else None
