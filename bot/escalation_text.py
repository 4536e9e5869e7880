"""An ``escalation.raised`` for people: what is wrong, what orch saw and tried, in a few
short lines (``agents.escalation`` gathered the context, already redacted and bounded).
The on-call mention is the card's (``bot.cards.TimelineEntry``)."""

from __future__ import annotations

from typing import Any, Final

from bot.payload_text import text_of

REASONS: Final = {
    "attempts_exhausted": "automatic fixes did not help",
    "budget_exhausted": "the restart budget is spent; auto-fix is suspended",
    "action_not_allowed": "orch may not take the action this needs",
    "auto_fix_off": "auto-fix is off for this project",
    "mass_failure": "much of the fleet is down at once; orch suspects its own network"
    " and restarts nothing",
    "dead_letter": "orch could not handle one of its own events",
    "analysis_requested": "an analysis was asked for",
}
LOG_LINES: Final = 5
SHOWN_DOWN: Final = 10


def describe_escalation(p: dict[str, Any]) -> tuple[str, list[str]]:
    reason = p.get("reason")
    why = REASONS.get(reason, text_of(reason)) if isinstance(reason, str) else ""
    headline = f"Needs a human: {why or 'orch cannot fix this by itself'}"
    context = p.get("context")
    if not isinstance(context, dict):
        return headline, [text_of(context, 2000)]
    lines = [text_of(context.get("summary"), 500)]
    if reason == "analysis_requested":  # a person asking, not a problem report
        return "Analysis requested", [line for line in lines if line]
    lines.append(_probes(context.get("recent_probes")))
    lines.append(_tried(context.get("actions")))
    lines += _logs(context.get("logs"))
    lines.append(_down(context))
    if reason == "dead_letter":
        lines.append(f"{text_of(context.get('event_type'))} for {text_of(context.get('role'))}:"
                     f" {text_of(context.get('error'), 300)}")  # fmt: skip
    return headline, [line for line in lines if line]


def _probes(probes: Any) -> str:
    if not isinstance(probes, list) or not probes:
        return ""
    failed = sum(1 for p in probes if isinstance(p, dict) and p.get("level") == "fail")
    newest = probes[0] if isinstance(probes[0], dict) else {}
    reason = text_of(newest.get("reason"), 200)
    tail = f"; newest: {reason}" if reason else ""
    return f"Last {len(probes)} probes: {failed} failed{tail}"


def _tried(actions: Any) -> str:
    if not isinstance(actions, list) or not actions:
        return "Tried: nothing yet"
    parts = []
    for action in actions[:5]:
        if not isinstance(action, dict):
            continue
        part = f"{text_of(action.get('action'))} {text_of(action.get('state'))}"
        if action.get("error"):
            part += f" ({text_of(action.get('error'), 120)})"
        parts.append(part)
    more = f"; and {len(actions) - 5} more" if len(actions) > 5 else ""
    return "Tried: " + "; ".join(parts) + more


def _logs(logs: Any) -> list[str]:
    if not isinstance(logs, list) or not logs:
        return []
    lines = []
    for entry in logs[-LOG_LINES:]:
        if isinstance(entry, dict):
            level = text_of(entry.get("level"), 10).upper()
            lines.append(f"log {level}: {text_of(entry.get('message'), 200)}")
    return lines


def _down(context: dict[str, Any]) -> str:
    down = context.get("down")
    if not isinstance(down, list) or not down:
        return ""
    shown = ", ".join(text_of(name, 64) for name in down[:SHOWN_DOWN])
    count = context.get("down_count")
    total = count if isinstance(count, int) else len(down)
    more = f" and {total - SHOWN_DOWN} more" if total > SHOWN_DOWN else ""
    return f"Down: {shown}{more}"
