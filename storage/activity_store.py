"""What the dashboard and the API read about the fleet and the agents at a glance, each
for every project (or agent) with one call, whatever the fleet's size: hourly uptime,
last probes, events per source, suspensions in force and the last scheduled job runs.

SQLite and PostgreSQL implement it (``storage.sqlite_activity``,
``storage.postgres_activity``; shared steps: ``storage.uptime_hours``) and pass
``tests/test_activity_store.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from storage.budget_store import Suspension

# Per project, the hours of a window oldest first, each with its uptime % (None: no
# probe observed in that hour).
HourlyUptime = dict[str, list[tuple[datetime, float | None]]]


@dataclass(frozen=True, slots=True)
class LastProbe:
    project: str
    ts: datetime
    level: str  # pass | warn | fail
    latency_ms: float


@dataclass(frozen=True, slots=True)
class SourceActivity:
    """The events one ``source`` (an agent, the API, Slack...) emitted in a window."""

    source: str
    events: int
    last_at: datetime  # its newest event in the window


class ActivityStore(Protocol):
    async def uptime_hours(
        self, projects: Sequence[str], first_hour: datetime, until: datetime
    ) -> HourlyUptime:
        """Per project of ``projects`` (every one present), the uptime % of each UTC hour
        from ``floor_hour(first_hour)`` until ``until`` (the last one clipped at ``until``),
        oldest first, as ``uptime`` answers for that hour alone: clean roll-ups are read
        for every project at once, and ``uptime`` is asked only for the hours not rolled
        up yet (the current one, the last one until the job ran, one a late probe made
        dirty), for all projects at once."""
        ...

    async def last_probes(self, projects: Sequence[str]) -> dict[str, LastProbe]:
        """Each project's newest probe (projects never probed, or whose probes retention
        deleted, are absent)."""
        ...

    async def event_activity(self, since: datetime) -> list[SourceActivity]:
        """Per event ``source`` with events at or after ``since``: how many and the
        newest's time; sorted by source."""
        ...

    async def active_suspensions(self, at: datetime | None = None) -> list[Suspension]:
        """Every suspension in force at ``at`` (None: db now), sorted by project."""
        ...

    async def last_job_runs(self, since: datetime) -> dict[str, datetime]:
        """Per scheduled job, when its newest run claimed at or after ``since`` was
        claimed (by whichever replica)."""
        ...
