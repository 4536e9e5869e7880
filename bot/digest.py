"""The daily health digest's data: a fleet line and one entry per project, over the last
24 hours with the last 7 days beside it (DESIGN §1; rendered by ``templates/digest.json.j2``
and ``bot.digest_chart``; posted by ``bot.digest_post``).

Numbers come from the store (``report_facts``, ``uptime``, ``announced_statuses``) and are
defined in ``bot.digest_maths`` and docs/operations.md ("Digest: the maths").  Projects
that need attention come first, most urgent first: down now; then degraded or with an
incident still open; then anything that happened in the last 24 hours (incidents, uptime
under ``UPTIME_ATTENTION``, flapping, failed automatic fixes, no observation at all); then
expired approvals and metric anomalies.  When no project has a reason, the digest says
"all clear", so that a quiet morning is a signal too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from bot.digest_maths import (
    Figures,
    Span,
    Timeline,
    clipped,
    figures_of,
    maintenance,
    seconds,
    timeline_of,
    weighted_uptime,
    without,
)
from storage.base import Store
from storage.report_store import ReportFacts

DAY: Final = timedelta(hours=24)
WEEK: Final = timedelta(days=7)
UPTIME_ATTENTION: Final = 99.9  # percent over 24 h below which a project needs a look


@dataclass(frozen=True, slots=True)
class Window:
    """One window's facts and the figures of every project in it."""

    facts: ReportFacts
    holes: dict[str, list[Span]]  # maintenance per project
    figures: dict[str, Figures]


@dataclass(frozen=True, slots=True)
class ProjectDigest:
    name: str
    status: str  # healthy | degraded | down | unknown: as last announced
    day: Figures
    week: Figures
    reasons: tuple[str, ...]  # why it needs attention, most urgent first; () = fine
    rank: int  # 0 most urgent ... 4 fine
    in_maintenance: bool  # silenced at the digest's time
    timeline: Timeline  # the last 24 h, for the chart

    @property
    def needs_attention(self) -> bool:
        return bool(self.reasons)


@dataclass(frozen=True, slots=True)
class FleetLine:
    projects: int
    healthy_now: int
    attention: int
    uptime_pct: float | None  # 24 h, projects weighted by their watched time
    uptime_week_pct: float | None
    incidents: int
    incidents_week: int
    downtime_s: float
    fixes_verified: int
    fixes_verified_week: int
    time_saved_s: float  # verified automatic fixes x the group's minutes_saved_per_fix
    time_saved_week_s: float
    claude_tokens: int
    claude_cost_usd: float
    claude_tokens_week: int
    claude_cost_week_usd: float


@dataclass(frozen=True, slots=True)
class Digest:
    group: str
    channel: str
    day: str  # the group's local date, YYYY-MM-DD
    timezone: str
    generated_at: datetime  # the end of both windows
    fleet: FleetLine
    projects: tuple[ProjectDigest, ...]  # attention first, then by name
    complete: bool = True  # False: more anomaly/flap events than were read

    @property
    def attention(self) -> tuple[ProjectDigest, ...]:
        return tuple(p for p in self.projects if p.needs_attention)

    @property
    def calm(self) -> tuple[ProjectDigest, ...]:
        return tuple(p for p in self.projects if not p.needs_attention)

    @property
    def all_clear(self) -> bool:
        return bool(self.projects) and not self.attention


async def read_window(store: Store, projects: Sequence[str], since: datetime,
                      until: datetime) -> Window:  # fmt: skip
    facts = await store.report_facts(projects, since, until)
    holes = maintenance(facts.silences)
    uptime = await watched_uptime(store, projects, since, until, holes)
    figures = {p: figures_of(p, facts, holes.get(p, []), uptime.get(p)) for p in projects}
    return Window(facts, holes, figures)


async def watched_uptime(
    store: Store,
    projects: Sequence[str],
    since: datetime,
    until: datetime,
    holes: dict[str, list[Span]],
) -> dict[str, float]:
    """Uptime % outside maintenance: one store call for every project without a silence
    in the window; for the others, one per unsilenced piece, weighted by its length."""
    inside = {p: clipped(holes.get(p, []), since, until) for p in projects}
    plain = [p for p in projects if not inside[p]]
    found = await store.uptime(plain, since, until) if plain else {}
    for project in projects:
        if project in found or not inside[project]:
            continue
        parts: list[tuple[float | None, float]] = []
        for lo, hi in without((since, until), holes[project]):
            piece = (await store.uptime([project], lo, hi)).get(project)
            parts.append((piece, seconds([(lo, hi)])))
        pct = weighted_uptime(parts)
        if pct is not None:
            found[project] = pct
    return found


def reasons_of(status: str, day: Figures) -> tuple[int, tuple[str, ...]]:
    """(rank, reasons): rank 0 is the most urgent, 4 means nothing to look at."""
    found: list[tuple[int, str]] = []
    if status == "down":
        found.append((0, "down now"))
    elif status == "degraded":
        found.append((1, "degraded now"))
    if day.open_incidents:
        found.append((1, f"{day.open_incidents} open incident{_s(day.open_incidents)}"))
    if day.incidents:
        found.append((2, f"{day.incidents} incident{_s(day.incidents)} in 24 h"))
    if day.uptime_pct is not None and day.uptime_pct < UPTIME_ATTENTION:
        found.append((2, f"uptime {day.uptime_pct:.2f} %"))
    if day.uptime_pct is None and day.watched_s > 0:
        found.append((2, "not observed in 24 h"))
    if day.flaps:
        found.append((2, f"flapping ({day.flaps}×)"))
    if day.fixes_failed > 0:
        found.append((2, f"{day.fixes_failed} automatic fix{_es(day.fixes_failed)} failed"))
    if day.approvals_expired:
        n = day.approvals_expired
        found.append((3, f"{n} approval{_s(n)} expired unanswered"))
    if day.anomalies:
        listed = ", ".join(f"{a.metric} ×{a.count}" for a in day.anomalies)
        found.append((3, f"anomalies: {listed}"))
    found.sort(key=lambda f: f[0])
    return (found[0][0] if found else 4), tuple(text for _, text in found)


async def build_digest(
    store: Store,
    group: str,
    channel: str,
    projects: Sequence[str],
    now: datetime,
    *,
    timezone: str = "UTC",
    day_label: str | None = None,
    minutes_saved_per_fix: float = 15.0,
) -> Digest:
    statuses = await store.announced_statuses(list(projects))
    day = await read_window(store, projects, now - DAY, now)
    week = await read_window(store, projects, now - WEEK, now)
    entries = []
    for name in projects:
        status = statuses.get(name, "unknown")
        rank, reasons = reasons_of(status, day.figures[name])
        holes = day.holes.get(name, [])
        entries.append(ProjectDigest(
            name, status, day.figures[name], week.figures[name], reasons, rank,
            any(a <= now < b for a, b in holes), timeline_of(name, day.facts, holes),
        ))  # fmt: skip
    entries.sort(key=lambda p: (p.rank, -p.day.downtime_s, -p.day.incidents, p.name))
    fleet = _fleet(entries, statuses, minutes_saved_per_fix * 60.0)
    label = day_label or now.date().isoformat()
    complete = not (day.facts.signals_cut or week.facts.signals_cut)
    return Digest(group, channel, label, timezone, now, fleet, tuple(entries), complete)


def _fleet(entries: Sequence[ProjectDigest], statuses: dict[str, str],
           saved_per_fix_s: float) -> FleetLine:  # fmt: skip
    day = [e.day for e in entries]
    week = [e.week for e in entries]
    fixed, fixed_week = sum(f.fixes_verified for f in day), sum(f.fixes_verified for f in week)
    return FleetLine(
        projects=len(entries),
        healthy_now=sum(1 for e in entries if statuses.get(e.name) == "healthy"),
        attention=sum(1 for e in entries if e.needs_attention),
        uptime_pct=weighted_uptime((f.uptime_pct, f.watched_s) for f in day),
        uptime_week_pct=weighted_uptime((f.uptime_pct, f.watched_s) for f in week),
        incidents=sum(f.incidents for f in day),
        incidents_week=sum(f.incidents for f in week),
        downtime_s=sum(f.downtime_s for f in day),
        fixes_verified=fixed,
        fixes_verified_week=fixed_week,
        time_saved_s=fixed * saved_per_fix_s,
        time_saved_week_s=fixed_week * saved_per_fix_s,
        claude_tokens=sum(f.claude_tokens for f in day),
        claude_cost_usd=sum(f.claude_cost_usd for f in day),
        claude_tokens_week=sum(f.claude_tokens for f in week),
        claude_cost_week_usd=sum(f.claude_cost_usd for f in week),
    )


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def _es(n: int) -> str:
    return "" if n == 1 else "es"
