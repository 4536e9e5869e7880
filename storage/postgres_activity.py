"""The PostgreSQL side of ``storage.activity_store``: the fleet and the agents at a glance.

A mixin of ``PostgresStore``; ``uptime_hours`` leaves the hours not rolled up yet to the
store's ``uptime`` (``storage.postgres_rollups``, which reads them from its 5-minute
buckets).  Project lists travel as one ``text[]`` parameter."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from storage.activity_store import HourlyUptime, LastProbe, SourceActivity
from storage.budget_store import Suspension
from storage.postgres_sql import TIME, as_utc, aware
from storage.rollups import HOUR
from storage.rows import suspension_from_row
from storage.uptime_hours import merge_hours, window_hours

_ROLLED = """
    SELECT project, hour, observed_us::float8, up_us::float8 FROM probe_hourly
    WHERE project = ANY($1::text[]) AND hour >= $2 AND hour < $3"""
_FRESH = """
    SELECT DISTINCT hour FROM rollup_dirty
    WHERE hour >= $2 AND hour < $3 AND project = ANY($1::text[])"""
# Per project its newest probe, through the (project, ts) index: one seek each.
_LAST_PROBES = """
    SELECT p.project, p.ts, p.level, p.latency_ms
    FROM unnest($1::text[]) AS n (project)
    CROSS JOIN LATERAL (SELECT project, ts, level, latency_ms FROM probes
                        WHERE project = n.project ORDER BY ts DESC, id DESC LIMIT 1) p"""
_ACTIVITY = """
    SELECT source, count(*), max(ts) FROM events WHERE ts >= $1
    GROUP BY source ORDER BY source COLLATE "C" """
_AT = "coalesce($1::timestamptz, now())"
_SUSPENSIONS = f"""
    SELECT project, reason, suspended_by, since, until FROM remediation_suspensions
    WHERE since <= {_AT} AND (until IS NULL OR until > {_AT}) ORDER BY project COLLATE "C" """
_JOBS = "SELECT job, max(claimed_at) FROM job_runs WHERE claimed_at >= $1 GROUP BY job"


class PostgresActivity:
    if TYPE_CHECKING:  # provided by PostgresStore (and its PostgresRollups)

        def _acquire(self) -> AbstractAsyncContextManager[asyncpg.Connection]: ...

        async def _fetch(self, sql: str, *params: Any) -> list[asyncpg.Record]: ...

        async def uptime(
            self, projects: Sequence[str] | None, since: datetime, until: datetime
        ) -> dict[str, float]: ...

    async def uptime_hours(
        self, projects: Sequence[str], first_hour: datetime, until: datetime
    ) -> HourlyUptime:
        hours = window_hours(first_hour, until)
        if not projects or not hours:
            return {p: [] for p in projects}
        args = (list(projects), hours[0], hours[-1] + HOUR)
        rows = await self._fetch(_ROLLED, *args)
        rolled = [(r[0], as_utc(r[1]), r[2], r[3]) for r in rows]
        fresh = {as_utc(r[0]) for r in await self._fetch(_FRESH, *args)}
        return await merge_hours(projects, hours, until, rolled, fresh, self.uptime)

    async def last_probes(self, projects: Sequence[str]) -> dict[str, LastProbe]:
        if not projects:
            return {}
        rows = await self._fetch(_LAST_PROBES, list(projects))
        return {r[0]: LastProbe(r[0], as_utc(r[1]), r[2], r[3]) for r in rows}

    async def event_activity(self, since: datetime) -> list[SourceActivity]:
        rows = await self._fetch(_ACTIVITY, aware(since))
        return [SourceActivity(r[0], r[1], as_utc(r[2])) for r in rows]

    async def active_suspensions(self, at: datetime | None = None) -> list[Suspension]:
        rows = await self._fetch(_SUSPENSIONS, None if at is None else aware(at))
        return [suspension_from_row(r, TIME) for r in rows]

    async def last_job_runs(self, since: datetime) -> dict[str, datetime]:
        rows = await self._fetch(_JOBS, aware(since))
        return {r[0]: as_utc(r[1]) for r in rows}
