"""The long-running commands: ``orch demo``, ``orch fleet``, ``orch run``, ``orch migrate``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys

from bot.api.auth import ApiSetupError, check_api_setup
from bot.config import Config
from bot.config_loader import ConfigError, load_config
from bot.settings import Settings
from bot.signals import reload_on_sighup, stop_event_on_signals, wait_for_any, wait_for_stop

CONFIG_POLL_S = 2.0  # how often ``orch run`` looks whether projects.yml changed


async def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "migrate":
        return await migrate(settings)
    try:
        config = load_config(settings.config_path, settings.env)
    except ConfigError as exc:
        print(f"orch: the configuration is not valid:\n{exc}", file=sys.stderr)
        return 2
    if args.command == "demo" and settings.api_mode is None:
        # The demo's API: the local operator, on loopback only (bot.api.auth).
        settings = dataclasses.replace(settings, api_mode="local")
    if args.command != "fleet":
        try:
            check_api_setup(settings)
        except ApiSetupError as exc:  # before anything starts, in one line
            print(f"orch: {exc}", file=sys.stderr)
            return 2
    if args.command == "run":
        return await run(settings, config, args.orchestrator)
    if args.command == "fleet":
        return await fleet(settings, config, args.fault, args.for_seconds)
    from bot.demo_runner import DemoOptions, run_demo

    options = DemoOptions(
        for_seconds=args.for_seconds,
        faults=list(args.fault),
        events_jsonl=args.events_jsonl,
        story=not args.fault and not args.no_story,
    )
    return await run_demo(settings, config, options)


async def run(settings: Settings, config: Config, orchestrator: str | None = None) -> int:
    """Until SIGINT/SIGTERM (exit 0) or a restart asked over /control (exit 75, for the
    supervisor to start orch again).  SIGHUP and changes to projects.yml reload it."""
    from bot.orchestrator_scope import UnknownGroup
    from bot.runtime import Runtime, RuntimeOptions

    stop = stop_event_on_signals()
    options = RuntimeOptions(orchestrator=orchestrator, watch_config_s=CONFIG_POLL_S, tune_gc=True)
    try:
        runtime = Runtime(settings, config, options=options)
    except UnknownGroup as exc:
        print(f"orch: {exc}", file=sys.stderr)
        return 2
    reload_on_sighup(lambda: runtime.live.reload("SIGHUP"))
    try:
        await runtime.start()
        polled = runtime.scope.projects(config)
        group = f" of orchestrator {orchestrator}" if orchestrator else ""
        print(
            f"orch: watching {len(polled)} projects{group}; /healthz on "
            f"http://{settings.host}:{runtime.web.port if runtime.web else settings.port}",
            file=sys.stderr,
        )
        await wait_for_any(stop, runtime.live.exit_requested)
    finally:
        await runtime.stop()
    return runtime.live.exit_code


async def fleet(settings: Settings, config: Config, faults: list, for_seconds: float | None) -> int:
    from agents.clock import SystemClock
    from demo.faults import run_fault_schedule
    from demo.fleet import Fleet

    stop = stop_event_on_signals()
    clock = SystemClock()
    simulated = Fleet.from_config(config, settings.env, clock=clock)
    await simulated.start()
    schedule = asyncio.create_task(run_fault_schedule(simulated, faults, clock))
    try:
        for project in config.projects:
            print(f"fleet: {project.name} on {project.url}", file=sys.stderr)
        await wait_for_stop(stop, for_seconds)
    finally:
        schedule.cancel()
        await asyncio.gather(schedule, return_exceptions=True)
        await simulated.stop()
    return 0


async def migrate(settings: Settings) -> int:
    from storage.factory import open_store

    store = open_store(settings.database_url, settings.sqlite_path, auto_migrate=False)
    await store.open()
    try:
        applied = await store.migrate()
    finally:
        await store.close()
    print(f"orch: schema up to date{f' (applied {applied})' if applied else ''}")
    return 0
