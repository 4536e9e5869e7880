"""``python -m bench replicas``: three orch replicas on PostgreSQL + Redis share a fleet;
one is killed with SIGKILL.

Measured: how the leases spread the fleet (each replica should hold a third, ±10 %);
after ``kill -9`` of one replica, how long until each of its projects is probed again by
a survivor (the fleet notes every /health request: the goal is within two lease
periods); and that the handover neither repeats a card nor an action: a few of the
victim's projects are broken before the kill, each must have exactly one "is down" card
at the fake Slack when the bench ends.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import stack
from bench.backends import Lines, latency_figures, log
from bench.orch_fleet import Worker, fleet_and_slack, wait_for

REPLICAS = 3
SHARE_TOLERANCE = 0.10
INTERVAL_S = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--projects", type=int, help="fleet size (default 5000; quick 150)")
    parser.add_argument("--ttl", type=float, help="lease period, s (default 15, orch's; quick 5)")
    parser.add_argument(
        "--faults", type=int, help="victim's projects broken before the kill (default 4; quick 3)"
    )


def finish_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    args.projects = args.projects or (150 if args.quick else 5000)
    args.ttl = args.ttl or (5.0 if args.quick else 15.0)
    # Four: under the five new incidents in 30 s from which cards are folded into one
    # storm message, so each project gets a card of its own to count.
    args.faults = args.faults or (3 if args.quick else 4)
    if args.projects < REPLICAS * args.faults or args.ttl <= 0:
        parser.error("--projects must be at least 3 x --faults, --ttl positive")


def budget(args: argparse.Namespace) -> float:
    return 400 + args.projects / 25 + 12 * args.ttl


async def run(args: argparse.Namespace, lines: Lines) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="orch-bench-replicas-"))
    try:
        async with stack.production("replicas") as (database_url, redis_url):
            return await _measure(args, lines, workdir, database_url, redis_url)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _balanced(workers: list[Worker], projects: int) -> bool:
    third = projects / REPLICAS
    return sum(w.held for w in workers) == projects and all(
        abs(w.held - third) <= SHARE_TOLERANCE * third for w in workers
    )


async def _measure(
    args: argparse.Namespace, lines: Lines, workdir: Path, database_url: str, redis_url: str
) -> dict[str, Any]:
    async with fleet_and_slack(args.projects, workdir, budget(args), REPLICAS) as (
        fleet,
        slack,
        ports_file,
        ports,
    ):
        workers = [Worker(f"r{i + 1}") for i in range(REPLICAS)]
        try:
            for worker in workers:
                await worker.start(
                    [
                        f"--ports-file={ports_file}",
                        f"--sqlite={workdir / 'unused.db'}",
                        f"--slack-url={slack.api_url}",
                        f"--database-url={database_url}",
                        f"--redis-url={redis_url}",
                        f"--lease-ttl={args.ttl}",
                        "--actions",  # broken projects get restarted: count /control calls
                    ]
                )
            # Balanced, and no change in the sets for a whole lease period.
            spread_s = await wait_for(
                lambda: (
                    _balanced(workers, args.projects)
                    and time.time() - max(w.changed_at for w in workers) > args.ttl
                ),
                "a balanced spread",
                30 * args.ttl + 120,
            )
            shares = [w.held / args.projects for w in workers]
            log(f"replicas: held {[w.held for w in workers]} after {spread_s:.0f} s")
            # Every project healthy before the faults (a project still "unknown" is never
            # announced down by its first failures).
            await wait_for(
                lambda: sum(w.probes for w in workers) >= 2 * args.projects, "two rounds", 120
            )
            victim, survivors = workers[0], workers[1:]
            owned = sorted(victim.names)
            broken = owned[:: max(1, len(owned) // args.faults)][: args.faults]
            await fleet.fault([ports[int(name[6:])] for name in broken])
            try:
                await wait_for(
                    lambda: set(broken) <= set(slack.down_cards()), "the victim's cards", 120
                )
            except RuntimeError:
                missing = sorted(set(broken) - set(slack.down_cards()))
                texts = [c.params.get("text") for c in slack.calls if c.params.get("text")]
                log(f"replicas: no card for {missing}; Slack got {texts[:30]}")
                raise
            killed_at = time.time()
            victim.kill()
            log(f"replicas: killed {victim.replica_id} holding {len(owned)} projects")
            watched = {ports[int(name[6:])] for name in owned}
            first_seen: dict[int, float] = {}

            async def repolled() -> bool:
                for port, at in (await fleet.seen()).items():
                    if port in watched and at > killed_at and port not in first_seen:
                        first_seen[port] = at
                return len(first_seen) == len(watched)

            deadline = time.monotonic() + 6 * args.ttl + 2 * INTERVAL_S
            while not await repolled():
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            # Time for any duplicate card to show up: two more intervals.
            await asyncio.sleep(2 * INTERVAL_S)
            held_after = [w.held for w in survivors]
            controls = await fleet.controls()
        finally:
            for worker in workers:
                await worker.stop()
    delays = [at - killed_at for at in first_seen.values()]
    figures = latency_figures(delays)
    cards = slack.down_cards()
    duplicates = {name: len(cards.get(name, [])) for name in broken if len(cards[name]) != 1}
    unexpected = sorted(set(cards) - set(broken))
    missing = len(watched) - len(first_seen)
    # Actions: every /control call that reached the fleet, by idempotency key (one key per
    # action orch decided).  A key seen twice is one action sent twice.
    by_port = {port: f"bench-{i:05d}" for i, port in enumerate(ports)}
    keys = Counter(key for _port, key, _action in controls)
    actions_duplicated = sum(1 for n in keys.values() if n > 1)
    acted_on = {by_port.get(port, str(port)) for port, _key, _action in controls}
    actions_unexpected = sorted(acted_on - set(broken))
    for i, share in enumerate(shares):
        lines.add(f"replicas.r{i + 1}.share", share, "fraction")
    lines.add("replicas.spread_s", spread_s, "s")
    for key, value in figures.items():
        lines.add(f"replicas.repoll_after_kill_{key}", value, "s")
    lines.add("replicas.repoll_missing", missing, "projects")
    lines.add("replicas.cards_duplicated", len(duplicates), "projects")
    lines.add("replicas.cards_unexpected", len(unexpected), "projects")
    third = 1 / REPLICAS
    balanced = all(abs(s - third) <= SHARE_TOLERANCE * third for s in shares)
    lines.add("replicas.goal.each_a_third_within_10pct", balanced, "bool")
    within = missing == 0 and figures["max"] <= 2 * args.ttl
    lines.add("replicas.goal.repolled_within_two_lease_periods", within, "bool")
    lines.add("replicas.control_calls", len(controls), "calls")
    lines.add("replicas.actions", len(keys), "actions")
    lines.add("replicas.actions_duplicated", actions_duplicated, "actions")
    lines.add("replicas.actions_unexpected", len(actions_unexpected), "projects")
    lines.add("replicas.goal.no_duplicate_card", not duplicates and not unexpected, "bool")
    lines.add(
        "replicas.goal.no_duplicate_action",
        actions_duplicated == 0 and not actions_unexpected and len(keys) > 0,
        "bool",
    )
    return {
        "shares": shares,
        "spread_s": spread_s,
        "figures": figures,
        "missing": missing,
        "victim_held": len(owned),
        "held_after": held_after,
        "duplicates": duplicates,
        "unexpected": unexpected,
        "control_calls": len(controls),
        "actions": len(keys),
        "actions_duplicated": actions_duplicated,
        "actions_unexpected": actions_unexpected,
    }


def summary(result: dict[str, Any], args: argparse.Namespace) -> str:
    f = result["figures"]
    shares = " / ".join(f"{s:.1%}" for s in result["shares"])
    return (
        f"replicas ({args.projects} projects, lease {args.ttl:g} s): shares {shares} "
        f"(settled after {result['spread_s']:.0f} s)\n"
        f"  after kill -9 of a replica holding {result['victim_held']}: re-polled p50 "
        f"{f['p50']:.1f} s, max {f['max']:.1f} s (goal < {2 * args.ttl:g} s), "
        f"{result['missing']} never; survivors now hold {result['held_after']}\n"
        f"  duplicate cards: {result['duplicates'] or 'none'}; "
        f"unexpected: {result['unexpected'] or 'none'}\n"
        f"  actions: {result['actions']} ({result['control_calls']} /control calls), "
        f"sent twice: {result['actions_duplicated']}, "
        f"on unbroken projects: {result['actions_unexpected'] or 'none'}"
    )
