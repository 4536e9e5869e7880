"""Publish -> handler latency of the Redis Streams bus at a paced rate.

``python -m bench bus``.  The real ``RedisStreamsBus`` with the real ``PostgresStore``
(each read batch's successes are claimed in ``consumed_events`` before they are
acknowledged), ``--roles`` consumer roles (default: a run with 1, then one with 3), all in
this process, as in one replica: the publishing loop (the outbox relay's place) and the
readers share one event loop.  Events are published at ``--rate`` per second for
``--duration`` seconds after ``--warmup`` seconds that do not count.  An event's latency
is from just before ``publish`` (so it includes encoding the event and the XADD) to the
start of its handler, per role.

The baseline is bare redis-py on the same server and the same kind of loop: XADD of the
same fields, one consumer group per role, XREADGROUP (COUNT 100, BLOCK 1 s) with the
acknowledgements of the previous batch pipelined in front, latency taken when the entry
is read.  Each run uses its own stream (``orch_bench_bus_<random>``) and schema, both
removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from redis.utils import HIREDIS_AVAILABLE

from agents.events import METRIC_ANOMALY, Event
from agents.redis_bus import RedisStreamsBus
from agents.redis_support import entry_fields
from bench.backends import (
    DATABASE_URL,
    REDIS_URL,
    Lines,
    check_stop,
    finish,
    latency_figures,
    log,
    median,
    new_name,
    scratch_schema,
)
from bench.proc import cpu_seconds
from storage.postgres import PostgresStore
from storage.postgres_connect import quote_ident

GOAL_P99_S = 0.005
DRAIN_TIMEOUT_S = 60.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s (default 1,000)")
    parser.add_argument("--duration", type=float, help="measured seconds per run (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds (1)")
    parser.add_argument(
        "--roles",
        type=int,
        nargs="+",
        help="consumer roles per run, one run per value (default: 1 3)",
    )
    parser.add_argument("--only", choices=("bus", "baseline"), help="one side only")
    parser.add_argument("--repeat", type=int, help="rounds, alternating sides (default 3)")


def finish_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.duration is None:
        args.duration = 2.0 if args.quick else 5.0
    if args.roles is None:
        args.roles = [1, 3]
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if min(args.rate, args.duration, args.repeat, *args.roles) <= 0 or args.warmup < 0:
        parser.error("--rate, --duration and --roles must be positive, --warmup not negative")


def budget(args: argparse.Namespace) -> float:
    per_run = args.warmup + args.duration + DRAIN_TIMEOUT_S + 30
    return 60.0 + 2 * len(args.roles) * args.repeat * per_run


def make_event(i: int) -> Event:
    """An event of a realistic size (about 600 bytes as JSON)."""
    return Event(
        METRIC_ANOMALY,
        datetime.now(UTC),
        "metrics",
        {
            "metric": "error_rate",
            "value": 7.25,
            "threshold": 5.0,
            "baseline": {"mean": 0.8, "stddev": 0.3, "samples": 360},
            "window_s": 300,
            "seq": i,
            "detail": "error rate above threshold for 3 consecutive probes; " * 5,
        },
        project=f"project-{i % 1000:04d}",
    )


def role_names(tag: str, roles: int) -> list[str]:
    return [f"bench-{tag}-{role}" for role in range(roles)]


class Clocked:
    """Publish times by event id, and latencies of the events published after warm-up."""

    def __init__(self, roles: int) -> None:
        self.sent: dict[str, float] = {}
        self.measured: set[str] = set()
        self.latencies: list[float] = []
        self.handled = [0] * roles
        self.target: int | None = None
        self.all_handled = asyncio.Event()

    def handled_at(self, role: int, event_id: str, now: float) -> None:
        self.handled[role] += 1
        if event_id in self.measured:
            self.latencies.append(now - self.sent[event_id])
        self._check()

    def expect(self, total: int) -> None:
        """``all_handled`` is set once every role has handled ``total`` events."""
        self.target = total
        self._check()

    def _check(self) -> None:
        if self.target is not None and min(self.handled) >= self.target:
            self.all_handled.set()


async def paced(
    publish: Callable[[int], Awaitable[None]], rate: float, warmup: float, duration: float
) -> dict[str, float]:
    """Call ``publish(i)`` at ``rate`` per second, on schedule (never catching up in a
    burst when late: a late call goes at once, the next one on its own time)."""
    total = int(rate * (warmup + duration))
    first = int(rate * warmup)
    publish_times: list[float] = []
    t0 = w0 = time.perf_counter()
    cpu0 = cpu_seconds()
    for i in range(total):
        check_stop()
        if i == first:
            w0, cpu0 = time.perf_counter(), cpu_seconds()
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        start = time.perf_counter()
        await publish(i)
        if i >= first:
            publish_times.append(time.perf_counter() - start)
    elapsed = time.perf_counter() - w0
    return {
        "achieved_per_s": (total - first) / elapsed,
        "publish_p50_s": latency_figures(publish_times)["p50"],
        "publish_p99_s": latency_figures(publish_times)["p99"],
        "cpu_share": (cpu_seconds() - cpu0) / elapsed,
    }


async def bus_run(
    store: PostgresStore, names: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    stream, roles = new_name("bus"), len(names)
    bus = RedisStreamsBus(REDIS_URL, store, stream=stream)
    clock = Clocked(roles)
    first = int(args.rate * args.warmup)

    def handler_for(role: int) -> Callable[[Event], Awaitable[None]]:
        async def handle(event: Event) -> None:
            clock.handled_at(role, event.id, time.perf_counter())

        return handle

    for role, name in enumerate(names):
        bus.subscribe(name, handler_for(role))

    async def publish(i: int) -> None:
        event = make_event(i)
        clock.sent[event.id] = time.perf_counter()
        if i >= first:
            clock.measured.add(event.id)
        await bus.publish(event)

    try:
        await bus.start()
        pace = await paced(publish, args.rate, args.warmup, args.duration)
        await asyncio.wait_for(bus.drain(), DRAIN_TIMEOUT_S)
        check_stop()
        stats = bus.stats()
    finally:
        try:
            await finish(bus.stop())
        finally:
            await finish(delete_keys(stream, f"{stream}:dead"))
    return {**pace, **_latencies(clock, roles, len(clock.sent)), "reader_stats": stats}


async def baseline_run(names: list[str], args: argparse.Namespace) -> dict[str, Any]:
    stream, roles = new_name("bus"), len(names)
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    clock = Clocked(roles)
    first = int(args.rate * args.warmup)
    stop = asyncio.Event()

    async def reader(role: int) -> None:
        group, acks = names[role], []
        while not stop.is_set():
            async with client.pipeline(transaction=False) as pipe:
                if acks:
                    pipe.xack(stream, group, *acks)
                pipe.xreadgroup(group, "c", {stream: ">"}, count=100, block=200)
                reply = (await pipe.execute())[-1]
            now = time.perf_counter()
            acks = []
            for _stream, entries in reply or ():
                for entry_id, fields in entries:
                    clock.handled_at(role, fields["id"], now)
                    acks.append(entry_id)

    async def publish(i: int) -> None:
        event = make_event(i)
        clock.sent[event.id] = time.perf_counter()
        if i >= first:
            clock.measured.add(event.id)
        await client.xadd(stream, entry_fields(event), maxlen=100_000, approximate=True)

    tasks: list[asyncio.Task[None]] = []
    try:
        for name in names:
            await client.xgroup_create(stream, name, id="$", mkstream=True)
        tasks = [asyncio.create_task(reader(r)) for r in range(roles)]
        pace = await paced(publish, args.rate, args.warmup, args.duration)
        clock.expect(len(clock.sent))
        with contextlib.suppress(TimeoutError):  # the summary says what was missing
            await asyncio.wait_for(clock.all_handled.wait(), DRAIN_TIMEOUT_S)
        check_stop()
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5.0)
        for task in tasks:
            task.cancel()
        await finish(client.aclose())
        await finish(delete_keys(stream))
    return {**pace, **_latencies(clock, roles, len(clock.sent))}


def _latencies(clock: Clocked, roles: int, published: int) -> dict[str, Any]:
    figures = latency_figures(clock.latencies)
    return {
        "latency_p50_s": figures["p50"],
        "latency_p99_s": figures["p99"],
        "latency_max_s": figures["max"],
        "measured": len(clock.latencies),
        "expected": len(clock.measured) * roles,
        "published": published,
        "handled_min": min(clock.handled),
    }


async def delete_keys(*keys: str) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.delete(*keys)
    finally:
        await client.aclose()


MEDIANS = (
    "latency_p50_s",
    "latency_p99_s",
    "latency_max_s",
    "achieved_per_s",
    "publish_p50_s",
    "publish_p99_s",
    "cpu_share",
)
SUMS = ("measured", "expected", "published", "handled_min", "claims")


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of one side and role count: medians of the figures, sums of the counts."""
    out: dict[str, Any] = {key: median([r[key] for r in runs]) for key in MEDIANS}
    out.update({key: sum(r[key] for r in runs) for key in SUMS if key in runs[0]})
    out["p99_per_round_s"] = [r["latency_p99_s"] for r in runs]
    if "reader_stats" in runs[0]:
        out["readers"] = {
            counter: sum(stats[counter] for r in runs for stats in r["reader_stats"].values())
            for counter in ("delivered", "duplicates", "failures", "dead_letters")
        }
    return out


async def run(args: argparse.Namespace, lines: Lines) -> dict[str, Any]:
    # redis-py parses replies in Python unless hiredis is installed: it moves these figures.
    lines.params["hiredis"] = HIREDIS_AVAILABLE
    runs: dict[str, list[dict[str, Any]]] = {}
    async with scratch_schema("bus") as schema:
        store = PostgresStore(DATABASE_URL, schema=schema)
        await store.open()
        try:
            for round_ in range(args.repeat):
                for roles in args.roles:
                    for side in ("bus", "baseline"):  # alternating: drifting load hits both
                        if args.only and side != args.only:
                            continue
                        log(
                            f"bus: round {round_ + 1}/{args.repeat}, {side}, {roles} role(s), "
                            f"{args.rate:g} events/s, warm-up {args.warmup:g} s, "
                            f"measuring {args.duration:g} s"
                        )
                        names = role_names(f"{round_}-{roles}", roles)
                        if side == "bus":
                            result = await bus_run(store, names, args)
                            result["claims"] = await _claims(schema, names)
                        else:
                            result = await baseline_run(names, args)
                        runs.setdefault(f"{side}.roles_{roles}", []).append(result)
        finally:
            await finish(store.close())
    results = {key: aggregate(found) for key, found in runs.items()}
    units = {
        "latency_p50_s": ("latency_p50", "s"),
        "latency_p99_s": ("latency_p99", "s"),
        "latency_max_s": ("latency_max", "s"),
        "achieved_per_s": ("events_per_s", "events/s"),
        "publish_p50_s": ("publish_call_p50", "s"),
        "publish_p99_s": ("publish_call_p99", "s"),
        "cpu_share": ("cpu_share", "cores"),
        "measured": ("deliveries_measured", "deliveries"),
    }
    for key, result in results.items():
        for field, (name, unit) in units.items():
            lines.add(f"bus.{key}.{name}", result[field], unit)
        if key.startswith("bus."):
            ok = result["latency_p99_s"] <= GOAL_P99_S
            lines.add(f"bus.goal.{key.split('.', 1)[1]}.p99_at_most_5ms", ok, "bool")
    return results


async def _claims(schema: str, names: list[str]) -> int:
    """Claims the store holds for these roles."""
    conn = await asyncpg.connect(DATABASE_URL)
    try:
        count: int = await conn.fetchval(
            f"SELECT count(*) FROM {quote_ident(schema)}.consumed_events WHERE role = ANY($1)",
            names,
        )
    finally:
        await conn.close()
    return count


def summary(results: dict[str, Any], args: argparse.Namespace) -> str:
    rows = [
        f"bus ({args.rate:g} events/s paced, {args.duration:g} s measured after "
        f"{args.warmup:g} s warm-up, {args.repeat} round(s), medians; "
        f"publish -> handler start; hiredis {'yes' if HIREDIS_AVAILABLE else 'no'}):"
    ]
    for key, r in results.items():
        rows.append(
            f"  {key:>17}: p50 {r['latency_p50_s'] * 1000:6.2f} ms  p99 "
            f"{r['latency_p99_s'] * 1000:6.2f} ms  max {r['latency_max_s'] * 1000:7.2f} ms  "
            f"{r['achieved_per_s']:6.0f} ev/s  publish p50 {r['publish_p50_s'] * 1000:5.2f} ms  "
            f"CPU {r['cpu_share'] * 100:3.0f} %"
        )
        per_round = " / ".join(f"{p99 * 1000:.2f}" for p99 in r["p99_per_round_s"])
        line = f"    p99 per round: {per_round} ms"
        if key.startswith("bus."):
            verdict = "met" if r["latency_p99_s"] <= GOAL_P99_S else "MISSED"
            counts = ", ".join(f"{k} {v}" for k, v in r["readers"].items())
            line += f"; goal p99 ≤ 5 ms: {verdict}; {counts}; claims stored {r['claims']}"
        rows.append(line)
        roles = int(key.rsplit("_", 1)[1])
        if r["measured"] != r["expected"] or r["handled_min"] < r["published"]:
            rows.append(
                f"    WARNING: {r['measured']} of {r['expected']} deliveries measured, "
                f"{r['handled_min']} of {r['published']} handled by the slowest role"
            )
        if "claims" in r and r["claims"] != r["published"] * roles:
            rows.append(f"    WARNING: {r['claims']} claims stored, not {r['published'] * roles}")
    return "\n".join(rows)
