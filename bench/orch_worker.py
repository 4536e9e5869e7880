"""One orch process for the detection and replica suites: the real Runtime, polling the
bench fleet with the default settings, posting to a fake Slack, until its stdin closes
(or it is killed: the replica suite sends SIGKILL, as a crash would).

Run as ``python -m bench.orch_worker --ports-file ... [--database-url ... --redis-url
...] --slack-url ... --replica-id r1``.  Every second it prints one JSON line
``{"t": wall time, "held": projects held, "probes": probes done}``, and when the set of
held projects changes, ``"names"`` with the whole set; when a project is announced down,
``{"down": name, "at": the event's time}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from bench.polling import project_config
from bench.proc import raise_fd_limit, stdin_closed
from bot import event_loop

CHANNEL = "#bench"


SECRET_ENV = "BENCH_CONTROL_SECRET"
SECRET = "orch-bench-secret"  # bench/fleet_server.py's kit secret


def fleet_config(
    ports: list[int], interval: float, timeout: float, actions: bool = False
) -> dict[str, Any]:
    """The fleet, every project in one group whose cards go to ``#bench``; ``actions``:
    each allows a signed restart, so orch's default auto-fix restarts a broken one."""
    config = project_config(ports, interval, timeout)
    config["defaults"].pop("scrape_interval")  # orch's default
    if actions:
        for project in config["projects"]:
            project["allowed_actions"] = ["restart"]
            project["control_secret_env"] = SECRET_ENV
    names = [p["name"] for p in config["projects"]]
    config["orchestrators"] = {"bench": {"channel": CHANNEL, "projects": names}}
    return config


async def run(args: argparse.Namespace) -> None:
    from agents.events import PROJECT_STATUS_CHANGED, Event
    from bot.config import Config
    from bot.runtime import Runtime, RuntimeOptions
    from bot.settings import Settings

    ports = json.loads(args.ports_file.read_text())
    config = Config.model_validate(
        fleet_config(ports, args.interval, args.timeout, actions=args.actions)
    )
    settings = Settings(
        sqlite_path=args.sqlite,
        database_url=args.database_url,
        redis_url=args.redis_url,
        port=0,
        slack_bot_token="xoxb-bench",
        slack_signing_secret="bench-signing-secret",
        slack_api_url=args.slack_url,
        env={SECRET_ENV: SECRET},
    )
    options = RuntimeOptions(serve_web=False, replica_id=args.replica_id, tune_gc=True)
    if args.lease_ttl is not None:
        options.lease_ttl_s = args.lease_ttl
    runtime = Runtime(settings, config, options=options)

    async def announced(event: Event) -> None:
        # When the HealthMonitor called a project down: splits detection latency into
        # "fault to status change" and "status change to card".
        if event.payload.get("to") == "down":
            print(json.dumps({"down": event.project, "at": event.ts.timestamp()}), flush=True)

    runtime.bus.subscribe(
        f"bench-status:{args.replica_id}", announced, types=[PROJECT_STATUS_CHANGED]
    )
    await runtime.start()
    lifeline = asyncio.ensure_future(stdin_closed())
    try:
        reported: frozenset[str] | None = None
        while not lifeline.done():
            held = runtime.keeper.held
            monitor = runtime.monitor
            line: dict[str, Any] = {
                "t": time.time(),
                "held": len(held),
                "probes": monitor.probes_done if monitor is not None else 0,
            }
            if held != reported:
                line["names"] = sorted(held)
                reported = held
            print(json.dumps(line), flush=True)
            await asyncio.wait({lifeline}, timeout=1.0)
    finally:
        lifeline.cancel()
        await runtime.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.orch_worker")
    parser.add_argument("--ports-file", type=Path, required=True)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--sqlite", type=Path, required=True)
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    parser.add_argument("--slack-url", required=True)
    parser.add_argument("--replica-id", default="r1")
    parser.add_argument("--lease-ttl", type=float)
    parser.add_argument("--actions", action="store_true", help="projects allow a restart")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    raise_fd_limit()
    with contextlib.suppress(KeyboardInterrupt):
        event_loop.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
