"""What one probe of one project observed. Produced by the probe client, consumed by the
monitor, the HealthMonitor, the MetricsAnalyzer and the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Level(StrEnum):
    """The health+json vocabulary; every failure (refused, timeout, garbage) is FAIL."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    project: str
    ts: datetime  # when the probe started, UTC
    level: Level
    latency_ms: float
    reason: str = ""  # empty on pass; on warn/fail a precise, human-readable cause
    http_status: int | None = None
    probe: str = "health"  # which check produced the verdict: health | http | prometheus
    metrics: dict[str, float] = field(default_factory=dict)  # numeric metrics, if scraped
    state: str | None = None  # /status "state" (running | paused | starting), contract only
    version: str | None = None

    @property
    def ok(self) -> bool:
        return self.level is not Level.FAIL
