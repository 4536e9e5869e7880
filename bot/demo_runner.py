"""``orch demo``: the simulated fleet and the orchestrator in one process.

With no ``--fault`` it plays a short story so a newcomer sees orch work within a minute:
Email Blast crashes and is caught in seconds, Chatbot starts leaking memory and the
anomaly is raised; then a scripted operator restarts one and clears the other's cache
through the signed ``/control`` contract, and both incidents resolve with their downtime.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from agents.clock import Clock, SystemClock
from agents.control import send_control
from bot.config import Config
from bot.event_log import JsonlEventLog
from bot.runtime import Runtime, RuntimeOptions
from bot.secrets import control_secret
from bot.settings import Settings
from bot.signals import stop_event_on_signals, wait_for_stop
from bot.terminal_cards import TerminalCards
from bot.terminal_view import TerminalView
from demo.faults import FaultSpec, run_fault_schedule
from demo.fleet import Fleet


@dataclass
class DemoOptions:
    for_seconds: float | None = None
    faults: list[FaultSpec] = field(default_factory=list)
    events_jsonl: Path | None = None
    story: bool = True


@dataclass(frozen=True)
class StoryStep:
    at: float
    say: str
    fault: FaultSpec | None = None  # inject this fault …
    control: tuple[str, str] | None = None  # … or send (project, action) to /control


STORY = (
    StoryStep(5, "Email Blast crashes", fault=FaultSpec("email-blast", "crash", 5)),
    StoryStep(8, "Chatbot starts leaking memory", fault=FaultSpec("chatbot", "memory_leak", 8)),
    StoryStep(25, "an operator restarts Email Blast", control=("email-blast", "restart")),
    StoryStep(60, "an operator clears Chatbot's cache", control=("chatbot", "clear_cache")),
)


async def run_demo(settings: Settings, config: Config, options: DemoOptions) -> int:
    clock = SystemClock()
    stop = stop_event_on_signals()
    fleet = Fleet.from_config(config, settings.env, clock=clock)
    view = TerminalView(config.project_names())
    runtime = Runtime(
        settings,
        config,
        clock=clock,
        options=RuntimeOptions(extra_result_listeners=[view.on_result]),
    )
    view.register(runtime.bus)
    if runtime.slack is None:
        # No Slack tokens: the same rendered cards, as text in the terminal view.
        TerminalCards(runtime.store, write=view.say, statuses=runtime.health.statuses).register(
            runtime.bus
        )
    jsonl = JsonlEventLog(options.events_jsonl) if options.events_jsonl else None
    if jsonl is not None:
        jsonl.open()
        jsonl.register(runtime.bus)
    tasks: list[asyncio.Task[None]] = []
    try:
        await fleet.start()
        _use_bound_ports(config, fleet)
        await runtime.start()
        web = runtime.web.url if runtime.web else "(web app off)"
        print(
            f"orch demo: {len(config.projects)} projects, store {settings.sqlite_path}, "
            f"healthz {web}/healthz — Ctrl-C to stop",
            file=sys.stderr,
        )
        view.start()
        tasks.append(asyncio.create_task(run_fault_schedule(fleet, options.faults, clock)))
        for spec in options.faults:
            view.say(f"fault {spec.fault} scheduled for {spec.project} at +{spec.at:g}s")
        if options.story:
            tasks.append(asyncio.create_task(_play(STORY, fleet, config, settings, view, clock)))
        await wait_for_stop(stop, options.for_seconds)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runtime.stop()
        await fleet.stop()
        view.stop()
        if jsonl is not None:
            jsonl.close()
    return 0


def _use_bound_ports(config: Config, fleet: Fleet) -> None:
    """A demo config may say port 0 (any free port, as the tests do); the orchestrator
    must then probe the ports the fleet actually bound."""
    for project in config.projects:
        project.url = fleet.url(project.name)
        project.control_url = fleet.control_url(project.name)


async def _play(
    story: tuple[StoryStep, ...],
    fleet: Fleet,
    config: Config,
    settings: Settings,
    view: TerminalView,
    clock: Clock,
) -> None:
    start = clock.monotonic()
    async with aiohttp.ClientSession() as session:
        for step in story:
            await clock.sleep(step.at - (clock.monotonic() - start))
            view.say(step.say)
            if step.fault is not None:
                fault = step.fault
                await fleet.service(fault.project).inject(fault.fault)
            elif step.control is not None:
                project = config.project(step.control[0])
                secret = control_secret(project, config, settings.env)
                if secret is None:
                    view.say(f"no /control secret for {project.name}; skipped")
                    continue
                try:
                    status, _ = await send_control(
                        session, project.control_base, secret, step.control[1]
                    )
                    view.say(f"/control {step.control[1]} → HTTP {status}")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    view.say(f"/control {step.control[1]} failed: {exc}")
