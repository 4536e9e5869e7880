"""The rule engine: an analysis without Claude (no key, Claude failed, the budget is
spent), in the same shape (``AnalysisOutput``, engine ``rules``).

``analyze(ctx)`` scores every rule of ``agents.rule_library`` against the context (log
lines, probe reasons, transitions, the incident's summary, metric summaries), picks the
best, quotes up to five lines of evidence (already redacted, redacted again, cut to
300 characters) and recommends an action only when the rule says it helps, the project
allows it and this incident has not already shown it does not (a restart that failed
twice is not recommended a third time; one that failed once loses to an untried
alternative).  Otherwise it escalates.  Nothing matching is category ``unknown`` with low
confidence: escalate when the project is failing, no action when it is only warning.

Text from a project is data here, never instructions: a log line saying "restart
billing" is matched against failure patterns like any other line and cannot add an
action the project does not allow (the output is checked by ``validate`` before it
leaves).  Deterministic, no I/O, well under a millisecond per context.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

from agents.analysis_context import AnalysisContext, MetricSummary
from agents.analysis_schema import (
    ESCALATE,
    MAX_DIAGNOSIS,
    MAX_EVIDENCE_LINE,
    MAX_EXPLANATION,
    NO_ACTION,
    AnalysisOutput,
    validate,
)
from agents.redact import redact
from agents.rule_library import (
    ACTION_RISK,
    NEEDS_RUNNING,
    RULES,
    MetricCondition,
    Pattern,
    Rule,
)

ENGINE: Final = "rules"
MIN_SCORE: Final = 2.0  # below this, no rule explains the incident: unknown
STRONG_SCORE: Final = 8.0  # a score this high earns a rule its full base confidence
MAX_QUOTES: Final = 5
MAX_FAILED: Final = 2  # failed attempts of an action in this incident before it is dropped
EXTRA_LINE: Final = 0.25  # each further distinct log line of a matched pattern (up to 4)
UNKNOWN_CONFIDENCE: Final = 0.2
FAILED_STATES: Final = frozenset({"failed"})
REFUSED_STATES: Final = frozenset({"denied"})

_TRIED: Final = re.compile(r"^(?P<action>[a-z_]+) by \S+: (?P<state>[a-z_]+)")
_DIGITS: Final = re.compile(r"\d+")
_ERROR_LEVELS: Final = frozenset({"error", "critical", "fatal", "crit", "err", "emerg", "alert"})


@dataclass(frozen=True, slots=True)
class _Item:
    """One line of evidence: what is matched, and how it is quoted."""

    source: str  # logs | probes
    match: str  # the text patterns are run on
    quote: str  # how it is shown
    recency: int  # higher is newer, within its source
    level: str = ""  # a log line's level


@dataclass(slots=True)
class _Score:
    rule: Rule
    index: int
    score: float = 0.0
    hits: list[tuple[Pattern, _Item]] = field(default_factory=list)
    metric_hits: list[tuple[MetricCondition, MetricSummary]] = field(default_factory=list)


def analyze(ctx: AnalysisContext) -> AnalysisOutput:
    items = _items(ctx)
    scores = _score(items, ctx.metrics)
    ranked = sorted(scores, key=lambda s: (-s.score, s.index))
    best, runner_up = ranked[0], ranked[1] if len(ranked) > 1 else None
    if best.score < MIN_SCORE:
        raw = _unknown(ctx, items, best)
    else:
        raw = _known(ctx, items, best, runner_up)
    return validate(raw, ctx.allowed_actions, ENGINE)


# --- evidence -------------------------------------------------------------------------


def _items(ctx: AnalysisContext) -> list[_Item]:
    out: list[_Item] = []
    for n, line in enumerate(ctx.all_log_lines()):
        quote = " ".join(part for part in (line.ts, line.level, line.message) if part)
        out.append(_Item("logs", line.message, quote, n, line.level.lower()))
    seen: set[str] = set()
    for n, probe in enumerate(ctx.probes):  # newest first: a repeated reason is quoted once,
        reason = str(probe.get("reason") or "")  # with its newest time
        if not reason or reason in seen:
            continue
        seen.add(reason)
        quote = f"probe {probe.get('ts', '')} {probe.get('level', '')}: {reason}"
        out.append(_Item("probes", reason, quote, len(ctx.probes) - n))
    for n, transition in enumerate(ctx.transitions):
        out.append(_Item("probes", transition, f"transition {transition}", n))
    summary = str((ctx.incident or {}).get("summary") or "")
    if summary:
        out.append(_Item("probes", summary, f"incident: {summary}", -1))
    return out


def _applies(pattern: Pattern, item: _Item) -> bool:
    return pattern.where in ("any", item.source) and bool(pattern.regex.search(item.match))


def _score(items: list[_Item], metrics: tuple[MetricSummary, ...]) -> list[_Score]:
    scores = [_Score(rule, n) for n, rule in enumerate(RULES)]
    # Each line counts for the rule(s) whose pattern on it weighs most.
    for item in items:
        best: list[tuple[_Score, Pattern]] = []
        top = 0.0
        for score in scores:
            weights = [p for p in score.rule.patterns if _applies(p, item)]
            if not weights:
                continue
            pattern = max(weights, key=lambda p: p.weight)
            if pattern.weight > top:
                top, best = pattern.weight, [(score, pattern)]
            elif pattern.weight == top:
                best.append((score, pattern))
        for score, pattern in best:
            score.hits.append((pattern, item))
    for score in scores:
        for condition in score.rule.metrics:
            for summary in metrics:
                if _metric_matches(condition, summary):
                    score.metric_hits.append((condition, summary))
                    break
        score.score = _points(score)
    causes = any(s.score >= MIN_SCORE for s in scores if not s.rule.symptom)
    for score in scores:
        if score.rule.symptom and causes:
            score.score *= 0.5  # a backlog behind a rate limit is a rate-limit problem
    return scores


def _points(score: _Score) -> float:
    rule = score.rule
    if rule.min_groups:
        groups = {p.group for p, _ in score.hits if p.group}
        if len(groups) < rule.min_groups:
            return 0.0
    patterns = {id(p): p for p, _ in score.hits}
    points = sum(p.weight for p in patterns.values())
    log_lines = {_DIGITS.sub("#", item.match) for _, item in score.hits if item.source == "logs"}
    extra = max(0, len(log_lines) - len(patterns))
    points += EXTRA_LINE * min(extra, 4)
    points += sum(condition.weight for condition, _ in score.metric_hits)
    return points


def _metric_matches(condition: MetricCondition, m: MetricSummary) -> bool:
    if not condition.name.search(m.metric):
        return False
    if condition.rising and m.trend != "rising":
        return False
    if condition.beyond_threshold and (m.threshold is None or m.crossed_at is None):
        return False
    return condition.at_least is None or m.high >= condition.at_least


def _describe_metric(m: MetricSummary) -> str:
    text = f"{m.metric}: {m.first:g} -> {m.last:g} over {m.samples} samples ({m.trend})"
    if m.threshold is not None:
        text += f", warn {m.threshold:g}"
        if m.crossed_at:
            text += f", beyond since {m.crossed_at}"
    return text


def _cut(text: str) -> str:
    text = redact(text).replace("\n", " ").strip()
    return text if len(text) <= MAX_EVIDENCE_LINE else text[: MAX_EVIDENCE_LINE - 1] + "…"


def _quotes(candidates: list[str]) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for text in candidates:
        key = _DIGITS.sub("#", text)
        if key in seen:
            continue
        seen.add(key)
        out.append(_cut(text))
        if len(out) == MAX_QUOTES:
            break
    return out


def _evidence(score: _Score) -> list[str]:
    by_pattern: dict[int, list[_Item]] = {}
    weights: dict[int, float] = {}
    for pattern, item in score.hits:
        by_pattern.setdefault(id(pattern), []).append(item)
        weights[id(pattern)] = pattern.weight

    def newest(items: list[_Item]) -> _Item:
        logs = [i for i in items if i.source == "logs"]
        return max(logs or items, key=lambda i: i.recency)

    first = [newest(by_pattern[k]).quote for k in sorted(by_pattern, key=lambda k: -weights[k])]
    metrics = [_describe_metric(m) for _, m in score.metric_hits]
    probes = [i.quote for _, i in score.hits if i.source == "probes"][:1]
    rest = [i.quote for _, i in sorted(score.hits, key=lambda h: -h[1].recency)]
    return _quotes([*first[:3], *metrics, *probes, *first[3:], *rest])


# --- the recommendation ---------------------------------------------------------------


def _tried(actions: tuple[str, ...]) -> tuple[Counter[str], set[str]]:
    """(failed attempts per action, actions a person denied) in this incident."""
    failed: Counter[str] = Counter()
    denied: set[str] = set()
    for line in actions:
        match = _TRIED.match(line)
        if match is None:
            continue
        if match["state"] in FAILED_STATES:
            failed[match["action"]] += 1
        elif match["state"] in REFUSED_STATES:
            denied.add(match["action"])
    return failed, denied


def _recommend(rule: Rule, ctx: AnalysisContext, items: list[_Item]) -> tuple[str, list[str], int]:
    """(action, why, failed attempts of that action so far)."""
    texts = [i.match for i in items] + [m.metric for m in ctx.metrics]
    candidates = list(rule.actions)
    notes: list[str] = []
    for hint in rule.hints:
        if not any(hint.regex.search(t) for t in texts):
            continue
        if hint.action == ESCALATE:
            return (
                ESCALATE,
                ["The evidence points outside this service: no action of ours helps."],
                0,
            )
        if hint.action in candidates:
            candidates.remove(hint.action)
        candidates.insert(0, hint.action)
    if not candidates:
        return ESCALATE, ["No project action fixes this: a person must."], 0
    failed, denied = _tried(ctx.actions)
    chosen, value = None, 0.0
    for action in candidates:
        if action not in ctx.allowed_actions:
            notes.append(f"{action} would help, but this project does not allow it.")
        elif action in denied:
            notes.append(f"{action} was denied for this incident.")
        elif action in NEEDS_RUNNING and not _answering(ctx):
            notes.append(f"{action} needs a running process, and this one does not answer.")
        elif failed[action] >= MAX_FAILED:
            notes.append(f"{action} already failed {failed[action]} times for this incident.")
        elif (v := 1.0 - 0.5 * failed[action]) > value:
            chosen, value = action, v
            if failed[action]:
                notes.append(f"{action} already failed once for this incident.")
    if chosen is None:
        return ESCALATE, notes, 0
    return chosen, notes, failed[chosen]


def _answering(ctx: AnalysisContext) -> bool:
    """Whether the newest probe got an HTTP answer (no probes: assume it does)."""
    return not ctx.probes or ctx.probes[0].get("http_status") is not None


# --- the answer -----------------------------------------------------------------------


def _confidence(rule: Rule, score: float, runner_up: float, failures: int) -> float:
    strength = min(1.0, (score - MIN_SCORE) / (STRONG_SCORE - MIN_SCORE))
    confidence = rule.base_confidence * (0.55 + 0.45 * strength)
    if runner_up >= 0.75 * score:
        confidence *= 0.8
    confidence *= 0.8**failures
    return round(min(0.95, max(0.05, confidence)), 2)


def _signals(score: _Score) -> str:
    logs = len({id(i) for _, i in score.hits if i.source == "logs"})
    probes = len({id(i) for _, i in score.hits if i.source == "probes"})
    parts = []
    if logs:
        parts.append(f"{logs} log line{'s' * (logs != 1)}")
    if probes:
        parts.append(
            f"{probes} probe reason{'s' * (probes != 1)} or transition{'s' * (probes != 1)}"
        )
    parts += [f"{m.metric} ({c.describe})" for c, m in score.metric_hits]
    return ", ".join(parts) or "nothing"


def _known(
    ctx: AnalysisContext, items: list[_Item], best: _Score, runner_up: _Score | None
) -> dict[str, Any]:
    rule = best.rule
    action, notes, failures = _recommend(rule, ctx, items)
    second = runner_up.score if runner_up is not None else 0.0
    explanation = [rule.explanation, f"Matched: {_signals(best)} (score {best.score:.1f})."]
    if runner_up is not None and second >= MIN_SCORE:
        explanation.append(f"Also possible: {runner_up.rule.category} (score {second:.1f}).")
    explanation += notes
    if action == ESCALATE:
        risk = rule.risk
    else:
        risk = ACTION_RISK.get(action, "medium")
        explanation.append(f"Recommended: {action} (needs a person's approval).")
    evidence = _evidence(best)
    diagnosis = f"{ctx.project}: {rule.diagnosis}"
    if evidence:
        sign = evidence[0] if len(evidence[0]) <= 200 else evidence[0][:199] + "…"
        diagnosis += f' Strongest sign: "{sign}"'
    return {
        "diagnosis": diagnosis[:MAX_DIAGNOSIS],
        "evidence": evidence,
        "root_cause_category": rule.category,
        "recommended_action": action,
        "confidence": _confidence(rule, best.score, second, failures),
        "risk": risk,
        "explanation": " ".join(explanation)[:MAX_EXPLANATION],
    }


def _failing(ctx: AnalysisContext) -> bool:
    latest = ctx.probes[0].get("level") if ctx.probes else None
    severity = (ctx.incident or {}).get("severity")
    return latest == "fail" or severity == "critical"


def _unknown(ctx: AnalysisContext, items: list[_Item], best: _Score) -> dict[str, Any]:
    failing = _failing(ctx)
    errors = [i.quote for i in reversed(items) if i.level in _ERROR_LEVELS]
    probes = [i.quote for i in items if i.source == "probes"]
    evidence = _quotes([*probes[-1:], *errors])
    what = (
        f"{len(ctx.all_log_lines())} log lines, {len(ctx.probes)} probes and "
        f"{len(ctx.metrics)} metrics read"
    )
    closest = (
        f"the closest, {best.rule.category}, scored {best.score:.1f} of the {MIN_SCORE:g} needed"
        if best.score > 0
        else "no pattern matched at all"
    )
    explanation = f"No rule of the library explains this incident ({what}; {closest}). " + (
        "The project is failing: a person should look."
        if failing
        else "Nothing is failing: no action is needed now."
    )
    return {
        "diagnosis": f"{ctx.project}: no known failure pattern matches the evidence."[
            :MAX_DIAGNOSIS
        ],
        "evidence": evidence,
        "root_cause_category": "unknown",
        "recommended_action": ESCALATE if failing else NO_ACTION,
        "confidence": UNKNOWN_CONFIDENCE,
        "risk": "medium" if failing else "low",
        "explanation": explanation[:MAX_EXPLANATION],
    }
