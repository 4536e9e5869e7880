"""Incident scenarios (``eval/scenarios/*.yml``) and the AnalysisContext each becomes.

A scenario is what orch would have gathered about one real-looking incident, written as
the service would have produced it, plus what a good on-call engineer would conclude::

    service: billing-api             # the project's name
    kind: contract                   # contract | http | prometheus
    allowed_actions: [restart]       # the project's allowed actions
    at: "2026-03-02T10:05:00Z"       # when the analysis runs (the newest sample)
    incident: {condition: down, severity: critical, summary: "..."}
    probes:                          # newest first
      - {level: fail, http_status: 503, latency_ms: 12.0, reason: "GET /health: ..."}
    transitions: ["10:03:31 healthy -> down: ..."]
    metrics:                         # a threshold as in projects.yml, values oldest first,
      error_rate: {warn: 0.05, values: [0.0, 0.9, 1.0]}   # one a minute up to `at`
    logs: |                          # /logs entries, one a line: <ts> <level> <message>
      2026-03-02T10:03:29.990Z ERROR Exception on /v1/invoices [GET]
    actions: ["restart by autofix: failed (answer accepted): ..."]
    expected: {category: database_unavailable, action: escalate_to_human}

The context is built the way ``agents.analysis_context.gather_context`` builds it: every
text redacted, log lines split into the newest 25 and older error lines within the same
budget, metrics summarised by ``summarise`` (only metrics with a threshold, as only
those are in a project's config).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import yaml

from agents.analysis_context import (
    ERROR_LINES,
    LOG_TAIL,
    PROBES,
    TRANSITIONS,
    AnalysisContext,
    LogLine,
    MetricSummary,
    _dedupe,
    _is_error,
    _line,
    _within_budget,
    summarise,
)
from agents.analysis_schema import CATEGORIES, ESCALATE, NO_ACTION
from agents.redact import redact
from storage.base import MetricSample

SCENARIO_DIR: Final = Path(__file__).resolve().parent / "scenarios"
KINDS: Final = ("contract", "http", "prometheus")
SAMPLE_EVERY: Final = timedelta(minutes=1)
PROBE_EVERY: Final = timedelta(seconds=10)
DEFAULT_AT: Final = "2026-03-02T12:00:00Z"


class ScenarioError(ValueError):
    """A scenario file that is not a scenario (the message names the file)."""


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str  # the file's stem
    path: Path
    expected_category: str
    expected_action: str
    context: AnalysisContext


def load_all(directory: Path = SCENARIO_DIR) -> list[Scenario]:
    paths = sorted(directory.glob("*.yml"))
    if not paths:
        raise ScenarioError(f"no scenarios in {directory}")
    return [load(path) for path in paths]


def load(path: Path) -> Scenario:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(doc, Mapping):
            raise ScenarioError("not a mapping")
        return from_dict(path.stem, doc, path)
    except (yaml.YAMLError, ScenarioError, KeyError, TypeError, ValueError) as exc:
        raise ScenarioError(f"{path.name}: {exc}") from exc


def from_dict(name: str, doc: Mapping[str, Any], path: Path | None = None) -> Scenario:
    expected = doc["expected"]
    category, action = str(expected["category"]), str(expected["action"])
    allowed = tuple(str(a) for a in doc.get("allowed_actions") or ())
    if category not in CATEGORIES:
        raise ScenarioError(f"expected category {category!r} is not one of {CATEGORIES}")
    if action not in (*allowed, ESCALATE, NO_ACTION):
        raise ScenarioError(f"expected action {action!r} is not allowed by the scenario")
    return Scenario(name, path or Path(f"{name}.yml"), category, action, context(doc))


def context(doc: Mapping[str, Any]) -> AnalysisContext:
    kind = str(doc.get("kind", "contract"))
    if kind not in KINDS:
        raise ScenarioError(f"kind {kind!r} is not one of {KINDS}")
    at = _when(str(doc.get("at", DEFAULT_AT)))
    logs, errors = _logs(str(doc.get("logs") or ""))
    return AnalysisContext(
        project=str(doc["service"]),
        kind=kind,
        allowed_actions=tuple(str(a) for a in doc.get("allowed_actions") or ()),
        incident=_incident(doc.get("incident"), at),
        probes=tuple(_probes(doc.get("probes") or [], at)),
        transitions=tuple(redact(str(t)) for t in (doc.get("transitions") or [])[-TRANSITIONS:]),
        metrics=tuple(_metrics(str(doc["service"]), doc.get("metrics") or {}, at)),
        logs=tuple(logs),
        error_lines=tuple(errors),
        actions=tuple(redact(str(a))[:300] for a in doc.get("actions") or ()),
        similar=tuple(redact(str(s))[:200] for s in doc.get("similar") or ()),
        notes=tuple(str(n) for n in doc.get("notes") or ()),
    )


def _when(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _incident(raw: Any, at: datetime) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ScenarioError("incident must be a mapping")
    return {
        "id": str(raw.get("id", "inc-eval")),
        "condition": str(raw["condition"]),
        "severity": str(raw.get("severity", "critical")),
        "summary": redact(str(raw.get("summary", ""))),
        "opened_at": str(raw.get("opened_at", (at - timedelta(minutes=2)).isoformat())),
    }


def _probes(raw: list[Any], at: datetime) -> list[dict[str, Any]]:
    out = []
    for n, probe in enumerate(raw[:PROBES]):
        if not isinstance(probe, Mapping):
            raise ScenarioError("a probe must be a mapping")
        ts = probe.get("ts") or (at - n * PROBE_EVERY).isoformat(timespec="seconds")
        latency = probe.get("latency_ms")
        out.append(
            {
                "ts": str(ts),
                "level": str(probe["level"]),
                "reason": redact(str(probe.get("reason") or ""))[:200],
                "http_status": probe.get("http_status"),
                "latency_ms": round(float(latency), 1) if latency is not None else 0.0,
            }
        )
    return out


def _metrics(project: str, raw: Any, at: datetime) -> list[MetricSummary]:
    if not isinstance(raw, Mapping):
        raise ScenarioError("metrics must be a mapping of name to {warn, crit, values}")
    out = []
    for metric in sorted(raw):
        spec = raw[metric]
        values = [float(v) for v in spec["values"]]
        warn, crit = spec.get("warn"), spec.get("crit")
        if warn is None and crit is None:
            continue  # no threshold in the config: orch does not gather it
        n = len(values)
        series = [
            MetricSample(project, at - (n - 1 - i) * SAMPLE_EVERY, metric, v)
            for i, v in enumerate(values)
        ]
        direction = str(spec.get("direction", "above"))
        summary = summarise(metric, series, float(warn) if warn is not None else None, direction)
        if summary is not None:
            out.append(summary)
    return out


def _logs(text: str) -> tuple[list[LogLine], list[LogLine]]:
    """(the newest lines, older error lines), as ``analysis_context._logs`` keeps them."""
    entries = []
    for raw in text.splitlines():
        if not raw.strip():
            continue
        parts = raw.split(" ", 2)
        if len(parts) < 3:
            raise ScenarioError(f"a log line is '<ts> <level> <message>', got {raw!r}")
        ts, level, message = parts
        entries.append({"ts": ts, "level": level.lower(), "message": message})
    lines = [_line(e) for e in entries]
    tail = lines[-LOG_TAIL:]
    older = lines[:-LOG_TAIL] if len(lines) > LOG_TAIL else []
    errors = _dedupe([line for line in older if _is_error(line)])[-ERROR_LINES:]
    return _within_budget(tail, errors)
