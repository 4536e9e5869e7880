"""Fault names, ``PROJECT:FAULT@SECONDS`` schedules, and the client for the demo fault route.

A restart clears the *transient* faults (a process that is restarted no longer crashes,
hangs, spikes or leaks); ``disk_full`` and ``dependency_down`` are outside the process and
survive it, as they would for real.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from agents.clock import Clock
from orch_kit.client import post_signed

FAULTS: tuple[str, ...] = (
    "crash",
    "hang",
    "error_spike",
    "memory_leak",
    "disk_full",
    "dependency_down",
)
TRANSIENT_FAULTS: frozenset[str] = frozenset({"crash", "hang", "error_spike", "memory_leak"})
FAULT_ROUTE = "/_demo/fault"  # on the supervisor port; demo only, not part of the contract

_PROJECT = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_SPEC_HELP = "expected PROJECT:FAULT or PROJECT:FAULT@SECONDS, e.g. email-blast:crash@30"


@dataclass(frozen=True)
class FaultSpec:
    project: str
    fault: str
    at: float = 0.0  # seconds after the schedule starts

    def __str__(self) -> str:
        return f"{self.project}:{self.fault}@{self.at:g}"


def parse_fault_spec(text: str) -> FaultSpec:
    """``email-blast:crash@30`` → ``FaultSpec("email-blast", "crash", 30.0)``."""
    raw = text.strip()
    project, colon, rest = raw.partition(":")
    if not colon:
        raise ValueError(f"missing ':' in fault spec {text!r}; {_SPEC_HELP}")
    if not _PROJECT.fullmatch(project):
        raise ValueError(f"bad project name {project!r} in fault spec {text!r}; {_SPEC_HELP}")
    fault, at_sign, seconds = rest.partition("@")
    if fault not in FAULTS:
        raise ValueError(
            f"unknown fault {fault!r} in fault spec {text!r}; known faults: {', '.join(FAULTS)}"
        )
    at = 0.0
    if at_sign:
        try:
            at = float(seconds.removesuffix("s"))
        except ValueError:
            at = -1.0
        if not math.isfinite(at) or at < 0:
            raise ValueError(
                f"bad seconds {seconds!r} in fault spec {text!r}: "
                "expected a number of seconds >= 0 after '@'"
            )
    return FaultSpec(project, fault, at)


class _Injectable(Protocol):
    def inject(self, fault: str) -> Awaitable[None]: ...


class _Fleet(Protocol):
    def service(self, name: str) -> _Injectable: ...

    @property
    def names(self) -> list[str]: ...


async def run_fault_schedule(fleet: _Fleet, specs: Iterable[FaultSpec], clock: Clock) -> None:
    """Inject each fault ``at`` seconds (clock time) after this call; returns after the last.

    Every project is checked first, so a typo fails at once instead of minutes in.
    """
    ordered = sorted(specs, key=lambda spec: spec.at)
    unknown = sorted({s.project for s in ordered} - set(fleet.names))
    if unknown:
        raise ValueError(
            f"fault schedule names unknown projects {unknown}; the fleet has {fleet.names}"
        )
    start = clock.monotonic()
    for spec in ordered:
        delay = start + spec.at - clock.monotonic()
        if delay > 0:  # a FakeClock parks even a zero sleep until the next advance
            await clock.sleep(delay)
        await fleet.service(spec.project).inject(spec.fault)


async def post_fault(
    session: aiohttp.ClientSession,
    control_url: str,
    secret: bytes,
    fault: str | None,
    *,
    clear: bool = False,
    now: float | None = None,
) -> Mapping[str, Any]:
    """Inject (or with ``clear=True`` clear; ``fault=None`` clears all) through a running
    service's signed demo route.  Raises ``aiohttp.ClientResponseError`` on refusal."""
    url = control_url.rstrip("/") + FAULT_ROUTE
    _, answer = await post_signed(
        session, url, {"fault": fault, "clear": clear}, secret, now=now, raise_for_status=True
    )
    return answer
