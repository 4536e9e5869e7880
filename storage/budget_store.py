"""What limits acting on the fleet, in the store: the remediation budget, suspensions, and
the analyses whose tokens the Claude budgets count (DESIGN §6).

Tables (``migrations/*/0007_autonomy.sql``):

- ``remediation_attempts``: every restart (automatic or an operator's), counted over a
  sliding window by database time, across replicas and restarts.
- ``remediation_suspensions``: one row per project whose auto-fix is off; it survives an
  orch restart because it lives here, not in memory (history: events and the audit log).
- ``analyses``: each diagnosis with its tokens, latency and cost.

Times are database time (PostgreSQL ``now()``; the SQLite store's injected clock): a
replica whose clock is 6 minutes off neither extends nor cuts a budget window.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from agents.events import Event


@dataclass(frozen=True, slots=True)
class Suspension:
    project: str
    reason: str  # budget_exhausted | breaker_open | flapping | paused | mass_failure
    by: str
    since: datetime
    until: datetime | None  # None: until resumed


@dataclass(frozen=True, slots=True)
class NewAnalysis:
    incident_id: str
    project: str
    engine: str  # claude | rules
    diagnosis: str
    recommended_action: str | None
    confidence: float  # 0..1
    risk: str
    payload: dict[str, Any] = field(default_factory=dict)  # the validated output, evidence
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms: float = 0.0
    cost_usd: float = 0.0
    requested_by: str | None = None  # None: automatic; a user id: a human asked again


@dataclass(frozen=True, slots=True)
class Analysis:
    id: str
    created_at: datetime
    new: NewAnalysis


SuspensionEventFor = Callable[[Suspension], Event]
AnalysisEventFor = Callable[[Analysis], Event]


def check_analysis(new: NewAnalysis) -> None:
    """Refused alike on both backends, before anything is written."""
    if new.engine not in ("claude", "rules"):
        raise ValueError(f"engine must be 'claude' or 'rules', got {new.engine!r}")
    if not 0.0 <= new.confidence <= 1.0:  # NaN fails too
        raise ValueError(f"confidence must be within 0..1, got {new.confidence}")
    if new.input_tokens < 0 or new.output_tokens < 0:
        raise ValueError("token counts must be >= 0")


def check_seconds(name: str, seconds: float) -> float:
    if not (seconds > 0 and math.isfinite(seconds)):  # NaN fails too
        raise ValueError(f"{name} must be a positive number of seconds, got {seconds}")
    return float(seconds)


class BudgetStore(Protocol):
    # -- remediation budget ------------------------------------------------------------
    async def record_attempt(
        self, project: str, action: str, actor: str, action_id: str | None = None
    ) -> None:
        """Count an attempt now without checking the budget (an operator's restart)."""
        ...

    async def count_attempts(self, project: str, action: str, window_s: float) -> int:
        """Attempts in the last ``window_s`` seconds of db time (``at > now - window``)."""
        ...

    async def try_take_budget(
        self,
        project: str,
        action: str,
        limit: int,
        window_s: float,
        actor: str,
        action_id: str | None = None,
    ) -> bool:
        """Record an attempt if fewer than ``limit`` are in the window; atomic across
        replicas: of callers racing for the last slot exactly one gets True."""
        ...

    async def suspend_remediation(
        self,
        project: str,
        reason: str,
        by: str,
        event_for: SuspensionEventFor,
        *,
        for_s: float | None = None,
    ) -> Suspension:
        """Turn auto-fix off for ``project`` from now until resumed (or db now + ``for_s``),
        with its ``remediation.suspended`` event; replaces a suspension already there."""
        ...

    async def resume_remediation(self, project: str) -> Suspension | None:
        """Remove the project's suspension (if any, even one that ran out); return it."""
        ...

    async def remediation_suspended(
        self, project: str, at: datetime | None = None
    ) -> Suspension | None:
        """The suspension in force on ``project`` at ``at`` (None: db now), if any."""
        ...

    # -- analyses ----------------------------------------------------------------------
    async def record_analysis(self, new: NewAnalysis, event_for: AnalysisEventFor) -> Analysis:
        """Store an analysis (created now) with its ``analysis.completed`` event.  Every
        analysis is kept, a duplicate too: its tokens were spent and count against the
        budget (deduplicate before calling Claude, not here)."""
        ...

    async def analyses_for(self, incident_id: str) -> list[Analysis]:
        """Oldest first."""
        ...

    async def tokens_used_since(self, since: datetime, *, incident_id: str | None = None) -> int:
        """Input + output tokens of the analyses created at or after ``since`` (of one
        incident when given): the daily and per-incident budgets."""
        ...
