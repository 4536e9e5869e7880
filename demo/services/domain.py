"""What makes one simulated service different from another: its numbers, its work, its log.

:class:`~demo.services.service.SimulatedService` owns the process-like behaviour (ports,
faults, restarts, the standard metrics); a :class:`Domain` only says what one second of
this service's work looks like.  Domains draw from the seeded ``rng`` they are given, so a
seed and a clock fully determine a run.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from demo.drift import Drift
from orch_kit import Check

Log = Callable[[str, str], None]  # (level, message)


@dataclass(frozen=True)
class Profile:
    """Base and amplitude of each standard metric while healthy.  Every ``base +
    amplitude`` stays under the demo thresholds (cpu 80, memory 85, error_rate 0.05)."""

    cpu: tuple[float, float]
    memory: tuple[float, float]
    error_rate: tuple[float, float]
    rps: tuple[float, float]
    latency_ms: tuple[float, float]


@dataclass(frozen=True)
class Database:
    """Where the service's database lives (for believable connection errors)."""

    host: str = "10.0.3.12"
    port: int = 5432
    name: str = "app"


class Domain:
    name: ClassVar[str]
    version: ClassVar[str]
    profile: ClassVar[Profile]
    database: ClassVar[Database] = Database()
    data_dir: ClassVar[str] = "/var/lib/app"

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def drift(self, base: float, amplitude: float) -> Drift:
        return Drift(self.rng, base, amplitude)

    def startup(self, log: Log) -> None:
        """Lines a fresh process writes before it is ready."""

    def work(self, t: float, log: Log, error_spike: bool) -> None:
        """One second of normal work at simulated time ``t``."""

    def idle(self, t: float, log: Log, why: str) -> None:
        """One second without work (paused, starting, or blocked on a fault)."""

    def metrics(self, t: float, error_spike: bool) -> dict[str, float]:
        """The domain's own numbers (merged after the standard five)."""
        return {}

    def status(self) -> Mapping[str, Any]:
        """Extra ``/status`` fields; must include ``queue_depth``."""
        return {"queue_depth": 0}

    def checks(self, t: float) -> dict[str, list[Check]]:
        """Extra health checks of the domain's own dependencies."""
        return {}

    def pick(self, items: tuple[str, ...]) -> str:
        return self.rng.choice(items)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p
