"""Code decides what an analysis is: anything else is "analysis unavailable"."""

from __future__ import annotations

import math
from typing import Any

import pytest

from agents.analysis_schema import (
    ESCALATE,
    MAX_EVIDENCE,
    AnalysisInvalid,
    sanitized,
    tool_schema,
    validate,
)

ALLOWED = ("restart", "clear_cache")


def answer(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "diagnosis": "The disk is full.",
        "evidence": ["No space left on device (/var/lib/app 100% used)"],
        "root_cause_category": "disk_full",
        "recommended_action": ESCALATE,
        "confidence": 0.9,
        "risk": "low",
        "explanation": "Writes fail; a restart will not free space.",
    }
    return {**base, **changes}


def test_a_good_answer_is_an_analysis() -> None:
    out = validate(answer(recommended_action="restart"), ALLOWED, "claude")
    assert (out.root_cause_category, out.recommended_action, out.engine) == (
        "disk_full", "restart", "claude",
    )  # fmt: skip
    assert out.actionable and out.evidence == ("No space left on device (/var/lib/app 100% used)",)
    assert not validate(answer(), ALLOWED, "rules").actionable


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("The disk is full, restart it.", "expected an object"),
        ([answer()], "expected an object"),
        (answer(recommended_action="delete_database"), "not one this project allows"),
        (answer(recommended_action="pause"), "not one this project allows"),  # not allowed here
        (answer(root_cause_category="aliens"), "not a known category"),
        (answer(confidence=7.3), "not within 0..1"),
        (answer(confidence=math.nan), "not within 0..1"),
        (answer(confidence="high"), "must be a number"),
        (answer(confidence=True), "must be a number"),
        (answer(risk="none"), "risk"),
        (answer(evidence="one line"), "evidence must be a list"),
        (answer(evidence=["x"] * (MAX_EVIDENCE + 1)), "evidence must be a list"),
        (answer(evidence=[{"line": 1}]), "evidence lines must be text"),
        (answer(diagnosis=""), "diagnosis is empty"),
        (answer(diagnosis="x" * 100_000), "larger than"),
        (answer(project="billing"), "unexpected fields: project"),
        ({k: v for k, v in answer().items() if k != "risk"}, "risk must be text"),
    ],
)
def test_anything_else_is_refused_with_the_reason(raw: Any, why: str) -> None:
    with pytest.raises(AnalysisInvalid, match=why):
        validate(raw, ALLOWED, "claude")


def test_the_tool_offers_only_the_projects_actions() -> None:
    schema = tool_schema(["clear_cache"])
    actions = schema["properties"]["recommended_action"]["enum"]
    assert actions == ["clear_cache", "escalate_to_human", "no_action"]
    assert schema["additionalProperties"] is False


def test_links_are_dropped_and_channel_pings_defused() -> None:
    out = validate(
        answer(
            diagnosis="<!channel> see https://evil.example/login and @here",
            evidence=["https://wiki.internal/runbooks/disk <!subteam^S01>"],
        ),
        ALLOWED,
        "claude",
    )
    clean = sanitized(out, link_hosts=["wiki.internal"])
    assert clean.diagnosis == "(at)channel see [link removed] and (at)here"
    assert clean.evidence == ("https://wiki.internal/runbooks/disk (at)subteam^S01",)
