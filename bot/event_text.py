"""One readable line per event, shared by the terminal view and orch's logs."""

from __future__ import annotations

import logging
from typing import Any

from agents.bus import EventBus
from agents.events import Event

log = logging.getLogger("orch.events")


def describe(event: Event) -> str:
    """One human line for an event (no colours)."""
    p: dict[str, Any] = event.payload
    what = {
        "project.status_changed": lambda: f"{p.get('from')} → {p.get('to')}: {p.get('reason')}",
        "project.flapping": lambda: "started flapping" if p.get("started") else "stopped flapping",
        "metric.anomaly": lambda: (
            f"{p.get('metric')} = {p.get('value')} beyond {p.get('threshold')} ({p.get('level')})"
        ),
        "metric.recovered": lambda: f"{p.get('metric')} back to {p.get('value')}",
        "incident.opened": lambda: f"OPENED [{p.get('severity')}] {p.get('summary')}",
        "incident.updated": lambda: f"updated [{p.get('severity')}] {p.get('summary')}",
        "incident.resolved": lambda: (
            f"RESOLVED {p.get('fingerprint')} after {_duration(p.get('duration_s'))}"
        ),
    }.get(event.type)
    text = what() if what else ", ".join(f"{k}={v}" for k, v in sorted(p.items()))
    return f"{event.ts:%H:%M:%S}  {event.project or '-':<14} {event.type:<24} {text}"


def _duration(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


class EventLogger:
    """Logs every event at INFO, one line each: what an operator tails in production."""

    def register(self, bus: EventBus) -> None:
        bus.subscribe("event-logger", self.on_event)

    async def on_event(self, event: Event) -> None:
        log.info("%s", describe(event))
