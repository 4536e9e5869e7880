"""What the detection and replica suites share: a fleet, a fake Slack that notes when
each call arrived, and orch processes (``bench.orch_worker``) whose status lines are
read as they come."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.runner import Fleet, _release, _spawn
from tests.fake_slack import Call, FakeSlack

_DOWN = re.compile(r"(bench-\d{5})\W{0,3} is down")  # "*bench-00042* is down"
_NAME = re.compile(r"bench-\d{5}")
_CARD_METHODS = ("chat.postMessage", "chat.update")


@dataclass
class StampedSlack(FakeSlack):
    """The tests' fake Slack, plus the wall time each Web API call arrived."""

    arrivals: list[tuple[float, Call]] = field(default_factory=list)

    async def _record(self, call: Call) -> None:
        self.arrivals.append((time.time(), call))
        await super()._record(call)

    def down_cards(self) -> dict[str, list[float]]:
        """Per project, when each new card saying it is down arrived: its own card, or the
        grouped storm message (posted, or edited to list it) when orch folded it into one
        (five or more new incidents in a channel within 30 s, bot.storm)."""
        out: dict[str, list[float]] = {}
        storm: set[str] = set()  # projects already listed by a storm message
        for at, call in self.arrivals:
            if call.params.get("thread_ts") or call.method not in _CARD_METHODS:
                continue  # thread replies are a card's timeline, not a card
            text = json.dumps(call.params)
            if "incidents opened" in text:  # a storm message, posted or edited to list more
                names = set(_NAME.findall(text)) - storm
                storm |= names
            elif call.method == "chat.postMessage":
                names = set(_DOWN.findall(text))
            else:
                continue  # an edit of a card: resolved, acknowledged, ...
            for name in names:
                out.setdefault(name, []).append(at)
        return out


class Worker:
    """One ``bench.orch_worker`` process and what it last reported."""

    def __init__(self, replica_id: str) -> None:
        self.replica_id = replica_id
        self.proc: asyncio.subprocess.Process | None = None
        self.held = 0
        self.names: frozenset[str] = frozenset()
        self.probes = 0
        self.changed_at = time.time()  # when ``names`` last changed
        self.downs: dict[str, float] = {}  # project -> when it was first announced down
        self._reader: asyncio.Task[None] | None = None

    async def start(self, args: list[str]) -> None:
        self.proc = await _spawn("bench.orch_worker", f"--replica-id={self.replica_id}", *args)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                if "down" in data:
                    self.downs.setdefault(data["down"], data["at"])
                    continue
                self.held, self.probes = data["held"], data["probes"]
                if "names" in data:
                    self.names = frozenset(data["names"])
                    self.changed_at = data["t"]

    def kill(self) -> None:
        """SIGKILL: no graceful hand-back, the leases must expire."""
        assert self.proc is not None
        self.proc.kill()

    async def stop(self) -> None:
        if self._reader is not None:  # _release reads the rest of stdout itself
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self.proc is not None:
            await _release(self.proc, grace=30.0)


async def wait_for(check: Any, what: str, timeout: float, every: float = 0.2) -> float:
    """Wait until ``check()`` is true; the seconds it took (RuntimeError after timeout)."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"gave up waiting for {what} after {timeout:.0f} s")
        await asyncio.sleep(every)
    return time.monotonic() - started


@contextlib.asynccontextmanager
async def fleet_and_slack(
    projects: int, workdir: Path, max_seconds: float, clients: int = 1
) -> Any:
    """(fleet, slack, ports file, ports).  ``clients``: orch processes polling the fleet.

    A fleet process serves a port per project plus every client's keep-alive
    connections to them (up to three per project each, and a replica that handed
    projects back keeps its idle ones for a while): 1,250 projects per process keeps
    three replicas under the usual 20,000 open files."""
    slack = StampedSlack()
    await slack.start()
    per_process = 2500 if clients == 1 else 1250
    procs = 1 if projects <= 250 else max(2, -(-projects // per_process))
    fleet = Fleet(projects, procs, max_seconds=max_seconds)
    try:
        ports = await fleet.start()
        ports_file = workdir / "ports.json"
        ports_file.write_text(json.dumps(ports))
        yield fleet, slack, ports_file, ports
    finally:
        await fleet.stop()
        await slack.stop()
