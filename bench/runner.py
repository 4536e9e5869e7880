"""The driver: start the fleet, run each measurement in its own process, report, clean up.

Every child is tied to the driver: its stdin is a pipe the driver holds, and each child
exits when that pipe closes, so no process outlives the bench, whether it ends normally,
on an error or on Ctrl-C (which the whole process group receives anyway).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench import report
from bench.proc import raise_fd_limit

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 120.0


def log(message: str) -> None:
    for line in message.splitlines():
        print(f"[bench] {line}", file=sys.stderr, flush=True)


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        *args,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        # A worker reports the names it holds on one line: 5,000 of them are ~75 KB, over
        # asyncio's 64 KiB line limit, which killed the reader and froze its figures.
        limit=1 << 22,
    )


async def _release(proc: asyncio.subprocess.Process, grace: float = 15.0) -> bytes:
    """Close the child's lifeline, wait for it (then terminate, then kill); its stdout."""
    if proc.stdin is not None and not proc.stdin.is_closing():
        proc.stdin.close()
    out = b""
    try:
        assert proc.stdout is not None
        out = await asyncio.wait_for(proc.stdout.read(), grace)
        await asyncio.wait_for(proc.wait(), grace)
    except (TimeoutError, asyncio.CancelledError):
        pass
    finally:
        for stop in (proc.terminate, proc.kill):
            if proc.returncode is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5.0)
    return out


async def _wait_ready(port: int) -> None:
    """Poll ``/health`` on ``port`` until it answers 200."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    timeout = aiohttp.ClientTimeout(total=2.0)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            try:
                async with session.get(f"http://127.0.0.1:{port}/health") as resp:
                    if resp.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"fleet port {port} not ready after {READY_TIMEOUT_S}s")
            await asyncio.sleep(0.05)


class Fleet:
    """``projects`` contract endpoints spread over ``processes`` server processes."""

    def __init__(self, projects: int, processes: int, max_seconds: float) -> None:
        self.projects = projects
        self.processes = max(1, min(processes, projects))
        self.max_seconds = max_seconds
        self.procs: list[asyncio.subprocess.Process] = []
        self.handlers = ""
        self.control: dict[int, int] = {}  # project port -> its process's control port

    async def start(self) -> list[int]:
        share, extra = divmod(self.projects, self.processes)
        for i in range(self.processes):
            count = share + (1 if i < extra else 0)
            self.procs.append(
                await _spawn(
                    "bench.fleet_server",
                    "--count",
                    str(count),
                    "--max-seconds",
                    str(self.max_seconds),
                )
            )
        ports: list[int] = []
        for proc in self.procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT_S)
            if not line:
                raise RuntimeError("a fleet process exited before serving")
            hello = json.loads(line)
            ports.extend(hello["ports"])
            self.control.update(dict.fromkeys(hello["ports"], hello["control"]))
            self.handlers = hello["handlers"]
            await asyncio.gather(_wait_ready(hello["ports"][0]), _wait_ready(hello["ports"][-1]))
        return ports

    async def fault(self, ports: list[int], fail: bool = True) -> None:
        """Make the /health of ``ports`` answer fail (or pass again)."""
        by_control: dict[int, list[int]] = {}
        for port in ports:
            by_control.setdefault(self.control[port], []).append(port)
        async with aiohttp.ClientSession() as session:
            for control, group in by_control.items():
                url = f"http://127.0.0.1:{control}/fault"
                async with session.post(url, json={"ports": group, "fail": fail}) as resp:
                    resp.raise_for_status()

    async def controls(self) -> list[tuple[int, str, str]]:
        """Every /control call the fleet received: (port, idempotency key, action)."""
        out: list[tuple[int, str, str]] = []
        async with aiohttp.ClientSession() as session:
            for control in set(self.control.values()):
                async with session.get(f"http://127.0.0.1:{control}/controls") as resp:
                    out.extend((int(p), str(k), str(a)) for p, k, a in await resp.json())
        return out

    async def seen(self) -> dict[int, float]:
        """Per port, the wall time of its last /health request."""
        out: dict[int, float] = {}
        async with aiohttp.ClientSession() as session:
            for control in set(self.control.values()):
                async with session.get(f"http://127.0.0.1:{control}/seen") as resp:
                    out.update({int(k): v for k, v in (await resp.json()).items()})
        return out

    async def stop(self) -> dict[str, float]:
        outs = await asyncio.gather(*(_release(p) for p in self.procs))
        self.procs = []
        usage = {"cpu_s": 0.0, "peak_rss_mb": 0.0}
        for out in outs:
            for line in out.decode().splitlines():
                with contextlib.suppress(ValueError):
                    data = json.loads(line)
                    usage["cpu_s"] += data.get("cpu_s", 0.0)
                    usage["peak_rss_mb"] = max(usage["peak_rss_mb"], data.get("peak_rss_mb", 0.0))
        return usage


async def run_worker(
    mode: str, ports_file: Path, args: argparse.Namespace, workdir: Path, profile: bool
) -> dict[str, Any]:
    cmd = [
        "bench.polling",
        f"--mode={mode}",
        f"--ports-file={ports_file}",
        f"--interval={args.interval}",
        f"--timeout={min(5.0, args.interval)}",
        f"--warmup={args.warmup}",
        f"--duration={args.duration}",
        f"--sqlite={workdir / f'{mode}.db'}",
        f"--scrape-interval={args.scrape_interval}",
        f"--loop={args.loop}",
    ]
    if profile:
        cmd.append(f"--profile={report.RESULTS_DIR / f'{args.stamp}-{mode}.prof'}")
    if mode == "orch" and args.backend == "postgres+redis":
        from bench.stack import production

        # A fresh schema and Redis per run: no round inherits another's rows or leases.
        async with production("polling") as (database_url, redis_url):
            cmd += [f"--database-url={database_url}", f"--redis-url={redis_url}"]
            return await _worker_result(mode, cmd, args)
    return await _worker_result(mode, cmd, args)


async def _worker_result(mode: str, cmd: list[str], args: argparse.Namespace) -> dict[str, Any]:
    proc = await _spawn(*cmd)
    assert proc.stdout is not None
    try:
        out = await asyncio.wait_for(proc.stdout.read(), args.warmup + args.duration + 300)
        await proc.wait()
    finally:
        await _release(proc)
    lines = out.decode().strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{mode} run failed (exit {proc.returncode})")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Fleet polling: orch's full pipeline against a bare aiohttp loop.",
        epilog="Other suites: python -m bench {ingest,bus,uptime,detection,replicas,all,cleanup} "
        "[--help]; "
        "see docs/benchmarks.md.",
    )
    parser.add_argument(
        "--projects",
        type=int,
        nargs="+",
        help="endpoints to poll (default 1000); several sizes make a sweep with a PNG chart",
    )
    parser.add_argument("--interval", type=float, default=10.0, help="seconds (default 10)")
    parser.add_argument("--duration", type=float, help="measured seconds (default 60)")
    parser.add_argument(
        "--warmup", type=float, help="seconds before measuring (default: one interval)"
    )
    parser.add_argument(
        "--only",
        choices=("orch", "baseline", "baseline-lean"),
        help="run one side only (baseline: the bare loop on aiohttp's client; "
        "baseline-lean: on orch's lean client)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of orch+baseline, alternating; figures are medians (default 1)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 100 projects, 15 s")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile each side's window into bench/results/<timestamp>-<side>.prof "
        "(slows it down: for finding hot spots, not for the figures)",
    )
    parser.add_argument(
        "--fleet-procs", type=int, help="fleet server processes (default 1, or 2 above 250)"
    )
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgres+redis"),
        default="sqlite",
        help="orch's store and bus: embedded (default) or PostgreSQL (a scratch schema) "
        "and Redis Streams (a private redis-server)",
    )
    parser.add_argument(
        "--scrape-interval",
        type=float,
        default=30.0,
        help="/metrics and /status at most this often, both sides (default 30, orch's)",
    )
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="event loop of both sides (default uvloop, as `orch run`)",
    )
    args = parser.parse_args(argv)
    if args.projects is None:
        args.projects = [100 if args.quick else 1000]
    if args.duration is None:
        args.duration = 15.0 if args.quick else 60.0
    if args.warmup is None:
        args.warmup = args.interval
    if min(*args.projects, args.repeat) < 1 or args.interval <= 0 or args.duration <= 0:
        parser.error("--projects, --repeat, --interval and --duration must be positive")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    return args


async def run(args: argparse.Namespace) -> int:
    # SIGTERM ends the bench like Ctrl-C: cancel, stop the children, remove temp files.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    stamp = args.stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if args.profile:
        report.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    sweep = []
    for projects in args.projects:
        sweep.append(await run_size(args, projects, stamp))
    if len(args.projects) > 1:
        from bench.chart import sweep_chart

        png = sweep_chart(sweep, report.RESULTS_DIR / f"{stamp}-sweep.png", args.interval)
        log(f"chart: {png.relative_to(ROOT)}")
    return 0


async def run_size(args: argparse.Namespace, projects: int, stamp: str) -> dict[str, Any]:
    """One fleet size: every round of every side; returns {projects, mode: result}."""
    modes = [args.only] if args.only else ["orch", "baseline", "baseline-lean"]
    per_run = args.warmup + args.duration + 120
    budget = per_run * len(modes) * args.repeat + 300
    workdir = Path(tempfile.mkdtemp(prefix="orch-bench-"))
    procs = args.fleet_procs or (1 if projects <= 250 else 2)
    fleet = Fleet(projects, procs, max_seconds=budget)
    try:
        log(f"fleet: {projects} endpoints in {fleet.processes} process(es)")
        ports = await fleet.start()
        ports_file = workdir / "ports.json"
        ports_file.write_text(json.dumps(ports))
        log(f"fleet ready ({fleet.handlers} handlers)")
        runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
        for round_ in range(args.repeat):
            for mode in modes:  # alternating, so drifting machine load hits both sides
                counter = f" (round {round_ + 1}/{args.repeat})" if args.repeat > 1 else ""
                log(
                    f"{mode}{counter}: polling every {args.interval:g}s, "
                    f"warm-up {args.warmup:g}s, measuring {args.duration:g}s"
                )
                profile = args.profile and round_ == 0
                runs[mode].append(await run_worker(mode, ports_file, args, workdir, profile))
        results = {mode: report.aggregate(found) for mode, found in runs.items()}
    finally:
        usage = await fleet.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    params = {
        "bench": "polling",
        "projects": projects,
        "backend": args.backend,
        "loop": args.loop,
        "scrape_interval_s": args.scrape_interval,
        "interval_s": args.interval,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "repeat": args.repeat,
        "fleet_handlers": fleet.handlers,
        "profiled": args.profile,
        "started": stamp,
    }
    fleet_usage = {"cpu_s": usage["cpu_s"], "peak_rss_mb": usage["peak_rss_mb"]}
    path = report.emit(report.build_lines(params, results, fleet_usage), stamp)
    log(report.summary(results))
    for mode, result in results.items():
        extra = {k: v for k, v in result.items() if k in report.DIAGNOSTICS}
        if extra:
            log(f"{mode}: {json.dumps(extra)}")
    log(f"appended to {path.relative_to(ROOT)}")
    if args.profile:
        for mode in results:
            prof = report.RESULTS_DIR / f"{stamp}-{mode}.prof"
            log(report.top_functions(prof))
    return {"projects": projects, **results}


def main(argv: list[str] | None = None) -> int:
    """``[polling] [flags]``: the polling bench; ``ingest|bus|uptime|all ...``: bench.suites."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "polling":
        argv = argv[1:]
    elif argv and not argv[0].startswith("-"):
        from bench import suites

        if argv[0] not in suites.NAMES:
            log(f"unknown suite {argv[0]!r}; one of {', '.join(suites.NAMES)}")
            return 2
        return suites.main(argv)
    args = parse_args(argv)
    raise_fd_limit()
    try:
        return asyncio.run(run(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        log("interrupted; every bench process has been stopped")
        return 130
    except RuntimeError as exc:
        log(f"failed: {exc}")
        return 1
