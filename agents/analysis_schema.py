"""The shape of an analysis, whoever made it (Claude or the rule engine), and the code
that decides whether an answer is one (DESIGN §6: Claude advises, code decides).

Claude is offered exactly one tool whose input schema is ``tool_schema(allowed)``; its
answer is then checked again here by ``validate``, because a schema in a prompt is a
request, not a guarantee: prose, an unknown action, another project's action, a
confidence of 7.3, 100 KB of text, a missing field: all are ``AnalysisInvalid`` and the
incident gets "analysis unavailable" (and the rule engine's analysis), never an action.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Final
from urllib.parse import urlsplit

# What went wrong, in words both engines and the evaluation share.
CATEGORIES: Final = (
    "disk_full",
    "out_of_memory",  # also a leak: memory climbing until the process dies or swaps
    "database_unavailable",  # refused, down, unreachable
    "database_pool_exhausted",  # too many connections, pool timeouts
    "rate_limited",  # an upstream answering 429
    "dns_failure",
    "tls_certificate",  # expired, not yet valid, hostname mismatch
    "dependency_timeout",  # an upstream too slow
    "crash_loop_after_deploy",
    "queue_backlog",
    "configuration_error",
    "unknown",
)
RISKS: Final = ("low", "medium", "high")
ESCALATE: Final = "escalate_to_human"
NO_ACTION: Final = "no_action"
ENGINES: Final = ("claude", "rules")

MAX_DIAGNOSIS: Final = 500
MAX_EXPLANATION: Final = 2000
MAX_EVIDENCE: Final = 8
MAX_EVIDENCE_LINE: Final = 300
MAX_ANSWER_BYTES: Final = 16_000  # the whole tool input, serialised
TOOL_NAME: Final = "report_analysis"


class AnalysisInvalid(ValueError):
    """An answer that is not an analysis (the message says what was wrong)."""


@dataclass(frozen=True, slots=True)
class AnalysisOutput:
    diagnosis: str
    evidence: tuple[str, ...]
    root_cause_category: str
    recommended_action: str  # one of the project's allowed actions, ESCALATE or NO_ACTION
    confidence: float  # 0..1
    risk: str  # low | medium | high
    explanation: str
    engine: str  # claude | rules

    @property
    def actionable(self) -> bool:
        """Whether it recommends one of the project's actions (which a human must still
        approve)."""
        return self.recommended_action not in (ESCALATE, NO_ACTION)

    def to_payload(self) -> dict[str, Any]:
        data = asdict(self)
        data["evidence"] = list(self.evidence)
        return data


def tool_schema(allowed_actions: Sequence[str]) -> dict[str, Any]:
    """The JSON schema of the one tool Claude may call: the analysis itself."""
    actions = [*allowed_actions, ESCALATE, NO_ACTION]
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [
            "diagnosis",
            "evidence",
            "root_cause_category",
            "recommended_action",
            "confidence",
            "risk",
            "explanation",
        ],
        "properties": {
            "diagnosis": {
                "type": "string",
                "maxLength": MAX_DIAGNOSIS,
                "description": "One or two sentences: what is wrong.",
            },
            "evidence": {
                "type": "array",
                "maxItems": MAX_EVIDENCE,
                "items": {"type": "string", "maxLength": MAX_EVIDENCE_LINE},
                "description": "Lines quoted from the logs, probes or metrics given.",
            },
            "root_cause_category": {"type": "string", "enum": list(CATEGORIES)},
            "recommended_action": {"type": "string", "enum": actions},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "risk": {"type": "string", "enum": list(RISKS)},
            "explanation": {"type": "string", "maxLength": MAX_EXPLANATION},
        },
    }


def validate(raw: Any, allowed_actions: Sequence[str], engine: str) -> AnalysisOutput:
    """``raw`` (a tool call's input, or the rule engine's dict) as an AnalysisOutput, or
    AnalysisInvalid saying what was wrong.  Never trusts the caller's types."""
    if not isinstance(raw, Mapping):
        raise AnalysisInvalid(f"expected an object, got {type(raw).__name__}")
    if len(repr(raw)) > MAX_ANSWER_BYTES * 2 or _size(raw) > MAX_ANSWER_BYTES:
        raise AnalysisInvalid(f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
    extra = sorted(set(raw) - set(tool_schema(allowed_actions)["properties"]))
    if extra:
        raise AnalysisInvalid(f"unexpected fields: {', '.join(map(str, extra))[:200]}")
    action = _text(raw, "recommended_action", 64)
    if action not in (*allowed_actions, ESCALATE, NO_ACTION):
        raise AnalysisInvalid(f"recommended_action {action!r} is not one this project allows")
    category = _text(raw, "root_cause_category", 64)
    if category not in CATEGORIES:
        raise AnalysisInvalid(f"root_cause_category {category!r} is not a known category")
    risk = _text(raw, "risk", 16)
    if risk not in RISKS:
        raise AnalysisInvalid(f"risk {risk!r} is not one of {', '.join(RISKS)}")
    confidence = raw.get("confidence")
    if isinstance(confidence, bool) or not isinstance(confidence, int | float):
        raise AnalysisInvalid("confidence must be a number")
    if not (math.isfinite(confidence) and 0.0 <= confidence <= 1.0):
        raise AnalysisInvalid(f"confidence {confidence!r} is not within 0..1")
    evidence = raw.get("evidence")
    if not isinstance(evidence, list) or len(evidence) > MAX_EVIDENCE:
        raise AnalysisInvalid(f"evidence must be a list of at most {MAX_EVIDENCE} lines")
    if not all(isinstance(e, str) and len(e) <= MAX_EVIDENCE_LINE for e in evidence):
        raise AnalysisInvalid(f"evidence lines must be text of at most {MAX_EVIDENCE_LINE}")
    if engine not in ENGINES:
        raise AnalysisInvalid(f"engine {engine!r} is not one of {', '.join(ENGINES)}")
    return AnalysisOutput(
        diagnosis=_text(raw, "diagnosis", MAX_DIAGNOSIS, required=True),
        evidence=tuple(evidence),
        root_cause_category=category,
        recommended_action=action,
        confidence=float(confidence),
        risk=risk,
        explanation=_text(raw, "explanation", MAX_EXPLANATION),
        engine=engine,
    )


def _text(raw: Mapping[str, Any], key: str, limit: int, *, required: bool = False) -> str:
    value = raw.get(key)
    if not isinstance(value, str):
        raise AnalysisInvalid(f"{key} must be text")
    if len(value) > limit:
        raise AnalysisInvalid(f"{key} is longer than {limit} characters")
    if required and not value.strip():
        raise AnalysisInvalid(f"{key} is empty")
    return value


def _size(raw: Mapping[str, Any]) -> int:
    try:
        return len(json.dumps(raw, default=str))
    except (TypeError, ValueError):  # a cycle, or something that is not JSON at all
        return MAX_ANSWER_BYTES + 1


_URL: Final = re.compile(r"(?i)\b(?:https?|ftp)://[^\s<>|\"')\]]+")
_PING: Final = re.compile(
    r"(?i)<!(channel|here|everyone|subteam\^[^>]*)>|@(channel|here|everyone)\b"
)


def sanitized(output: AnalysisOutput, link_hosts: Sequence[str] = ()) -> AnalysisOutput:
    """The analysis as people may read it: links dropped unless their host is in
    ``link_hosts`` (the model may have read them in a log: a phishing page, a tracker),
    and nothing that would ping a channel.  Applied before it is stored."""
    allowed = {h.lower() for h in link_hosts}

    def clean(text: str) -> str:
        def link(match: re.Match[str]) -> str:
            host = (urlsplit(match.group(0)).hostname or "").lower()
            return match.group(0) if host in allowed else "[link removed]"

        return _PING.sub(lambda m: f"(at){m.group(1) or m.group(2)}", _URL.sub(link, text))

    return replace(
        output,
        diagnosis=clean(output.diagnosis),
        evidence=tuple(clean(e) for e in output.evidence),
        explanation=clean(output.explanation),
    )
