"""The SQLite side of roll-ups, retention and availability (definitions: ``storage.rollups``).

A mixin of ``SQLiteStore``: it uses the store's connection lock and transactions.  All
times are INTEGER microseconds; a probe's observed span is computed in SQL with ``lead``
over the probes of its (project, hour), exactly as ``storage.rollups.reference_coverage``
does in Python.  Writers serialise on SQLite's write lock (BEGIN IMMEDIATE), so a roll-up
transaction sees every committed row of its hour and no write can slip in between its
reading the dirty marks and clearing them.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import aiosqlite

from storage.base import MetricHour, ProbeHour
from storage.rollups import (
    HOUR_US,
    MARKER_DAYS,
    MAX_HOLD_US,
    add_totals,
    check_retention,
    day_range,
    floor_day,
    floor_hour,
    plan_window,
    scan_from,
    uptime_percent,
)
from storage.rows import metric_hour_from_row, probe_hour_from_row
from storage.sqlite_codec import TIME, from_us, to_us

H, CAP, DAY = HOUR_US, MAX_HOLD_US, 24 * HOUR_US
_FINITE = "BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308"  # not NULL(NaN)/inf
_PROJECTS = "IN (SELECT value FROM json_each(:projects))"  # one parameter for any list


def _cover(source: str) -> str:
    """Per probe of ``source`` (aliased ``p``): its (project, hour), level, latency and the
    observed span inside ``[:lo, :hi)`` (0 when it lies outside)."""
    return f"""
        SELECT project, hour_us, level, latency_ms,
               max(0, min(coalesce(next_us, hour_us + {H}), ts_us + {CAP}, hour_us + {H}, :hi)
                      - max(ts_us, :lo)) AS cov
        FROM (SELECT p.project, p.ts_us, p.level, p.latency_ms,
                     p.ts_us - p.ts_us % {H} AS hour_us,
                     lead(p.ts_us) OVER (PARTITION BY p.project, p.ts_us / {H}
                                         ORDER BY p.ts_us, p.id) AS next_us
              FROM {source})"""


# Probes of the dirty pairs whose hour is in [:dlo, :dhi).
_DIRTY = (
    f"rollup_dirty d JOIN probes p ON p.project = d.project"
    f" AND p.ts_us >= d.hour_us AND p.ts_us < d.hour_us + {H}"
    " WHERE d.hour_us >= :dlo AND d.hour_us < :dhi"
)
# Probes that can cover time in [:lo, :hi) (:scan is ``storage.rollups.scan_from(lo)``).
_RANGE = "probes p WHERE p.ts_us >= :scan AND p.ts_us < :hi"
_UP = "CASE WHEN level = 'fail' THEN 0 ELSE cov END"

_ROLLUP_PROBES = f"""
    INSERT OR REPLACE INTO probe_hourly (project, hour_us, probes, failed, observed_us, up_us,
                                         latency_avg_ms, latency_max_ms)
    SELECT project, hour_us, count(*), sum(level = 'fail'), sum(cov), sum({_UP}),
           avg(CASE WHEN level <> 'fail' THEN latency_ms END),
           max(CASE WHEN level <> 'fail' THEN latency_ms END)
    FROM ({_cover(_DIRTY)}) GROUP BY project, hour_us"""
# The day's sums for every project rolled up in this hour, from its hourly rows.
_ROLLUP_DAY = f"""
    INSERT OR REPLACE INTO probe_daily (project, day_us, probes, failed, observed_us, up_us)
    SELECT h.project, :day, sum(h.probes), sum(h.failed), sum(h.observed_us), sum(h.up_us)
    FROM rollup_dirty d JOIN probe_hourly h ON h.project = d.project
         AND h.hour_us >= :day AND h.hour_us < :day + {DAY}
    WHERE d.hour_us = :dlo GROUP BY h.project"""
_ROLLUP_METRICS = f"""
    INSERT OR REPLACE INTO metric_hourly (project, metric, hour_us, n, min, avg, max)
    SELECT s.project, s.metric, :dlo, count(*), min(s.value), avg(s.value), max(s.value)
    -- The hour of every project by time, not every project's whole history by project.
    FROM metric_samples s INDEXED BY metric_samples_ts
    JOIN rollup_dirty d ON d.project = s.project AND d.hour_us = :dlo
    WHERE s.ts_us >= :dlo AND s.ts_us < :dhi AND s.value {_FINITE}
    GROUP BY s.project, s.metric"""

# Whole clean hours from roll-ups; hours older than the raw horizon (whole or partial) too,
# a partial one scaled by its share inside the window.  Integer sums stay exact.
_ROLLUP_TOTALS = f"""
    SELECT h.project,
           sum(CASE WHEN h.hour_us >= :wf AND h.hour_us + {H} <= :wt THEN h.observed_us
                    ELSE h.observed_us * ((min(h.hour_us + {H}, :until)
                                           - max(h.hour_us, :since)) / {H}.0) END),
           sum(CASE WHEN h.hour_us >= :wf AND h.hour_us + {H} <= :wt THEN h.up_us
                    ELSE h.up_us * ((min(h.hour_us + {H}, :until)
                                     - max(h.hour_us, :since)) / {H}.0) END)
    FROM probe_hourly h
    LEFT JOIN rollup_dirty d ON d.project = h.project AND d.hour_us = h.hour_us
    WHERE h.hour_us >= :rlo AND h.hour_us < :rhi {{projects}}
      AND (h.hour_us < :kept
           OR (h.hour_us >= :wf AND h.hour_us + {H} <= :wt AND d.project IS NULL))
    GROUP BY h.project"""
_DAILY_TOTALS = """
    SELECT project, sum(observed_us), sum(up_us) FROM probe_daily
    WHERE day_us >= :d1 AND day_us < :dz {projects} GROUP BY project"""


def _raw_totals(source: str) -> str:
    return f"SELECT project, sum(cov), sum({_UP}) FROM ({_cover(source)}) GROUP BY project"


class SQLiteRollups:
    if TYPE_CHECKING:  # provided by SQLiteStore

        def _locked(self) -> AbstractAsyncContextManager[aiosqlite.Connection]: ...

        def _transaction(self) -> AbstractAsyncContextManager[aiosqlite.Connection]: ...

        async def _fetch(self, sql: str, params: Iterable[Any]) -> Iterable[sqlite3.Row]: ...

    async def rollup_hours(self, until: datetime) -> int:
        # Hour h is complete when h + 1 h <= until, i.e. h < floor(until).
        rows = await self._fetch(
            "SELECT DISTINCT hour_us FROM rollup_dirty WHERE hour_us < ? ORDER BY hour_us",
            (to_us(floor_hour(until)),),
        )
        rolled = 0
        for (hour,) in list(rows):
            # One transaction per hour: bounded lock time, and progress survives a crash.
            async with self._transaction() as tx:
                params = {"dlo": hour, "dhi": hour + H, "lo": hour, "hi": hour + H}
                params["day"] = hour - hour % DAY
                (pairs,) = await _one(
                    tx, "SELECT count(*) FROM rollup_dirty WHERE hour_us = ?", hour
                )
                if hour >= await _kept(tx):  # older hours lost their raw rows: keep roll-up
                    await tx.execute(_ROLLUP_PROBES, params)
                    await tx.execute(_ROLLUP_DAY, params)
                    await tx.execute(_ROLLUP_METRICS, params)
                    rolled += pairs
                await tx.execute("DELETE FROM rollup_dirty WHERE hour_us = ?", (hour,))
        return int(rolled)

    async def rollup_buckets(self, until: datetime) -> int:
        return 0  # hours not rolled up are read from raw probes: nothing to keep up

    async def apply_retention(
        self, now: datetime, raw_days: float = 7, rollup_days: float = 400
    ) -> dict[str, int]:
        check_retention(raw_days, rollup_days)
        raw_cut = to_us(floor_hour(now - timedelta(days=raw_days)))
        rollup_cut = to_us(floor_day(now - timedelta(days=rollup_days)))
        deleted: dict[str, int] = {}
        async with self._transaction() as tx:
            kept = await _kept(tx)
            # Never past a dirty hour inside the horizon: its raw rows are not rolled up.
            (first_dirty,) = await _one(tx, _FIRST_DIRTY, kept)
            cut = raw_cut if first_dirty is None else min(raw_cut, first_dirty)
            for table in ("probes", "metric_samples"):  # fixed names, never input
                cursor = await tx.execute(f"DELETE FROM {table} WHERE ts_us < ?", (cut,))
                deleted[table] = cursor.rowcount
            await tx.execute(
                "UPDATE raw_horizon SET raw_kept_from_us = max(raw_kept_from_us, ?)", (cut,)
            )
            for table, column in _ROLLUP_TABLES:
                cursor = await tx.execute(f"DELETE FROM {table} WHERE {column} < ?", (rollup_cut,))
                deleted[table] = cursor.rowcount
            marker_cut = to_us(now - timedelta(days=MARKER_DAYS))
            for table, column in _MARKER_TABLES:
                cursor = await tx.execute(f"DELETE FROM {table} WHERE {column} < ?", (marker_cut,))
                deleted[table] = cursor.rowcount
        return deleted

    async def uptime(
        self, projects: Sequence[str] | None, since: datetime, until: datetime
    ) -> dict[str, float]:
        w = plan_window(since, until)
        if projects is not None and not projects:
            return {}
        where = f" AND {{col}} {_PROJECTS}" if projects is not None else ""
        base = {"projects": json.dumps(list(projects)) if projects is not None else None}
        wf, wt = to_us(w.whole_from), to_us(w.whole_to)
        since_us, until_us = to_us(w.since), to_us(w.until)
        totals: dict[str, list[float]] = {}
        async with self._snapshot() as db:  # one snapshot: a roll-up may commit meanwhile
            kept = await _kept(db)
            (dirty,) = await _one(db, _FIRST_DIRTY, kept)
            d1, dz = (to_us(d) for d in day_range(w, None if dirty is None else from_us(dirty)))
            if d1 < dz:
                sql = _DAILY_TOTALS.format(projects=where.format(col="project"))
                add_totals(totals, await db.execute_fetchall(sql, base | {"d1": d1, "dz": dz}))
            params = base | {"since": since_us, "until": until_us, "kept": kept, "wf": wf, "wt": wt}
            sql = _ROLLUP_TOTALS.format(projects=where.format(col="h.project"))
            for rlo, rhi in ((to_us(floor_hour(w.since)), d1), (dz, until_us)):  # around the days
                if rlo < rhi:
                    rows = await db.execute_fetchall(sql, params | {"rlo": rlo, "rhi": rhi})
                    add_totals(totals, rows)
            if max(wf, kept) < wt:  # whole hours not rolled up yet: from raw rows
                lo = max(wf, kept)
                sql = _raw_totals(_DIRTY + where.format(col="d.project"))
                p = base | {"dlo": lo, "dhi": wt, "lo": lo, "hi": wt}
                add_totals(totals, await db.execute_fetchall(sql, p))
            for lo_dt, hi_dt in w.edges:
                if floor_hour(lo_dt) >= from_us(kept):  # older edges: roll-ups, scaled
                    sql = _raw_totals(_RANGE + where.format(col="p.project"))
                    p = base | {
                        "scan": to_us(scan_from(lo_dt)),
                        "lo": to_us(lo_dt),
                        "hi": to_us(hi_dt),
                    }
                    add_totals(totals, await db.execute_fetchall(sql, p))
        return uptime_percent(totals)

    async def downtime(self, project: str, since: datetime, until: datetime) -> float:
        lo, hi = to_us(since), to_us(until)
        rows = list(
            await self._fetch(
                "SELECT sum(max(0, min(coalesce(resolved_at_us, ?), ?) - max(opened_at_us, ?)))"
                " FROM incidents WHERE project = ? AND condition = 'down'"
                " AND opened_at_us < ? AND (resolved_at_us IS NULL OR resolved_at_us > ?)",
                (hi, hi, lo, project, hi, lo),
            )
        )
        return (rows[0][0] or 0) / 1e6

    async def mttr(self, project: str, since: datetime, until: datetime) -> float | None:
        rows = list(
            await self._fetch(
                "SELECT avg(duration_s) FROM incidents WHERE project = ? AND condition = 'down'"
                " AND state = 'resolved' AND resolved_at_us >= ? AND resolved_at_us < ?",
                (project, to_us(since), to_us(until)),
            )
        )
        return None if rows[0][0] is None else float(rows[0][0])

    async def probe_hours(self, project: str, since: datetime, until: datetime) -> list[ProbeHour]:
        rows = await self._fetch(
            "SELECT project, hour_us, probes, failed, observed_us, up_us, latency_avg_ms,"
            " latency_max_ms FROM probe_hourly WHERE project = ? AND hour_us >= ?"
            " AND hour_us < ? ORDER BY hour_us",
            (project, to_us(since), to_us(until)),
        )
        return [probe_hour_from_row(r, TIME) for r in rows]

    async def metric_hours(
        self, project: str, metric: str, since: datetime, until: datetime
    ) -> list[MetricHour]:
        rows = await self._fetch(
            "SELECT project, metric, hour_us, n, min, avg, max FROM metric_hourly"
            " WHERE project = ? AND metric = ? AND hour_us >= ? AND hour_us < ? ORDER BY hour_us",
            (project, metric, to_us(since), to_us(until)),
        )
        return [metric_hour_from_row(r, TIME) for r in rows]

    @contextlib.asynccontextmanager
    async def _snapshot(self) -> AsyncIterator[aiosqlite.Connection]:
        """A read transaction: every statement sees the same committed state (WAL)."""
        async with self._locked() as db:
            try:
                await db.execute("BEGIN")  # deferred: the first read fixes the snapshot
                yield db
            finally:
                with contextlib.suppress(sqlite3.OperationalError):
                    await db.execute("ROLLBACK")  # read-only: nothing to keep


async def mark_dirty(tx: aiosqlite.Connection, stamps: Iterable[tuple[str, int]]) -> None:
    """Inside the writing transaction: mark the (project, hour) of each (project, ts_us)."""
    pairs = sorted({(project, ts - ts % H) for project, ts in stamps})
    await tx.executemany(
        "INSERT OR IGNORE INTO rollup_dirty (project, hour_us) VALUES (?, ?)", pairs
    )


_FIRST_DIRTY = "SELECT min(hour_us) FROM rollup_dirty WHERE hour_us >= ?"
_MARKER_TABLES = (("consumed_events", "consumed_at_us"), ("job_runs", "claimed_us"))
_ROLLUP_TABLES = (
    ("probe_hourly", "hour_us"),
    ("probe_daily", "day_us"),
    ("metric_hourly", "hour_us"),
)


async def _one(db: aiosqlite.Connection, sql: str, *params: Any) -> tuple[Any, ...]:
    rows = list(await db.execute_fetchall(sql, params))
    return tuple(rows[0])


async def _kept(db: aiosqlite.Connection) -> int:
    (kept,) = await _one(db, "SELECT raw_kept_from_us FROM raw_horizon")
    return int(kept)
