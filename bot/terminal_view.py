"""The demo's terminal view: a live project table and a feed of events.

On a terminal it redraws in place with rich; piped or in CI it prints one plain line per
event, so logs and tests read the same story.
"""

from __future__ import annotations

import sys
from collections import deque
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from agents.bus import EventBus
from agents.events import Event
from agents.probe_result import ProbeResult
from bot.event_text import describe

STATUS_STYLE = {"healthy": "green", "degraded": "yellow", "down": "bold red", "unknown": "dim"}
KEY_METRICS = ("cpu_percent", "memory_percent", "error_rate")


class TerminalView:
    def __init__(self, projects: list[str], out: TextIO | None = None, live: bool | None = None):
        self._out = out or sys.stdout
        self._console = Console(file=self._out)
        self._live_enabled = self._out.isatty() if live is None else live
        self._projects = projects
        self._status: dict[str, str] = dict.fromkeys(projects, "unknown")
        self._last: dict[str, ProbeResult] = {}
        self._feed: deque[str] = deque(maxlen=12)
        self._live: Live | None = None

    def register(self, bus: EventBus) -> None:
        bus.subscribe("terminal-view", self.on_event)

    def start(self) -> None:
        if self._live_enabled:
            # rich calls _render at its own pace (4 Hz): a probe result only stores data.
            self._live = Live(
                console=self._console, refresh_per_second=4, get_renderable=self._render
            )
            self._live.start()

    def stop(self) -> None:
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
            self._live = None

    def say(self, line: str) -> None:
        """A line from the demo itself (fault injected, story step)."""
        self._add_line(f"» {line}")

    def on_result(self, result: ProbeResult) -> None:
        self._last[result.project] = result

    async def on_event(self, event: Event) -> None:
        if event.type == "project.status_changed" and event.project:
            self._status[event.project] = str(event.payload.get("to", "unknown"))
        self._add_line(describe(event))

    def _add_line(self, line: str) -> None:
        if self._live is None:
            print(line, file=self._out, flush=True)
        self._feed.append(line)

    def _render(self) -> Group:
        table = Table(title="orch — fleet", expand=True)
        for column in ("project", "status", "latency", "cpu %", "mem %", "errors", "note"):
            table.add_column(column)
        for name in self._projects:
            status = self._status.get(name, "unknown")
            last = self._last.get(name)
            metrics = last.metrics if last else {}
            cells = [_fmt(metrics.get(m), pct=(m == "error_rate")) for m in KEY_METRICS]
            table.add_row(
                name,
                Text(status, style=STATUS_STYLE.get(status, "")),
                f"{last.latency_ms:.0f} ms" if last else "-",
                *cells,
                (last.reason if last else "")[:60],
            )
        feed = Text("\n".join(self._feed) or "waiting for events…", style="dim")
        return Group(table, Text("events", style="bold"), feed)


def _fmt(value: float | None, *, pct: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value * 100:.1f}%" if pct else f"{value:.0f}"
