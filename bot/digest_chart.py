"""PNG charts: the digest's status timeline of a group and ``/orch history``'s chart of one
project (its status and key metrics).  matplotlib with the Agg renderer, no display.

matplotlib (and numpy under it) is imported here, lazily, inside the functions: importing
it costs about 30 MB of RSS and a few hundred milliseconds, which orch pays only when the
first chart is drawn (its start-up RSS is benchmarked).  Figures are built with the
object-oriented API (``Figure`` + ``FigureCanvasAgg``, never ``pyplot``), so no global
state is shared and rendering may run in a worker thread (``asyncio.to_thread``) while
the loop goes on.  Text drawn from data is escaped for mathtext (``$``).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any, Final

from bot.digest_maths import Span, Timeline

if TYPE_CHECKING:
    from bot.digest import Digest

MAX_ROWS: Final = 30  # projects drawn on the digest's chart (attention first)
DPI: Final = 100
WIDTH_IN: Final = 10.0
COLOURS: Final = {
    "up": "#2eb886", "degraded": "#f2a93b", "down": "#d9383a",
    "maintenance": "#9aa4b2", "unobserved": "#e3e6ea",
}  # fmt: skip
Series = Sequence[tuple[datetime, float]]


@dataclass(frozen=True, slots=True)
class Row:
    label: str
    timeline: Timeline
    observed: bool  # False: no probe verdict in the window (drawn grey)
    note: str  # right of the row: "99.95 %"


def _plain(text: str) -> str:
    return text.replace("$", r"\$")  # mathtext would read $...$ as a formula


def _png(figure: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _pct(value: float | None) -> str:
    return "no data" if value is None else f"{value:.2f} %"


def _bars(axes: Any, y: float, spans: Sequence[Span], colour: str, **style: Any) -> None:
    from matplotlib import dates

    if spans:
        ranges = [(dates.date2num(a), dates.date2num(b) - dates.date2num(a)) for a, b in spans]
        axes.broken_barh(ranges, (y - 0.35, 0.7), facecolors=colour, **style)


def _timelines(axes: Any, rows: Sequence[Row], since: datetime, until: datetime,
               zone: tzinfo) -> None:  # fmt: skip
    from matplotlib import dates

    for index, row in enumerate(rows):
        y = len(rows) - 1 - index
        base = COLOURS["up"] if row.observed else COLOURS["unobserved"]
        _bars(axes, y, [(since, until)], base)
        _bars(axes, y, row.timeline.maintenance, COLOURS["maintenance"], hatch="//")
        _bars(axes, y, row.timeline.degraded, COLOURS["degraded"])
        _bars(axes, y, row.timeline.down, COLOURS["down"])
    ticks = range(len(rows))
    right = axes.twinx()  # the notes (uptime) as right-hand tick labels: laid out, not cut
    for side, labels in ((axes, [r.label[:32] for r in rows]), (right, [r.note for r in rows])):
        side.set_ylim(-0.6, len(rows) - 0.4)
        side.set_yticks(ticks, [_plain(text) for text in reversed(labels)], fontsize=8)
        side.tick_params(axis="y", length=0)
        for edge in ("top", "right", "left"):
            side.spines[edge].set_visible(False)
    axes.set_xlim(dates.date2num(since), dates.date2num(until))
    if (until - since).total_seconds() <= 48 * 3600:
        axes.xaxis.set_major_locator(dates.HourLocator(byhour=range(0, 24, 3), tz=zone))
        axes.xaxis.set_major_formatter(dates.DateFormatter("%H:%M", tz=zone))
    else:
        axes.xaxis.set_major_locator(dates.DayLocator(tz=zone))
        axes.xaxis.set_major_formatter(dates.DateFormatter("%a %d", tz=zone))
    axes.tick_params(axis="x", labelsize=8)
    axes.grid(axis="x", color="#ffffff", linewidth=0.6)


def _legend(figure: Any) -> None:
    from matplotlib.patches import Patch

    names = {"up": "up", "degraded": "metric incident", "down": "down",
             "maintenance": "maintenance (silenced)", "unobserved": "not observed"}  # fmt: skip
    handles = [Patch(facecolor=COLOURS[k], label=v) for k, v in names.items()]
    figure.legend(handles=handles, loc="outside lower center", ncol=5, fontsize=8, frameon=False)


def render_timeline_chart(title: str, rows: Sequence[Row], since: datetime, until: datetime,
                          zone: tzinfo, footnote: str = "") -> bytes:  # fmt: skip
    """One status bar per row over ``[since, until)``: a PNG."""
    from matplotlib.figure import Figure

    height = 1.4 + 0.32 * max(1, len(rows))
    figure = Figure(figsize=(WIDTH_IN, height), layout="constrained")
    axes = figure.add_subplot()
    _timelines(axes, rows, since, until, zone)
    axes.set_title(_plain(title), fontsize=10, loc="left")
    if footnote:
        axes.set_xlabel(_plain(footnote), fontsize=8)
    _legend(figure)
    return _png(figure)


def render_digest_chart(digest: Digest, zone: tzinfo) -> bytes:
    """The digest's picture: the last 24 h of the group's projects, attention first."""
    from bot.digest import DAY

    shown = digest.projects[:MAX_ROWS]
    rows = [Row(p.name, p.timeline, p.day.uptime_pct is not None, _pct(p.day.uptime_pct))
            for p in shown]  # fmt: skip
    more = digest.projects[MAX_ROWS:]
    footnote = ""
    if more:
        fine = not any(p.needs_attention for p in more)
        footnote = f"+{len(more)} more projects" + (
            ", none needing attention" if fine else " (listed in the digest)"
        )
    title = f"{digest.group}: the last 24 h to {digest.generated_at.astimezone(zone):%H:%M %Z}"
    until = digest.generated_at
    return render_timeline_chart(title, rows, until - DAY, until, zone, footnote)


def render_history_chart(project: str, window: str, timeline: Timeline, uptime_pct: float | None,
                         metrics: Mapping[str, Series], since: datetime, until: datetime,
                         zone: tzinfo) -> bytes:  # fmt: skip
    """``/orch history``: the project's status bar on top, a panel per key metric below."""
    from matplotlib import dates
    from matplotlib.figure import Figure

    panels = [(name, points) for name, points in metrics.items() if points][:4]
    figure = Figure(figsize=(WIDTH_IN, 2.2 + 1.6 * len(panels)), layout="constrained")
    grid = figure.add_gridspec(1 + len(panels), 1, height_ratios=[0.6] + [2.0] * len(panels))
    status = figure.add_subplot(grid[0])
    row = Row(project, timeline, uptime_pct is not None, _pct(uptime_pct))
    _timelines(status, [row], since, until, zone)
    status.set_title(_plain(f"{project}: status and key metrics, last {window}"), fontsize=10,
                     loc="left")  # fmt: skip
    for index, (name, points) in enumerate(panels, start=1):
        axes = figure.add_subplot(grid[index], sharex=status)
        axes.plot([dates.date2num(t) for t, _ in points], [v for _, v in points],
                  color="#3b73b9", linewidth=1.0)  # fmt: skip
        for lo, hi in (*timeline.down, *timeline.degraded):
            axes.axvspan(dates.date2num(lo), dates.date2num(hi), color=COLOURS["down"], alpha=0.12)
        axes.set_ylabel(_plain(name), fontsize=8)
        axes.tick_params(labelsize=8)
        axes.grid(color="#e3e6ea", linewidth=0.6)
    if not panels:
        status.set_xlabel("no metric samples in this window", fontsize=8)
    _legend(figure)
    return _png(figure)
