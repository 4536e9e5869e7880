"""One polling measurement in its own process: orch's full pipeline, or a bare loop.

Run by the bench driver as ``python -m bench.polling --mode orch|baseline|baseline-lean``
(the bare loop on aiohttp's client, or on orch's lean client); each
mode gets a fresh process so its peak RSS and CPU time are its own. It polls the ports
listed in ``--ports-file``, lets ``--warmup`` seconds pass (every project has probed once
and holds its keep-alive connections), then measures ``--duration`` seconds and prints
one JSON object on stdout. It stops by itself when stdin closes (the driver is gone).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import logging
import math
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.proc import (
    cpu_seconds,
    kernel_seconds,
    peak_rss_mb,
    percentile,
    raise_fd_limit,
    stdin_closed,
)
from bench.stalls import Stalls
from bot import event_loop

MAX_REASONS = 5
# orch; the bare loop on aiohttp's client (the reference); the bare loop on orch's lean one
MODES = ("orch", "baseline", "baseline-lean")


@dataclass(frozen=True)
class Plan:
    ports: list[int]
    interval: float
    timeout: float
    warmup: float
    duration: float
    sqlite: Path | None = None  # the store file (orch only)
    profile: Path | None = None  # write cProfile stats of the window here
    scrape_interval: float = 30.0  # /metrics + /status at most this often
    database_url: str | None = None  # orch on PostgreSQL (a scratch schema) when set
    redis_url: str | None = None  # and on Redis Streams when set


def scrape_every(interval: float, scrape_interval: float) -> int:
    """Every how many probes orch fetches /metrics and /status (ProbeClient.poll: due
    when at least ``scrape_interval - interval / 2`` passed since the last fetch)."""
    return max(1, math.ceil(scrape_interval / interval - 0.5))


def project_config(
    ports: list[int], interval: float, timeout: float, scrape_interval: float = 30.0
) -> dict[str, Any]:
    """The ``projects.yml`` equivalent for the fleet: one contract project per port."""
    return {
        "defaults": {"interval": interval, "timeout": timeout, "scrape_interval": scrape_interval},
        "projects": [
            {"name": f"bench-{i:05d}", "url": f"http://127.0.0.1:{port}", "kind": "contract"}
            for i, port in enumerate(ports)
        ],
    }


class Window:
    """Counters sampled at the start and the end of the measurement window."""

    def __init__(self) -> None:
        self.cpu0 = self.loop_cpu0 = self.t0 = self.kernel0 = 0.0
        self.probes0 = self.ok0 = 0

    def open(self, probes: int, ok: int) -> None:
        self.probes0, self.ok0 = probes, ok
        self.t0, self.cpu0, self.loop_cpu0 = time.monotonic(), cpu_seconds(), time.thread_time()
        self.kernel0 = kernel_seconds()

    def close(self, probes: int, ok: int, lateness: list[float]) -> dict[str, Any]:
        elapsed, cpu = time.monotonic() - self.t0, cpu_seconds() - self.cpu0
        loop_cpu = time.thread_time() - self.loop_cpu0  # we run on the event loop thread
        done, good = probes - self.probes0, ok - self.ok0
        return {
            "window_s": elapsed,
            "probes": done,
            "probes_per_s": done / elapsed,
            "lateness_p50_s": percentile(lateness, 50),
            "lateness_p99_s": percentile(lateness, 99),
            "lateness_max_s": max(lateness, default=float("nan")),
            "cpu_s": cpu,
            "cpu_per_probe_s": cpu / done if done else float("nan"),
            "cpu_share": cpu / elapsed,
            # Where the CPU went: the event loop thread, and every other thread (aiosqlite's
            # worker, the default executor).
            "cpu_loop_thread_s": loop_cpu,
            "cpu_other_threads_s": cpu - loop_cpu,
            # Of all of it, the part spent in the kernel (socket calls, mostly).
            "cpu_kernel_s": kernel_seconds() - self.kernel0,
            "success_rate_pct": 100.0 * good / done if done else 0.0,
        }


async def _measure(
    plan: Plan,
    counts: Callable[[], tuple[int, int]],
    lateness: Callable[[], list[float]],
    clear_lateness: Callable[[], None],
) -> dict[str, Any]:
    await asyncio.sleep(plan.warmup)
    window = Window()
    # cProfile sees the event loop thread only (not aiosqlite's worker thread) and slows
    # what it sees, so a profiled run's figures are for finding hot spots, not reporting.
    # It times by the thread's CPU clock, not the wall clock: a socket write that wakes the
    # fleet server can hand it the core, and wall time would charge that wait to the write.
    profiler = cProfile.Profile(time.thread_time) if plan.profile else None
    clear_lateness()
    stalls = Stalls()
    stalls.start()
    window.open(*counts())
    if profiler is not None:
        profiler.enable()
    await asyncio.sleep(plan.duration)
    if profiler is not None:
        profiler.disable()
    probes, ok = counts()
    out = window.close(probes, ok, lateness())
    out.update(await stalls.stop())
    if profiler is not None and plan.profile is not None:
        profiler.dump_stats(plan.profile)
    return out


async def run_orch(plan: Plan) -> dict[str, Any]:
    from agents.probe_result import Level, ProbeResult
    from bot.config import Config
    from bot.runtime import Runtime, RuntimeOptions
    from bot.settings import Settings

    ok = 0
    reasons: Counter[str] = Counter()

    def observe(result: ProbeResult) -> None:
        nonlocal ok
        if result.level is Level.PASS:
            ok += 1
        elif len(reasons) < MAX_REASONS or result.reason in reasons:
            reasons[result.reason] += 1

    assert plan.sqlite is not None
    config = Config.model_validate(
        project_config(plan.ports, plan.interval, plan.timeout, plan.scrape_interval)
    )
    settings = Settings(
        sqlite_path=plan.sqlite,
        database_url=plan.database_url,
        redis_url=plan.redis_url,
        port=0,
    )
    runtime = Runtime(
        settings,
        config,
        # As ``orch run``: the garbage collector tuned for a service (bot.gc_tuning).
        options=RuntimeOptions(serve_web=False, extra_result_listeners=[observe], tune_gc=True),
    )
    await runtime.start()
    try:
        monitor = runtime.monitor
        assert monitor is not None
        out = await _measure(
            plan,
            lambda: (monitor.probes_done, ok),
            monitor.lateness.snapshot,
            monitor.lateness.clear,
        )
        out["handler_failures"] = monitor.handler_failures
        statuses = runtime.health.statuses()
        out["projects_healthy"] = sum(1 for s in statuses.values() if _status_name(s) == "healthy")
    finally:
        await runtime.stop()
    out["rows_written"] = runtime.recorder.written_probes
    out["rows_dropped"] = runtime.recorder.dropped
    out["failure_reasons"] = dict(reasons)
    return out


def _status_name(status: object) -> str:
    """HealthMonitor.statuses() values may be plain strings or richer objects."""
    if isinstance(status, str):
        return status
    if isinstance(status, dict):
        return str(status.get("status", ""))
    return str(getattr(status, "status", status))


async def run_baseline(plan: Plan, lean: bool = False) -> dict[str, Any]:
    from bench.baseline import BarePoller

    urls = [f"http://127.0.0.1:{port}" for port in plan.ports]
    poller = BarePoller(
        urls,
        plan.interval,
        plan.timeout,
        scrape_every=scrape_every(plan.interval, plan.scrape_interval),
        lean=lean,
    )
    await poller.start()
    try:
        return await _measure(
            plan,
            lambda: (poller.probes_done, poller.probes_ok),
            lambda: list(poller.lateness),
            poller.lateness.clear,
        )
    finally:
        await poller.stop()


async def _until_orphaned(work: Awaitable[dict[str, Any]]) -> dict[str, Any] | None:
    """Run ``work``; give up (None) if the driver closes our stdin first."""
    job = asyncio.ensure_future(work)
    lifeline = asyncio.ensure_future(stdin_closed())
    try:
        await asyncio.wait({job, lifeline}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        lifeline.cancel()
        if not job.done():
            job.cancel()
        await asyncio.gather(job, lifeline, return_exceptions=True)
    return job.result() if not job.cancelled() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.polling")
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--ports-file", type=Path, required=True)
    parser.add_argument("--interval", type=float, required=True)
    parser.add_argument("--timeout", type=float, required=True)
    parser.add_argument("--warmup", type=float, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--sqlite", type=Path, help="store file for --mode orch")
    parser.add_argument("--profile", type=Path, help="write cProfile stats of the window")
    parser.add_argument("--scrape-interval", type=float, default=30.0)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--database-url", help="orch on this PostgreSQL (default: SQLite)")
    parser.add_argument("--redis-url", help="orch on Redis Streams (default: in-process bus)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    raise_fd_limit()
    if args.mode == "orch" and args.sqlite is None:
        parser.error("--mode orch needs --sqlite")
    plan = Plan(
        json.loads(args.ports_file.read_text()),
        args.interval,
        args.timeout,
        args.warmup,
        args.duration,
        args.sqlite,
        args.profile,
        args.scrape_interval,
        args.database_url,
        args.redis_url,
    )
    if args.mode == "orch":
        work = run_orch(plan)
    else:
        work = run_baseline(plan, lean=args.mode == "baseline-lean")
    result = None
    # Both sides on the same loop: orch's CLI runs on uvloop where it is installed.
    factory = event_loop.loop_factory() if args.loop == "uvloop" else None
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(_until_orphaned(work))
    if result is None:
        return 130
    result["mode"] = args.mode
    result["loop"] = "uvloop" if factory is not None else "asyncio"
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
