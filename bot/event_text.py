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
        "action.requested": lambda: (
            f"{p.get('action')} requested by {p.get('requested_by')}"
            + (" (needs approval)" if p.get("needs_approval") else "")
        ),
        # The approval id in full: `orch approve <id>` is how a terminal answers it.
        "approval.requested": lambda: (
            f"APPROVAL NEEDED {p.get('action')} (by {p.get('requested_by')}):"
            f" orch approve {p.get('approval_id')}  |  orch deny {p.get('approval_id')}"
        ),
        "approval.granted": lambda: f"{p.get('action')} approved by {p.get('by')}",
        "approval.denied": lambda: f"{p.get('action')} denied by {p.get('by')}",
        "approval.expired": lambda: f"{p.get('action')} approval expired: nothing ran",
        "escalation.raised": lambda: (
            f"NEEDS A HUMAN ({p.get('reason')}): {_context(p).get('summary', '')}"
        ),
        "analysis.completed": lambda: (
            f"analysis by {p.get('engine')}: {p.get('root_cause_category')}, recommends"
            f" {p.get('recommended_action')} (confidence {p.get('confidence')})"
        ),
        "action.verified": lambda: f"{p.get('action')} verified: healthy again",
        "action.failed": lambda: f"{p.get('action')} failed: {p.get('error')}",
        "remediation.suspended": lambda: f"auto-fix suspended: {p.get('reason')}",
    }.get(event.type)
    text = what() if what else ", ".join(f"{k}={v}" for k, v in sorted(p.items()))
    return f"{event.ts:%H:%M:%S}  {event.project or '-':<14} {event.type:<24} {text}"


def _context(p: dict[str, Any]) -> dict[str, Any]:
    context = p.get("context")
    return context if isinstance(context, dict) else {}


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
