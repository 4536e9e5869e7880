"""The SQLite side of ``storage.activity_store``: the fleet and the agents at a glance.

A mixin of ``SQLiteStore``; ``uptime_hours`` leaves the hours not rolled up yet to the
store's ``uptime`` (``storage.sqlite_rollups``).  Project lists travel as one JSON
parameter (``json_each``), whatever their length."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aiosqlite

from agents.clock import Clock
from storage.activity_store import HourlyUptime, LastProbe, SourceActivity
from storage.budget_store import Suspension
from storage.rollups import HOUR
from storage.rows import suspension_from_row
from storage.sqlite_codec import TIME, from_us, to_us
from storage.uptime_hours import merge_hours, window_hours

_PROJECTS = "(SELECT value FROM json_each(:projects))"
# A row per project, its hours as one JSON array: 300 rows for a 300-project fleet, not
# 7,200 (fetching rows through aiosqlite costs more than the query).  Integers: exact.
_ROLLED = f"""
    SELECT project, json_group_array(json_array(hour_us, observed_us, up_us)) FROM probe_hourly
    WHERE project IN {_PROJECTS} AND hour_us >= :lo AND hour_us < :hi GROUP BY project"""
_FRESH = f"""
    SELECT DISTINCT hour_us FROM rollup_dirty
    WHERE hour_us >= :lo AND hour_us < :hi AND project IN {_PROJECTS}"""
# Per project its newest probe, through the (project, ts_us) index: one seek each.
_LAST_PROBES = f"""
    SELECT p.project, p.ts_us, p.level, p.latency_ms
    FROM {_PROJECTS} AS n
    JOIN probes p ON p.id = (SELECT id FROM probes WHERE project = n.value
                             ORDER BY ts_us DESC, id DESC LIMIT 1)"""
_ACTIVITY = """
    SELECT source, count(*), max(ts_us) FROM events WHERE ts_us >= :since
    GROUP BY source ORDER BY source"""
_SUSPENSIONS = """
    SELECT project, reason, suspended_by, since_us, until_us FROM remediation_suspensions
    WHERE since_us <= :at AND (until_us IS NULL OR until_us > :at) ORDER BY project"""
_JOBS = "SELECT job, max(claimed_us) FROM job_runs WHERE claimed_us >= :since GROUP BY job"


class SQLiteActivity:
    if TYPE_CHECKING:  # provided by SQLiteStore (and its SQLiteRollups)
        _clock: Clock

        def _locked(self) -> AbstractAsyncContextManager[aiosqlite.Connection]: ...

        async def uptime(
            self, projects: Sequence[str] | None, since: datetime, until: datetime
        ) -> dict[str, float]: ...

    async def uptime_hours(
        self, projects: Sequence[str], first_hour: datetime, until: datetime
    ) -> HourlyUptime:
        hours = window_hours(first_hour, until)
        if not projects or not hours:
            return {p: [] for p in projects}
        params = {"projects": json.dumps(list(projects)), "lo": to_us(hours[0]),
                  "hi": to_us(hours[-1] + HOUR)}  # fmt: skip
        rows = await self._activity_read(_ROLLED, params)
        rolled = [(r[0], from_us(hour), float(observed), float(up))
                  for r in rows for hour, observed, up in json.loads(r[1])]  # fmt: skip
        fresh = {from_us(r[0]) for r in await self._activity_read(_FRESH, params)}
        return await merge_hours(projects, hours, until, rolled, fresh, self.uptime)

    async def last_probes(self, projects: Sequence[str]) -> dict[str, LastProbe]:
        if not projects:
            return {}
        rows = await self._activity_read(_LAST_PROBES, {"projects": json.dumps(list(projects))})
        return {r[0]: LastProbe(r[0], from_us(r[1]), r[2], r[3]) for r in rows}

    async def event_activity(self, since: datetime) -> list[SourceActivity]:
        rows = await self._activity_read(_ACTIVITY, {"since": to_us(since)})
        return [SourceActivity(r[0], r[1], from_us(r[2])) for r in rows]

    async def active_suspensions(self, at: datetime | None = None) -> list[Suspension]:
        moment = self._clock.now() if at is None else at
        rows = await self._activity_read(_SUSPENSIONS, {"at": to_us(moment)})
        return [suspension_from_row(r, TIME) for r in rows]

    async def last_job_runs(self, since: datetime) -> dict[str, datetime]:
        rows = await self._activity_read(_JOBS, {"since": to_us(since)})
        return {r[0]: from_us(r[1]) for r in rows}

    async def _activity_read(self, sql: str, params: dict[str, Any]) -> list[sqlite3.Row]:
        async with self._locked() as db:
            return list(await db.execute_fetchall(sql, params))
