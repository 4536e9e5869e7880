"""What a service hands the kit: plain data, and the callbacks that produce it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeAlias, TypeVar

Status = Literal["pass", "warn", "fail"]
STATUSES: tuple[Status, ...] = ("pass", "warn", "fail")
ACTIONS = ("restart", "pause", "resume", "clear_cache")
# Log severities, lowest first; `?level=` means "this one and worse".
LEVELS = ("debug", "info", "warning", "error", "critical")
LEVEL_ALIASES = {"warn": "warning", "fatal": "critical", "err": "error"}

T = TypeVar("T")
MaybeAwaitable: TypeAlias = T | Awaitable[T]


def iso(ts: datetime) -> str:
    """UTC, milliseconds, ``Z``: a ``+00:00`` pasted unencoded into ``?since=`` would
    arrive as a space, so the kit never hands one out."""
    text = ts.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def worst(statuses: Iterable[Status]) -> Status:
    """The most severe of some statuses (``pass`` when there are none)."""
    return max(statuses, key=STATUSES.index, default="pass")


@dataclass(frozen=True)
class Check:
    """One entry of health+json ``checks`` (field names map to the draft's camelCase)."""

    status: Status
    output: str = ""
    component_type: str | None = None  # "system", "datastore", "component"
    observed_value: float | str | None = None
    observed_unit: str | None = None

    def to_json(self, now: datetime) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "time": iso(now)}
        if self.output:
            out["output"] = self.output
        if self.component_type:
            out["componentType"] = self.component_type
        if self.observed_value is not None:
            out["observedValue"] = self.observed_value
        if self.observed_unit:
            out["observedUnit"] = self.observed_unit
        return out


@dataclass(frozen=True)
class Health:
    """Keys of ``checks`` follow the draft's ``component:measurement`` (``disk:utilization``)."""

    status: Status
    checks: Mapping[str, Sequence[Check]] = field(default_factory=dict)
    output: str = ""

    @classmethod
    def from_checks(cls, checks: Mapping[str, Sequence[Check]], output: str = "") -> Health:
        """Overall status = the worst check; output = the first non-passing check's."""
        status = worst(c.status for group in checks.values() for c in group)
        if not output:
            bad = [c.output for g in checks.values() for c in g if c.status != "pass"]
            output = next((o for o in bad if o), "")
        return cls(status, checks, output)


@dataclass(frozen=True)
class LogEntry:
    ts: datetime  # timezone-aware
    level: str  # one of LEVELS
    message: str

    def to_json(self) -> dict[str, str]:
        return {"ts": iso(self.ts), "level": self.level, "message": self.message}


@dataclass(frozen=True)
class LogQuery:
    """Validated ``/logs`` parameters; ``since`` is exclusive so polling never repeats."""

    since: datetime | None = None
    limit: int = 100
    level: str | None = None  # minimum severity, one of LEVELS

    def wants(self, entry: LogEntry) -> bool:
        if self.since is not None and entry.ts <= self.since:
            return False
        if self.level is not None:
            rank = LEVELS.index(entry.level) if entry.level in LEVELS else len(LEVELS)
            return rank >= LEVELS.index(self.level)
        return True


@dataclass(frozen=True)
class ControlRequest:
    action: str  # one of ACTIONS
    idempotency_key: str
    body: Mapping[str, Any]  # the whole JSON object, for services that take extra fields


@dataclass(frozen=True)
class Callbacks:
    """The service side of the contract.  Each may be a plain or an ``async`` function.

    ``metrics`` returns numbers by name (the five standard ones and any custom ones);
    ``status`` returns at least ``state``, ``queue_depth`` and ``uptime_s``; ``control``
    performs the action and may return extra fields for the 202 answer.  ``control`` may be
    left out when the service mounts no ``/control``.
    """

    health: Callable[[], MaybeAwaitable[Health]]
    metrics: Callable[[], MaybeAwaitable[Mapping[str, float]]]
    status: Callable[[], MaybeAwaitable[Mapping[str, Any]]]
    logs: Callable[[LogQuery], MaybeAwaitable[Sequence[LogEntry]]]
    control: Callable[[ControlRequest], MaybeAwaitable[Mapping[str, Any] | None]] | None = None
