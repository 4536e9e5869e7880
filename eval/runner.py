"""``python -m eval`` (``make eval``): how well the analysis engines name the root cause
and the action on the shipped incident scenarios.

Runs the rule engine on every scenario (always: it is instant and sets the exit code)
and Claude too with ``--engine claude`` or ``both`` when ``ANTHROPIC_API_KEY`` is set
(``ClaudeAdvisor``, with the model and base URL of ``bot.settings``), and prints, like
``bench``: a JSON line per scenario and a summary JSON line per engine to stdout, a
table per engine (count, category accuracy, action accuracy per expected category, then
overall) to stderr.  Exit code 0 when the rule engine names at least
``GOAL_CATEGORY_ACCURACY`` of the categories right.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from agents.analysis_schema import CATEGORIES, AnalysisOutput
from agents.rules_engine import analyze
from eval.scenarios import SCENARIO_DIR, Scenario, load_all

GOAL_CATEGORY_ACCURACY: Final = 0.8
CLAUDE_CONCURRENCY: Final = 4


@dataclass(frozen=True, slots=True)
class Outcome:
    scenario: Scenario
    engine: str
    output: AnalysisOutput | None  # None: the engine gave no analysis
    error: str | None
    latency_ms: float
    tokens: int = 0
    cost_usd: float = 0.0

    @property
    def category(self) -> str | None:
        return self.output.root_cause_category if self.output else None

    @property
    def action(self) -> str | None:
        return self.output.recommended_action if self.output else None

    @property
    def category_ok(self) -> bool:
        return self.category == self.scenario.expected_category

    @property
    def action_ok(self) -> bool:
        return self.action == self.scenario.expected_action

    def line(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.name,
            "engine": self.engine,
            "expected_category": self.scenario.expected_category,
            "category": self.category,
            "category_ok": self.category_ok,
            "expected_action": self.scenario.expected_action,
            "action": self.action,
            "action_ok": self.action_ok,
            "confidence": self.output.confidence if self.output else None,
            "latency_ms": round(self.latency_ms, 3),
            "tokens": self.tokens,
            "cost_usd": round(self.cost_usd, 6),
            "error": self.error,
        }


def run_rules(scenarios: Sequence[Scenario]) -> list[Outcome]:
    out = []
    for scenario in scenarios:
        started = time.perf_counter()
        output = analyze(scenario.context)
        elapsed = (time.perf_counter() - started) * 1000.0
        out.append(Outcome(scenario, "rules", output, None, elapsed))
    return out


async def run_claude(scenarios: Sequence[Scenario], settings: Any) -> list[Outcome]:
    """Claude's analysis of every scenario (a few at a time)."""
    from agents.claude_advisor import ClaudeAdvisor  # only here: eval runs without it
    from agents.clock import SystemClock

    advisor = ClaudeAdvisor(
        api_key=settings.anthropic_api_key,
        base_url=settings.anthropic_base_url,
        model=settings.claude_model,
        clock=SystemClock(),
        calls_per_minute=len(scenarios),  # the storm cap must not turn scenarios into rules
    )
    gate = asyncio.Semaphore(CLAUDE_CONCURRENCY)

    async def one(scenario: Scenario) -> Outcome:
        async with gate:
            started = time.perf_counter()
            try:
                result = await advisor.analyze(scenario.context)
            except Exception as exc:  # one failed call is one wrong answer, not the run
                elapsed = (time.perf_counter() - started) * 1000.0
                return Outcome(scenario, "claude", None, f"{type(exc).__name__}: {exc}", elapsed)
            elapsed = (time.perf_counter() - started) * 1000.0
            tokens = result.input_tokens + result.output_tokens
            return Outcome(
                scenario, "claude", result.output, result.error, elapsed, tokens, result.cost_usd
            )

    try:
        return list(await asyncio.gather(*(one(s) for s in scenarios)))
    finally:
        await advisor.aclose()


def summarise(outcomes: Sequence[Outcome], engine: str) -> dict[str, Any]:
    per_category: dict[str, dict[str, Any]] = {}
    for category in CATEGORIES:
        mine = [o for o in outcomes if o.scenario.expected_category == category]
        if mine:
            per_category[category] = {
                "count": len(mine),
                "category_accuracy": _share(o.category_ok for o in mine),
                "action_accuracy": _share(o.action_ok for o in mine),
            }
    category_accuracy = _share(o.category_ok for o in outcomes)
    return {
        "summary": True,
        "engine": engine,
        "scenarios": len(outcomes),
        "category_accuracy": category_accuracy,
        "action_accuracy": _share(o.action_ok for o in outcomes),
        "errors": sum(o.error is not None for o in outcomes),
        "tokens": sum(o.tokens for o in outcomes),
        "cost_usd": round(sum(o.cost_usd for o in outcomes), 6),
        "per_category": per_category,
        "goal_category_accuracy": GOAL_CATEGORY_ACCURACY,
        "goal_met": category_accuracy >= GOAL_CATEGORY_ACCURACY,
    }


def _share(flags: Any) -> float:
    values = list(flags)
    return round(sum(values) / len(values), 4) if values else 0.0


def table(summary: dict[str, Any], outcomes: Sequence[Outcome]) -> str:
    """The human view of one engine's summary, for stderr."""
    rows = [
        f"engine: {summary['engine']}",
        f"{'category':<26}{'count':>6}{'category':>10}{'action':>9}",
    ]
    for category, stats in summary["per_category"].items():
        rows.append(
            f"{category:<26}{stats['count']:>6}{stats['category_accuracy'] * 100:>9.0f}%"
            f"{stats['action_accuracy'] * 100:>8.0f}%"
        )
    rows.append(
        f"{'overall':<26}{summary['scenarios']:>6}{summary['category_accuracy'] * 100:>9.1f}%"
        f"{summary['action_accuracy'] * 100:>8.1f}%"
    )
    wrong = [o for o in outcomes if not (o.category_ok and o.action_ok)]
    for o in wrong:
        got = o.error or f"{o.category} / {o.action}"
        rows.append(
            f"  miss {o.scenario.name}: expected {o.scenario.expected_category} / "
            f"{o.scenario.expected_action}, got {got}"
        )
    return "\n".join(rows)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=("rules", "claude", "both"), default="rules")
    parser.add_argument("--scenarios", type=Path, default=SCENARIO_DIR,
                        help="a directory of scenario YAML files")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    scenarios = load_all(args.scenarios)
    results = {"rules": run_rules(scenarios)}  # always: it is instant and sets the exit code
    if args.engine in ("claude", "both"):
        from bot.settings import Settings

        settings = Settings.from_env()
        if settings.anthropic_api_key:
            results["claude"] = asyncio.run(run_claude(scenarios, settings))
        else:
            print("ANTHROPIC_API_KEY is not set: running the rule engine only", file=sys.stderr)
    summaries = {engine: summarise(outcomes, engine) for engine, outcomes in results.items()}
    lines = [o.line() for outcomes in results.values() for o in outcomes]
    lines += list(summaries.values())
    sys.stdout.write("".join(json.dumps(line) + "\n" for line in lines))
    sys.stdout.flush()
    for engine, summary in summaries.items():
        print(table(summary, results[engine]), file=sys.stderr)
    return 0 if summaries["rules"]["goal_met"] else 1
