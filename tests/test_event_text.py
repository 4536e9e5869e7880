"""The demo's terminal lines: one readable line per event, never a payload dump for the
events people act on."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agents.events import Event
from bot.event_text import describe

AT = datetime(2026, 3, 4, 12, 0, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kind", "payload", "expected"),
    [
        ("escalation.raised",
         {"reason": "attempts_exhausted", "context": {"summary": "2 restarts did not help",
                                                      "logs": [{"message": "x"}]}},
         "NEEDS A HUMAN (attempts_exhausted): 2 restarts did not help"),
        ("analysis.completed",
         {"engine": "rules", "root_cause_category": "disk_full",
          "recommended_action": "escalate_to_human", "confidence": 0.7},
         "analysis by rules: disk_full, recommends escalate_to_human (confidence 0.7)"),
        ("action.failed", {"action": "restart", "error": "still failing after 60 s"},
         "restart failed: still failing after 60 s"),
        ("approval.requested", {"action": "restart", "requested_by": "U1", "approval_id": "ab12"},
         "APPROVAL NEEDED restart (by U1): orch approve ab12  |  orch deny ab12"),
    ],
)  # fmt: skip
def test_one_line_per_event(kind: str, payload: dict, expected: str) -> None:
    line = describe(Event(kind, AT, "test", payload, project="email-blast"))
    assert line == f"12:00:05  email-blast    {kind:<24} {expected}"
