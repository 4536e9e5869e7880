"""HealthMonitor: turns raw probe results into debounced project statuses.

The decision logic is ``step`` (pure, deterministic); ``HealthMonitor`` keeps one state
per project, asks ``step`` and announces transitions through the outbox.  It reports
transitions, never individual polls (DESIGN §8).

Rules (DESIGN §6, Gatus 3/2):
- ``failure_threshold`` consecutive FAIL probes make a project *down* (from any status,
  including unknown: one refused connection at start-up is not an outage).
- From down, ``success_threshold`` consecutive non-FAIL probes bring it back, to healthy
  or to degraded according to the last of those probes.
- healthy ↔ degraded also needs ``success_threshold`` consecutive probes of the new level,
  so one slow answer does not flip the status twice.
- From unknown the first non-FAIL probe decides at once: there is nothing to confirm
  against, and waiting would only delay the first "healthy" on start-up.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from typing import Any, Final

from agents import flapping
from agents.clock import Clock
from agents.events import PROJECT_FLAPPING, PROJECT_STATUS_CHANGED, Event
from agents.outbox import OutboxRelay
from agents.probe_result import Level, ProbeResult
from bot.config import Defaults, Project

log = logging.getLogger(__name__)

SOURCE: Final = "health-monitor"
HEALTHY: Final = "healthy"
DEGRADED: Final = "degraded"
DOWN: Final = "down"
UNKNOWN: Final = "unknown"
STATUSES: Final = frozenset({HEALTHY, DEGRADED, DOWN, UNKNOWN})

_DEFAULTS = Defaults()


@dataclass(frozen=True, slots=True)
class HealthState:
    status: str = UNKNOWN
    fails: int = 0  # consecutive FAIL probes
    goods: int = 0  # consecutive non-FAIL probes
    same: int = 0  # consecutive probes at the level of the last one
    last: Level | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    old: str
    new: str
    reason: str


def _status_of(level: Level) -> str:
    return DEGRADED if level is Level.WARN else HEALTHY


def step(
    state: HealthState, probe: ProbeResult, *, failure_threshold: int, success_threshold: int
) -> tuple[HealthState, Transition | None]:
    """Apply one probe; return the new state and the transition, if any."""
    level = probe.level
    same = state.same + 1 if state.last is level else 1
    old = state.status
    new = old
    reason = ""
    if level is Level.FAIL:
        fails, goods = state.fails + 1, 0
        if old != DOWN and fails >= failure_threshold:
            new = DOWN
            reason = probe.reason or f"{fails} failed probes"
    else:
        fails, goods = 0, state.goods + 1
        target = _status_of(level)
        if old == UNKNOWN:
            new = target
            reason = probe.reason or "first probe passed"
        elif old == DOWN:
            if goods >= success_threshold:
                new = target
                reason = f"{goods} good probes"
                if level is Level.WARN and probe.reason:
                    reason += f"; {probe.reason}"
        elif target != old and same >= success_threshold:
            new = target
            # Into degraded, the warn reason says why; back to healthy, the streak does.
            warn_reason = probe.reason if level is Level.WARN else ""
            reason = warn_reason or f"{same} {level.value} probes"
    next_state = HealthState(new, fails, goods, same, level)
    return next_state, (Transition(old, new, reason) if new != old else None)


def probe_summary(probe: ProbeResult) -> dict[str, Any]:
    """The small, JSON-safe view of the deciding probe that goes into the event."""
    return {
        "level": probe.level.value,
        "latency_ms": probe.latency_ms,
        "http_status": probe.http_status,
        "reason": probe.reason,
        "ts": probe.ts.isoformat(),
    }


def _setting(project: Project, name: str) -> Any:
    # Config fills every per-project value from `defaults`; a Project built by hand (a
    # test, a one-off tool) may still carry None, so fall back to the same defaults.
    value = getattr(project, name)
    return getattr(_DEFAULTS, name) if value is None else value


@dataclass(frozen=True, slots=True)
class _Settings:
    """A project's debounce and flap settings, read once per Project object."""

    failure_threshold: int
    success_threshold: int
    flap_window: int
    flap_start: float
    flap_stop: float

    @classmethod
    def of(cls, project: Project) -> _Settings:
        return cls(
            _setting(project, "failure_threshold"),
            _setting(project, "success_threshold"),
            _setting(project, "flap_window"),
            _setting(project, "flap_start"),
            _setting(project, "flap_stop"),
        )


_UNKNOWN = HealthState()
_STEADY = flapping.FlapState()


class HealthMonitor:
    """One per process; ``observe`` is called by the scheduler for every probe result.

    Calls for one project are serialised by a per-project lock, and the new state is
    committed only after its events are stored: if the store is away, ``observe`` raises,
    the state stays where it was and the next probe decides again, so a transition is
    never half-announced.
    """

    def __init__(self, relay: OutboxRelay, clock: Clock) -> None:
        self._relay = relay
        self._clock = clock
        self._health: dict[str, HealthState] = {}
        self._flap: dict[str, flapping.FlapState] = {}
        self._locks: dict[str, asyncio.Lock] = {}  # made on a project's first announcement
        self._settings: dict[str, tuple[Project, _Settings]] = {}

    async def observe(self, probe: ProbeResult, project: Project) -> list[Event]:
        """Feed one probe result; return the events emitted (already in the outbox)."""
        if self.observe_quietly(probe, project):
            return []
        name = project.name
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        async with lock:
            health, change, flap, edge = self._step(probe, project)  # afresh, under the lock
            events = []
            now = self._clock.now()
            if change is not None:
                payload = {
                    "from": change.old,
                    "to": change.new,
                    "reason": change.reason,
                    "probe": probe_summary(probe),
                }
                events.append(Event(PROJECT_STATUS_CHANGED, now, SOURCE, payload, project=name))
            if edge is not None:
                events.append(Event(PROJECT_FLAPPING, now, SOURCE, {"started": edge}, name))
            if events:
                await self._relay.emit(events)
                for event in events:
                    log.debug("%s %s %s", name, event.type, event.payload)
            self._health[name] = health
            self._flap[name] = flap
            return events

    def observe_quietly(self, probe: ProbeResult, project: Project) -> bool:
        """Commit ``probe`` at once when it announces nothing and nothing of its project is
        being announced (nearly every probe); False when ``observe`` must take it.  With
        nothing awaited between reading the state and writing it, this needs no lock, and
        the runtime calls it without making a coroutine."""
        name = project.name
        lock = self._locks.get(name)
        if lock is not None and lock.locked():
            return False
        health, change, flap, edge = self._step(probe, project)
        if change is not None or edge is not None:
            return False
        self._health[name] = health
        self._flap[name] = flap
        return True

    def _step(
        self, probe: ProbeResult, project: Project
    ) -> tuple[HealthState, Transition | None, flapping.FlapState, bool | None]:
        name = project.name
        known = self._settings.get(name)
        if known is None or known[0] is not project:  # new, or changed by a reload
            known = self._settings[name] = (project, _Settings.of(project))
        settings = known[1]
        state = self._health.get(name, _UNKNOWN)
        if (
            probe.level is Level.PASS
            and state.last is Level.PASS
            and state.status == HEALTHY
            and state.goods >= settings.success_threshold
            and state.same >= settings.success_threshold
        ):
            # Healthy and passing: ``step`` would only count the streaks further, and no
            # decision reads them beyond the threshold they already reach (most probes).
            health, change = state, None
        else:
            health, change = step(
                state,
                probe,
                failure_threshold=settings.failure_threshold,
                success_threshold=settings.success_threshold,
            )
        flap, edge = flapping.step(
            self._flap.get(name, _STEADY),
            probe.level,
            window=settings.flap_window,
            start=settings.flap_start,
            stop=settings.flap_stop,
        )
        return health, change, flap, edge

    def needs_recheck(self, name: str) -> bool:
        """True while the last probe failed and the project is not yet down: the scheduler
        should probe again after ``recheck_interval`` instead of the full interval."""
        state = self._health.get(name)
        return state is not None and state.last is Level.FAIL and state.status != DOWN

    def status(self, name: str) -> str:
        state = self._health.get(name)
        return state.status if state is not None else UNKNOWN

    def statuses(self) -> dict[str, str]:
        return {name: state.status for name, state in self._health.items()}

    def is_flapping(self, name: str) -> bool:
        state = self._flap.get(name)
        return state is not None and state.flapping

    def flap_percent(self, name: str) -> float:
        state = self._flap.get(name)
        return state.percent if state is not None else 0.0

    def restore(self, name: str, status: str) -> None:
        """Seed a status without announcing it (start-up: a project with an open
        ``<name>:down`` incident is still down until ``success_threshold`` good probes)."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        self._health[name] = replace(self._health.get(name, HealthState()), status=status)

    def forget(self, name: str) -> None:
        """The project left the config: drop everything known about it."""
        self._health.pop(name, None)
        self._flap.pop(name, None)
        self._locks.pop(name, None)
        self._settings.pop(name, None)
