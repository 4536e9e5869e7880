"""``python -m bench ingest|bus|uptime|all``: the production-backend benchmarks.

``python -m bench`` alone (or with only flags, or ``polling``) is still the fleet polling
benchmark (``bench.runner``).  Each suite here runs in this process against the loopback
PostgreSQL and Redis (``ORCH_BENCH_DATABASE_URL``, ``ORCH_BENCH_REDIS_URL``), within a
time budget, and removes what it created however it ends.  Its JSON lines go to stdout
and to ``bench/results/<UTC time>.jsonl``, its summary to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import time
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import asyncpg
from redis.exceptions import RedisError

from bench import bus_latency, detection, ingest, replicas, uptime_query
from bench.backends import (
    DATABASE_URL,
    REDIS_URL,
    Lines,
    log,
    remove_leftovers,
    request_stop,
    require_loopback,
)

SUITES: dict[str, ModuleType] = {
    "ingest": ingest,
    "bus": bus_latency,
    "uptime": uptime_query,
    "detection": detection,
    "replicas": replicas,
}
NAMES = ("polling", *SUITES, "all", "cleanup")
DESCRIPTIONS = {
    "ingest": "metric samples and probes per second into PostgreSQL (store vs bare COPY)",
    "bus": "Redis Streams bus publish -> handler latency at a paced rate (bus vs bare redis-py)",
    "uptime": "uptime % over 30 days for a fleet with a year of roll-ups",
    "detection": "fault injected -> 'is down' card at a fake Slack, default settings",
    "replicas": "three orch replicas on PostgreSQL + Redis share a fleet; one is killed",
}


def parse_args(name: str, argv: list[str]) -> argparse.Namespace:
    module = SUITES[name]
    parser = argparse.ArgumentParser(
        prog=f"python -m bench {name}", description=DESCRIPTIONS[name] + "; see docs/benchmarks.md"
    )
    parser.add_argument("--quick", action="store_true", help="a smaller, faster smoke run")
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    module.finish_arguments(parser, args)
    return args


async def run_suite(name: str, args: argparse.Namespace) -> int:
    module = SUITES[name]
    main_task = asyncio.current_task()
    assert main_task is not None

    def stop() -> None:
        request_stop()
        main_task.cancel()

    # Ctrl-C and SIGTERM cancel the suite, which still drops its schema and Redis keys.
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    # Other work on the machine moves these figures: the load when we started says how much.
    load = round(os.getloadavg()[0], 2)
    params: dict[str, Any] = {
        "bench": name,
        **vars(args),
        "started": stamp,
        "loadavg_1m": load,
        "python": platform.python_version(),
    }
    lines = Lines(params)
    budget = module.budget(args)
    started = time.monotonic()
    try:
        result = await asyncio.wait_for(module.run(args, lines), budget)
    except TimeoutError:
        if time.monotonic() - started < budget:
            raise  # a timeout inside the suite, not its budget
        log(f"{name}: gave up after its budget of {budget:.0f} s (cleaned up)")
        return 1
    path = lines.emit(stamp)
    log(module.summary(result, args))
    log(f"appended to {path}")
    return 0


def main(argv: list[str]) -> int:
    """``argv[0]`` is a suite name (not ``polling``)."""
    require_loopback(DATABASE_URL, "ORCH_BENCH_DATABASE_URL")
    require_loopback(REDIS_URL, "ORCH_BENCH_REDIS_URL")
    name, rest = argv[0], argv[1:]
    if name == "all":
        return run_all(rest)
    if name == "cleanup":
        return cleanup(rest)
    return _run(name, parse_args(name, rest))


def _run(name: str, args: argparse.Namespace) -> int:
    try:
        return asyncio.run(run_suite(name, args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        log(f"{name}: interrupted; its schema and Redis keys have been removed")
        return 130
    except (OSError, TimeoutError, RuntimeError, asyncpg.PostgresError, RedisError) as exc:
        # Servers away, a timeout, a stuck bus: one line, not a traceback.
        log(f"{name}: failed: {type(exc).__name__}: {exc}")
        return 1


def run_all(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench all",
        description="every suite in turn with its defaults: polling, ingest, bus, uptime, "
        "detection, replicas",
    )
    parser.add_argument("--quick", action="store_true", help="each suite's smoke run")
    parser.add_argument("--skip-polling", action="store_true", help="backend suites only")
    args = parser.parse_args(argv)
    flags = ["--quick"] if args.quick else []
    worst = 0
    if not args.skip_polling:
        from bench.runner import main as polling_main

        worst = polling_main(flags)
        if worst == 130:
            return worst
    for name in SUITES:
        code = _run(name, parse_args(name, flags))
        if code == 130:
            return code
        worst = max(worst, code)
    return worst


def cleanup(argv: list[str]) -> int:
    argparse.ArgumentParser(
        prog="python -m bench cleanup",
        description="drop every orch_bench_* schema and Redis key (what a bench killed with "
        "SIGKILL leaves behind; do not run it while a bench is running)",
    ).parse_args(argv)
    schemas, keys = asyncio.run(remove_leftovers(DATABASE_URL, REDIS_URL))
    log(f"dropped {len(schemas)} schema(s) {schemas}, deleted {keys} Redis key(s)")
    return 0
