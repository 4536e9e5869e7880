"""MetricsAnalyzer: threshold levels with hysteresis on both edges, per (project, metric).

Classification (``classify``) is strict: with ``direction: above`` a sample is *warn* when
``value > warn`` and *crit* when ``value > crit``; with ``below`` when ``value < warn`` /
``value < crit``.  Strict, because thresholds are written as limits that are still
acceptable: ``error_rate: 0.05`` reads "an error rate above 5 % is a problem", and a
service sitting exactly on its limit is not anomalous.

Each configured level (warn, crit) is an independent hysteresis flag (``step``): it turns
on after ``open_after`` consecutive samples at or beyond it and off after ``close_after``
consecutive samples short of it.  The metric's level is the highest flag that is on.  So
raising needs ``open_after`` samples at or beyond the new level, lowering needs
``close_after`` samples below the current one, and crit → warn → none steps down one
level at a time only as far as the samples justify (two samples under warn go straight
from crit to none).

Only metrics present in a probe count; a probe without a metric (a FAIL probe usually has
no metrics) neither confirms nor clears it.  Samples themselves are stored elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from agents.clock import Clock
from agents.events import METRIC_ANOMALY, METRIC_RECOVERED, Event
from agents.outbox import OutboxRelay
from agents.probe_result import ProbeResult
from bot.config import Defaults, Project, Threshold

log = logging.getLogger(__name__)

SOURCE: Final = "metrics-analyzer"
NONE: Final = "none"
WARN: Final = "warn"
CRIT: Final = "crit"
_RANK: Final = {NONE: 0, WARN: 1, CRIT: 2}

_DEFAULTS = Defaults()


def classify(value: float, threshold: Threshold) -> str:
    """none | warn | crit for one sample (strict comparison, see the module docstring)."""

    def beyond(limit: float | None) -> bool:
        if limit is None:
            return False
        return value > limit if threshold.direction == "above" else value < limit

    if beyond(threshold.crit):
        return CRIT
    if beyond(threshold.warn):
        return WARN
    return NONE


@dataclass(frozen=True, slots=True)
class Flag:
    on: bool = False
    hits: int = 0  # consecutive samples at or beyond this level
    misses: int = 0  # consecutive samples short of it


@dataclass(frozen=True, slots=True)
class MetricState:
    warn: Flag = Flag()
    crit: Flag = Flag()

    @property
    def level(self) -> str:
        return CRIT if self.crit.on else WARN if self.warn.on else NONE


def _advance(flag: Flag, reached: bool, open_after: int, close_after: int) -> Flag:
    if not reached and not flag.on and not flag.hits:
        return flag  # off and still short of it: misses only count while on
    hits, misses = (flag.hits + 1, 0) if reached else (0, flag.misses + 1)
    on = flag.on
    if not on and hits >= open_after:
        on = True
    elif on and misses >= close_after:
        on = False
    return Flag(on, hits, misses)


def step(
    state: MetricState, value: float, threshold: Threshold, *, open_after: int, close_after: int
) -> MetricState:
    """Apply one sample; the new level is ``result.level``."""
    rank = _RANK[classify(value, threshold)]
    # A level with no configured limit never holds (a reload may have removed it).
    warn = _advance(state.warn, rank >= 1, open_after, close_after)
    crit = _advance(state.crit, rank >= 2, open_after, close_after)
    if warn is state.warn and crit is state.crit:
        return state
    return MetricState(
        warn if threshold.warn is not None else Flag(),
        crit if threshold.crit is not None else Flag(),
    )


def _setting(project: Project, name: str) -> Any:
    value = getattr(project, name)  # None only on a Project not built through Config
    return getattr(_DEFAULTS, name) if value is None else value


_CLEAR = MetricState()


class MetricsAnalyzer:
    """One per process; the scheduler calls ``observe`` with every probe result.

    As in the HealthMonitor, new state is committed only once its events are stored, and
    calls for one project are serialised.
    """

    def __init__(self, relay: OutboxRelay, clock: Clock) -> None:
        self._relay = relay
        self._clock = clock
        self._state: dict[tuple[str, str], MetricState] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def observe(self, probe: ProbeResult, project: Project) -> list[Event]:
        """Feed one probe result; return the events emitted (already in the outbox)."""
        if self.observe_quietly(probe, project):
            return []
        name = project.name
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        async with lock:
            updates, events = self._step(probe, project)  # afresh, under the lock
            if events:
                await self._relay.emit(events)
                for event in events:
                    log.debug("%s %s %s", name, event.type, event.payload)
            self._state.update(updates)
            return events

    def observe_quietly(self, probe: ProbeResult, project: Project) -> bool:
        """As the HealthMonitor's: commit at once when no level moves (True), or leave the
        probe to ``observe`` (False)."""
        if not probe.metrics or not project.thresholds:
            return True
        lock = self._locks.get(project.name)
        if lock is not None and lock.locked():
            return False
        updates, events = self._step(probe, project)
        if events:
            return False
        self._state.update(updates)
        return True

    def _step(
        self, probe: ProbeResult, project: Project
    ) -> tuple[dict[tuple[str, str], MetricState], list[Event]]:
        """The new states of the project's thresholded metrics, and the events they make."""
        name = project.name
        open_after = _setting(project, "anomaly_open_after")
        close_after = _setting(project, "anomaly_close_after")
        updates: dict[tuple[str, str], MetricState] = {}
        events: list[Event] = []
        now: datetime | None = None
        metrics = probe.metrics
        for metric, threshold in project.thresholds.items():
            value = metrics.get(metric)
            if value is None or not math.isfinite(value):
                continue  # absent (or garbage) counts neither way
            key = (name, metric)
            old = self._state.get(key, _CLEAR)
            new = step(old, value, threshold, open_after=open_after, close_after=close_after)
            if new is old:
                continue
            updates[key] = new
            if new.level == old.level:
                continue
            now = now or self._clock.now()  # one time for all of this probe's events
            if new.level == NONE:
                payload: dict[str, Any] = {"metric": metric, "value": value}
                events.append(Event(METRIC_RECOVERED, now, SOURCE, payload, project=name))
            else:
                limit = threshold.crit if new.level == CRIT else threshold.warn
                payload = {"metric": metric, "value": value, "threshold": limit, "level": new.level}
                events.append(Event(METRIC_ANOMALY, now, SOURCE, payload, project=name))
        return updates, events

    def level(self, name: str, metric: str) -> str:
        state = self._state.get((name, metric))
        return state.level if state is not None else NONE

    def anomalies(self, name: str | None = None) -> dict[tuple[str, str], str]:
        """Current warn/crit levels, optionally for one project."""
        return {
            key: state.level
            for key, state in self._state.items()
            if state.level != NONE and (name is None or key[0] == name)
        }

    def restore(self, name: str, metric: str, level: str) -> None:
        """Seed a level without announcing it (start-up, from open metric incidents)."""
        if level not in _RANK:
            raise ValueError(f"unknown level {level!r}")
        self._state[(name, metric)] = MetricState(
            Flag(on=_RANK[level] >= 1), Flag(on=_RANK[level] >= 2)
        )

    def forget(self, name: str) -> None:
        """The project left the config: drop its metric states."""
        for key in [k for k in self._state if k[0] == name]:
            del self._state[key]
        self._locks.pop(name, None)
