"""``orch demo``: the simulated fleet and the orchestrator in one process.

With no ``--fault`` it plays a short story so a newcomer sees orch work within a minute,
with nobody at the keyboard: Email Blast crashes and orch restarts it by itself through the
signed ``/control`` contract (detected, restarted, verified, resolved, downtime shown);
Chatbot starts leaking memory and orch clears its cache; Social Media's disk fills up,
which two restarts cannot fix, so orch escalates and leaves an approval waiting, which the
operator answers with ``orch approve <id>`` in a second terminal (or in Slack).
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path

from agents.bus import Handler
from agents.clock import Clock, SystemClock
from agents.events import APPROVAL_REQUESTED, Event
from bot.config import Config
from bot.event_log import JsonlEventLog
from bot.runtime import Runtime, RuntimeOptions
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
    fault: FaultSpec


STORY = (
    StoryStep(5, "Email Blast crashes; orch should restart it by itself",
              FaultSpec("email-blast", "crash", 5)),
    StoryStep(10, "Chatbot starts leaking memory; orch should clear its cache",
              FaultSpec("chatbot", "memory_leak", 10)),
    StoryStep(30, "Social Media's disk fills up; no restart can fix that",
              FaultSpec("social-media", "disk_full", 30)),
)  # fmt: skip


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
    runtime.bus.subscribe("demo-approvals", _approval_hint(view), types=[APPROVAL_REQUESTED])
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
        api = f", dashboard {web}/dashboard" if settings.api_mode == "local" else ""
        print(
            f"orch demo: {len(config.projects)} projects, store {settings.sqlite_path}, "
            f"healthz {web}/healthz{api} — Ctrl-C to stop",
            file=sys.stderr,
        )
        view.start()
        tasks.append(asyncio.create_task(run_fault_schedule(fleet, options.faults, clock)))
        for spec in options.faults:
            view.say(f"fault {spec.fault} scheduled for {spec.project} at +{spec.at:g}s")
        if options.story:
            tasks.append(asyncio.create_task(_play(STORY, fleet, view, clock)))
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
    story: tuple[StoryStep, ...], fleet: Fleet, view: TerminalView, clock: Clock
) -> None:
    start = clock.monotonic()
    for step in story:
        await clock.sleep(step.at - (clock.monotonic() - start))
        view.say(step.say)
        await fleet.service(step.fault.project).inject(step.fault.fault)


def _approval_hint(view: TerminalView) -> Handler:
    """Tell the operator at the terminal how to answer an approval (no Slack needed)."""

    async def hint(event: Event) -> None:
        approval_id = event.payload.get("approval_id")
        view.say(
            f"approval waiting: {event.payload.get('action')} on {event.project}"
            f" — answer with: orch approve {approval_id}  (or: orch deny {approval_id})"
        )

    return hint
