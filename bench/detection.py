"""``python -m bench detection``: how long from a fault to the card in Slack.

A fleet of ``--projects`` healthy contract endpoints, one orch process (the real
Runtime, default settings: 10 s interval, 3 failures to call a project down, 1 s
rechecks) posting to a fake Slack in this process.  Once every project is healthy, the
driver breaks the /health of ``--faults`` random projects, one at a time at random
moments spread over ``--spread`` seconds, and notes when; the fake Slack notes when each
"<project> is down" card arrives.  Detection latency = card arrival - fault injection:
the wait for the project's next probe (0 to 10 s), the two confirming rechecks, the
project.status_changed event, the incident, the card through the paced Slack outbox.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import stack
from bench.backends import Lines, latency_figures, log
from bench.orch_fleet import Worker, fleet_and_slack, wait_for

GOAL_P50_S = 7.5
GOAL_P99_S = 12.5
CARD_TIMEOUT_S = 60.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--projects", type=int, help="fleet size (default 1000; quick 100)")
    parser.add_argument("--faults", type=int, help="projects broken (default 30; quick 6)")
    parser.add_argument(
        "--spread", type=float, help="seconds the faults are spread over (default 240; quick 48)"
    )
    parser.add_argument(
        "--backend", choices=("sqlite", "postgres+redis"), default="sqlite", help="orch's"
    )
    parser.add_argument("--seed", type=int, help="for the random faults")


def finish_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    args.projects = args.projects or (100 if args.quick else 1000)
    args.faults = args.faults or (6 if args.quick else 30)
    args.spread = args.spread or (48.0 if args.quick else 240.0)
    if args.faults > args.projects or min(args.projects, args.faults, args.spread) <= 0:
        parser.error("--projects, --faults, --spread must be positive, faults <= projects")


def budget(args: argparse.Namespace) -> float:
    return 240 + args.projects / 50 + args.spread + CARD_TIMEOUT_S


async def run(args: argparse.Namespace, lines: Lines) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="orch-bench-detect-"))
    try:
        if args.backend == "postgres+redis":
            async with stack.production("detection") as (database_url, redis_url):
                return await _measure(args, lines, workdir, database_url, redis_url)
        return await _measure(args, lines, workdir, None, None)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def _measure(
    args: argparse.Namespace,
    lines: Lines,
    workdir: Path,
    database_url: str | None,
    redis_url: str | None,
) -> dict[str, Any]:
    rng = random.Random(args.seed)
    async with fleet_and_slack(args.projects, workdir, budget(args)) as (
        fleet,
        slack,
        ports_file,
        ports,
    ):
        worker = Worker("r1")
        cmd = [f"--ports-file={ports_file}", f"--sqlite={workdir / 'orch.db'}"]
        cmd.append(f"--slack-url={slack.api_url}")
        if database_url:
            cmd += [f"--database-url={database_url}", f"--redis-url={redis_url}"]
        await worker.start(cmd)
        try:
            # Every project probed at least once, and one interval more so that none is
            # still "unknown" (a fault then would never be called down from healthy).
            await wait_for(lambda: worker.probes >= args.projects, "the first round", 120)
            await asyncio.sleep(10.0)
            victims = rng.sample(range(len(ports)), args.faults)
            # One fault in each slice of the spread, at a random moment of it: about one
            # every 8 s by default, under the five new incidents in 30 s from which orch
            # folds cards into a storm message (which down_cards also counts).
            step = args.spread / args.faults
            moments = [i * step + rng.uniform(0, step) for i in range(args.faults)]
            injected: dict[str, float] = {}
            start = time.monotonic()
            for index, moment in zip(victims, moments, strict=True):
                await asyncio.sleep(max(0.0, start + moment - time.monotonic()))
                injected[f"bench-{index:05d}"] = time.time()
                await fleet.fault([ports[index]])
            log(f"detection: {args.faults} faults injected; waiting for their cards")
            try:
                await wait_for(
                    lambda: set(injected) <= set(slack.down_cards()), "every card", CARD_TIMEOUT_S
                )
            except RuntimeError:
                missing = sorted(set(injected) - set(slack.down_cards()))
                texts = [c.params.get("text") for c in slack.calls if c.params.get("text")]
                log(f"detection: no card for {missing}; Slack got {texts}")
                raise
        finally:
            await worker.stop()
    cards = slack.down_cards()
    latencies = [cards[name][0] - at for name, at in injected.items()]
    extra = sorted(name for name, seen in cards.items() if name not in injected or len(seen) > 1)
    figures = latency_figures(latencies)
    for key, value in figures.items():
        lines.add(f"detection.fault_to_card_{key}", value, "s")
    # The two halves: probing (next probe, two rechecks) and announcing (event to card).
    downs = worker.downs
    to_status = [downs[n] - at for n, at in injected.items() if n in downs]
    to_card = [cards[n][0] - downs[n] for n in injected if n in downs]
    halves = {"status": latency_figures(to_status), "card": latency_figures(to_card)}
    for key, value in halves["status"].items():
        lines.add(f"detection.fault_to_status_changed_{key}", value, "s")
    for key, value in halves["card"].items():
        lines.add(f"detection.status_changed_to_card_{key}", value, "s")
    lines.add("detection.cards_unexpected", len(extra), "cards")
    lines.add("detection.goal.p50_at_most_7_5s", figures["p50"] <= GOAL_P50_S, "bool")
    lines.add("detection.goal.p99_at_most_12_5s", figures["p99"] <= GOAL_P99_S, "bool")
    return {"figures": figures, "latencies": sorted(latencies), "extra": extra, **halves}


def summary(result: dict[str, Any], args: argparse.Namespace) -> str:
    f = result["figures"]
    spread = ", ".join(f"{s:.1f}" for s in result["latencies"])
    extra = result["extra"]
    return (
        f"detection ({args.projects} projects, {args.faults} faults, {args.backend}): "
        f"fault -> card p50 {f['p50']:.2f} s, p99 {f['p99']:.2f} s, max {f['max']:.2f} s "
        f"(goals {GOAL_P50_S} / {GOAL_P99_S} s)\n"
        f"  fault -> project.status_changed p50 {result['status']['p50']:.2f} s, p99 "
        f"{result['status']['p99']:.2f} s; status_changed -> card p50 "
        f"{result['card']['p50']:.2f} s, p99 {result['card']['p99']:.2f} s\n"
        f"  each, sorted: {spread}\n"
        f"  unexpected or duplicate cards: {extra or 'none'}"
    )
