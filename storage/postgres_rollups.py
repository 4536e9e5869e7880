"""The PostgreSQL side of roll-ups, retention and availability (``storage.rollups``).

A mixin of ``PostgresStore`` (it needs only ``_acquire``), plus ``mark_dirty``, which the
store calls in the transaction that writes raw rows.  Spans are computed as intervals and
summed before one exact ``extract(epoch)`` per group, so the integers match SQLite's.

Replicas write while a roll-up runs, and READ COMMITTED lets a roll-up miss rows that
commit after its statement started.  The dirty mark's ``gen`` closes that gap: a writer
bumps it (``ON CONFLICT DO UPDATE``) and holds its row lock until commit; the roll-up
reads (project, gen) *before* computing and deletes a mark only where gen is unchanged.
A writer that committed meanwhile changed gen (the delete waits for its lock, then sees
the new gen and skips the row); a writer that comes after the delete re-inserts the
mark.  Either way the hour is recomputed on the next run.  Two roll-ups at once are safe
(upserts of the same values) but wasteful; the runtime runs one fleet-wide (a lease).

The hours not rolled up (dirty, or the partial ones at a window's edges) are read from
5-minute buckets kept the same way: ``storage.postgres_buckets``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg

from storage.base import MetricHour, ProbeHour
from storage.postgres_buckets import add_bucket_totals, delete_buckets, rollup_buckets
from storage.postgres_sql import TIME
from storage.rollups import (
    HOUR,
    MARKER_DAYS,
    add_totals,
    check_aware,
    check_retention,
    day_range,
    floor_day,
    floor_hour,
    plan_window,
    scan_from,
    uptime_percent,
)
from storage.rows import metric_hour_from_row, probe_hour_from_row

_H = "interval '1 hour'"
_US = "* 1000000)::bigint"  # completes "(extract(epoch FROM <interval>) "


def _cover(source: str, lo: str, hi: str, hour: str, partition: str) -> str:
    """Per probe of ``source`` (aliased ``p``): project, hour, level, latency and the
    observed span (an interval) inside ``[lo, hi)``, zero when it lies outside.  ``hour``
    is the probe's hour as the source knows it (no per-row ``date_trunc``); ``partition``
    adds whatever, besides the project, separates hours.  Projects sort in the "C"
    collation: byte order is all a partition needs and much cheaper than the locale's."""
    return f"""
        SELECT project, hour, level, latency_ms,
               greatest(interval '0', least(coalesce(next_ts, hour + {_H}),
                                            ts + interval '5 minutes', hour + {_H}, {hi})
                                      - greatest(ts, {lo})) AS cov
        FROM (SELECT p.project COLLATE "C" AS project, p.ts, p.level, p.latency_ms,
                     {hour} AS hour,
                     lead(p.ts) OVER (PARTITION BY p.project COLLATE "C"{partition}
                                      ORDER BY p.ts, p.id) AS next_ts
              FROM {source}) x"""


# Probes of the dirty pairs whose hour is in [$1, $2); the repeated ts range lets the
# planner use the BRIN index when it reads a whole hour of the fleet.
_DIRTY = (
    f"rollup_dirty d JOIN probes p ON p.project = d.project"
    f" AND p.ts >= d.hour AND p.ts < d.hour + {_H}"
    " WHERE d.hour >= $1 AND d.hour < $2 AND p.ts >= $1 AND p.ts < $2"
)
_COVER_DIRTY = _cover(_DIRTY, "$1", "$2", "d.hour", ", d.hour")
# Probes that can cover time in [$2, $3), all inside the hour $5 ($1 is
# ``storage.rollups.scan_from($2)``); a time range, which the BRIN index on ts serves.
_RANGE = "probes p WHERE p.ts >= $1 AND p.ts < $3"
# Or ($1 a clean 5-minute bucket ending at $2) the probes of [$2, $3) and, per project,
# the last probe of bucket $1 from its probe_bucket row: no other earlier probe's span
# reaches $2 (storage.postgres_buckets).
_CARRY = (
    "(SELECT project, ts, id, level, latency_ms FROM probes WHERE ts >= $2 AND ts < $3"
    " UNION ALL SELECT project, last_ts, 0, last_level, NULL FROM probe_bucket"
    " WHERE bucket = $1 AND last_ts IS NOT NULL) p WHERE true"
)
_PROJECTS = " AND ({col} = ANY(${n}::text[]) OR ${n}::text[] IS NULL)"
# Only the projects whose hour $5 is dirty (the others read its roll-up).
_DIRTY_ONLY = (
    " AND EXISTS (SELECT 1 FROM rollup_dirty d WHERE d.project = p.project AND d.hour = $5)"
)

_ROLLUP_PROBES = f"""
    INSERT INTO probe_hourly (project, hour, probes, failed, observed_us, up_us,
                              latency_avg_ms, latency_max_ms)
    SELECT project, hour, count(*), count(*) FILTER (WHERE level = 'fail'),
           (extract(epoch FROM sum(cov)) {_US},
           (extract(epoch FROM coalesce(sum(cov) FILTER (WHERE level <> 'fail'),
                                        interval '0')) {_US},
           avg(latency_ms) FILTER (WHERE level <> 'fail'),
           max(latency_ms) FILTER (WHERE level <> 'fail')
    FROM ({_COVER_DIRTY}) c GROUP BY project, hour ORDER BY project
    ON CONFLICT (project, hour) DO UPDATE SET probes = EXCLUDED.probes,
        failed = EXCLUDED.failed, observed_us = EXCLUDED.observed_us, up_us = EXCLUDED.up_us,
        latency_avg_ms = EXCLUDED.latency_avg_ms, latency_max_ms = EXCLUDED.latency_max_ms"""
# The day's sums for every project rolled up in hour $1 (day $2), from its hourly rows.
_ROLLUP_DAY = """
    INSERT INTO probe_daily (project, day, probes, failed, observed_us, up_us)
    SELECT h.project, $2, sum(h.probes), sum(h.failed), sum(h.observed_us), sum(h.up_us)
    FROM rollup_dirty d JOIN probe_hourly h ON h.project = d.project
         AND h.hour >= $2 AND h.hour < $2 + interval '1 day'
    WHERE d.hour = $1
    GROUP BY h.project ORDER BY h.project
    ON CONFLICT (project, day) DO UPDATE SET probes = EXCLUDED.probes,
        failed = EXCLUDED.failed, observed_us = EXCLUDED.observed_us, up_us = EXCLUDED.up_us"""
# metric_samples holds a row per probe instant, its samples in the parallel arrays
# names/vals (migrations/postgres/0008): unnested here into (metric, value).
_ROLLUP_METRICS = """
    INSERT INTO metric_hourly (project, metric, hour, n, min, avg, max)
    SELECT s.project, u.metric, $1, count(*), min(u.value), avg(u.value), max(u.value)
    FROM metric_samples s JOIN rollup_dirty d ON d.project = s.project AND d.hour = $1
         CROSS JOIN LATERAL unnest(s.names, s.vals) AS u(metric, value)
    -- float8 NaN equals NaN in PostgreSQL, so NOT IN drops it with the infinities.
    WHERE s.ts >= $1 AND s.ts < $2 AND u.value NOT IN ('NaN', 'Infinity', '-Infinity')
    GROUP BY s.project, u.metric ORDER BY s.project, u.metric
    ON CONFLICT (project, metric, hour) DO UPDATE SET n = EXCLUDED.n, min = EXCLUDED.min,
        avg = EXCLUDED.avg, max = EXCLUDED.max"""
# Marks are locked in project order first, the order writers take them in (mark_dirty
# sorts), so a writer and the roll-up wait for each other instead of deadlocking.
_CLEAR_MARKS = """
    WITH locked AS (
        SELECT d.project FROM rollup_dirty d
        JOIN unnest($2::text[], $3::bigint[]) AS m(project, gen)
             ON d.project = m.project AND d.gen = m.gen
        WHERE d.hour = $1 ORDER BY d.project FOR UPDATE OF d)
    DELETE FROM rollup_dirty d USING unnest($2::text[], $3::bigint[]) AS m(project, gen)
    WHERE d.hour = $1 AND d.project = m.project AND d.gen = m.gen
      AND d.project IN (SELECT project FROM locked)"""

# $1 since, $2 until, $3/$8 the hours to read, $4/$5 whole hours, $6 raw horizon,
# $7 projects.
_WHOLE = f"h.hour >= $4 AND h.hour + {_H} <= $5"
_SHARE = f"(extract(epoch FROM least(h.hour + {_H}, $2) - greatest(h.hour, $1)) / 3600)"
_ROLLUP_TOTALS = f"""
    SELECT h.project,
           sum(CASE WHEN {_WHOLE} THEN h.observed_us::float8
                    ELSE (h.observed_us * {_SHARE})::float8 END),
           sum(CASE WHEN {_WHOLE} THEN h.up_us::float8 ELSE (h.up_us * {_SHARE})::float8 END)
    FROM probe_hourly h
    LEFT JOIN rollup_dirty d ON d.project = h.project AND d.hour = h.hour
    WHERE h.hour >= $3 AND h.hour < $8 {_PROJECTS.format(col="h.project", n=7)}
      AND (h.hour < $6 OR ({_WHOLE} AND d.project IS NULL))
    GROUP BY h.project"""
_DAILY_TOTALS = f"""
    SELECT project, sum(observed_us::float8), sum(up_us::float8) FROM probe_daily
    WHERE day >= $1 AND day < $2 {_PROJECTS.format(col="project", n=3)} GROUP BY project"""


def _raw_totals(cover: str) -> str:
    return f"""
        SELECT project, (extract(epoch FROM sum(cov)) {_US},
               (extract(epoch FROM coalesce(sum(cov) FILTER (WHERE level <> 'fail'),
                                            interval '0')) {_US}
        FROM ({cover}) c GROUP BY project"""


def _raw_piece(source: str, dirty_only: bool) -> str:
    where = _PROJECTS.format(col="p.project", n=4) + (_DIRTY_ONLY if dirty_only else "")
    return _raw_totals(_cover(source + where, "$2", "$3", "$5::timestamptz", ""))


# Totals of [$2, $3) inside hour $5 for projects $4, keyed by (carry-in from a bucket,
# dirty (project, hour) pairs only).
_RAW_PIECE = {
    (carry, dirty): _raw_piece(_CARRY if carry else _RANGE, dirty)
    for carry in (False, True)
    for dirty in (False, True)
}


class PostgresRollups:
    if TYPE_CHECKING:  # provided by PostgresStore

        def _acquire(self) -> AbstractAsyncContextManager[asyncpg.Connection]: ...

    async def rollup_hours(self, until: datetime) -> int:
        rolled = 0
        async with self._acquire() as conn:
            hours = await conn.fetch(
                "SELECT DISTINCT hour FROM rollup_dirty WHERE hour < $1 ORDER BY hour",
                floor_hour(until),  # hour h is complete when h + 1 h <= until
            )
            for (hour,) in hours:
                # One transaction per hour: short locks, and progress survives a crash.
                async with conn.transaction():
                    marks = await conn.fetch(
                        "SELECT project, gen FROM rollup_dirty WHERE hour = $1", hour
                    )
                    if hour >= await _kept(conn):  # older: raw rows gone, keep the roll-up
                        await conn.execute(_ROLLUP_PROBES, hour, hour + HOUR)
                        await conn.execute(_ROLLUP_DAY, hour, floor_day(hour))
                        await conn.execute(_ROLLUP_METRICS, hour, hour + HOUR)
                        rolled += len(marks)
                    await conn.execute(
                        _CLEAR_MARKS, hour, [m["project"] for m in marks], [m["gen"] for m in marks]
                    )
        return rolled

    async def rollup_buckets(self, until: datetime) -> int:
        async with self._acquire() as conn:
            return await rollup_buckets(conn, until)  # storage.postgres_buckets

    async def apply_retention(
        self, now: datetime, raw_days: float = 7, rollup_days: float = 400
    ) -> dict[str, int]:
        check_retention(raw_days, rollup_days)
        raw_cut = floor_hour(now - timedelta(days=raw_days))
        rollup_cut = floor_day(now - timedelta(days=rollup_days))
        deleted: dict[str, int] = {}
        async with self._acquire() as conn, conn.transaction():
            # FOR UPDATE: concurrent retention runs take turns moving the horizon.
            kept = await conn.fetchval("SELECT raw_kept_from FROM raw_horizon FOR UPDATE")
            first_dirty = await conn.fetchval(_FIRST_DIRTY, kept)
            cut = raw_cut if first_dirty is None else min(raw_cut, first_dirty)
            # Counted in samples, as SQLite counts them: a wide row holds several.
            for table, counted in (("probes", "1"), ("metric_samples", "cardinality(r.names)")):
                # The anti-join spares rows whose mark committed after first_dirty was read.
                deleted[table] = await conn.fetchval(
                    f"WITH gone AS (DELETE FROM {table} r WHERE r.ts < $1 AND NOT EXISTS"
                    " (SELECT 1 FROM rollup_dirty d WHERE d.project = r.project"
                    " AND d.hour >= $2 AND d.hour = date_trunc('hour', r.ts, 'UTC'))"
                    f" RETURNING {counted} AS n) SELECT coalesce(sum(n), 0)::bigint FROM gone",
                    cut,
                    kept,
                )  # fixed names, never input
            # The horizon stays before any such spared hour, or its mark would be dropped.
            first_dirty = await conn.fetchval(_FIRST_DIRTY, kept)
            cut = cut if first_dirty is None else min(cut, first_dirty)
            await conn.execute(
                "UPDATE raw_horizon SET raw_kept_from = greatest(raw_kept_from, $1)", cut
            )
            await delete_buckets(conn)  # a cache of raw rows: not counted in ``deleted``
            for table, column in _ROLLUP_TABLES:
                status = await conn.execute(f"DELETE FROM {table} WHERE {column} < $1", rollup_cut)
                deleted[table] = _count(status)
            marker_cut = now - timedelta(days=MARKER_DAYS)
            for table, column in _MARKER_TABLES:  # fixed names, never input
                status = await conn.execute(f"DELETE FROM {table} WHERE {column} < $1", marker_cut)
                deleted[table] = _count(status)
        return deleted

    async def uptime(
        self, projects: Sequence[str] | None, since: datetime, until: datetime
    ) -> dict[str, float]:
        w = plan_window(since, until)
        if projects is not None and not projects:
            return {}
        names = list(projects) if projects is not None else None
        totals: dict[str, list[float]] = {}
        # One snapshot for every read: a roll-up committing in between would otherwise move
        # an hour from "dirty, read raw" to "clean, read roll-up" under us.
        async with (
            self._acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            # These statements take milliseconds to a few hundred; JIT compiling them costs
            # some 30 ms each and wins nothing back.
            await conn.execute("SET LOCAL jit = off")
            kept = await _kept(conn)
            d1, dz = day_range(w, await conn.fetchval(_FIRST_DIRTY, kept))
            if d1 < dz:
                add_totals(totals, await conn.fetch(_DAILY_TOTALS, d1, dz, names))
            for rlo, rhi in ((floor_hour(w.since), d1), (dz, w.until)):  # around the days
                if rlo < rhi:
                    rows = await conn.fetch(
                        _ROLLUP_TOTALS,
                        w.since,
                        w.until,
                        rlo,
                        w.whole_from,
                        w.whole_to,
                        kept,
                        names,
                        rhi,
                    )
                    add_totals(totals, rows)
            # Whole hours not rolled up yet, then the edges at or after the horizon (older
            # ones came from the roll-ups above, scaled): 5-minute buckets where clean,
            # raw probes for stale buckets and pieces shorter than a bucket.
            lo = max(w.whole_from, kept)
            parts = [(lo, w.whole_to, True)] if lo < w.whole_to else []
            parts += [(a, b, False) for a, b in w.edges if floor_hour(a) >= kept]
            for part_lo, part_hi, dirty_only in parts:
                pieces = await add_bucket_totals(
                    conn, totals, part_lo, part_hi, names, dirty_hours_only=dirty_only
                )
                for piece_lo, piece_hi, before in pieces:
                    sql = _RAW_PIECE[before is not None, dirty_only]
                    start = scan_from(piece_lo) if before is None else before
                    rows = await conn.fetch(
                        sql, start, piece_lo, piece_hi, names, floor_hour(piece_lo)
                    )
                    add_totals(totals, rows)
        return uptime_percent(totals)

    async def downtime(self, project: str, since: datetime, until: datetime) -> float:
        async with self._acquire() as conn:
            seconds = await conn.fetchval(
                "SELECT extract(epoch FROM sum(greatest(interval '0',"
                " least(coalesce(resolved_at, $3), $3) - greatest(opened_at, $2))))::float8"
                " FROM incidents WHERE project = $1 AND condition = 'down'"
                " AND opened_at < $3 AND (resolved_at IS NULL OR resolved_at > $2)",
                project,
                check_aware(since),
                check_aware(until),
            )
        return float(seconds or 0.0)

    async def mttr(self, project: str, since: datetime, until: datetime) -> float | None:
        async with self._acquire() as conn:
            mean = await conn.fetchval(
                "SELECT avg(duration_s) FROM incidents WHERE project = $1 AND condition = 'down'"
                " AND state = 'resolved' AND resolved_at >= $2 AND resolved_at < $3",
                project,
                check_aware(since),
                check_aware(until),
            )
        return None if mean is None else float(mean)

    async def probe_hours(self, project: str, since: datetime, until: datetime) -> list[ProbeHour]:
        rows = await self._rows(
            "SELECT project, hour, probes, failed, observed_us, up_us, latency_avg_ms,"
            " latency_max_ms FROM probe_hourly WHERE project = $1 AND hour >= $2"
            " AND hour < $3 ORDER BY hour",
            project,
            check_aware(since),
            check_aware(until),
        )
        return [probe_hour_from_row(r, TIME) for r in rows]

    async def metric_hours(
        self, project: str, metric: str, since: datetime, until: datetime
    ) -> list[MetricHour]:
        rows = await self._rows(
            "SELECT project, metric, hour, n, min, avg, max FROM metric_hourly"
            " WHERE project = $1 AND metric = $2 AND hour >= $3 AND hour < $4 ORDER BY hour",
            project,
            metric,
            check_aware(since),
            check_aware(until),
        )
        return [metric_hour_from_row(r, TIME) for r in rows]

    async def _rows(self, sql: str, *params: Any) -> list[asyncpg.Record]:
        async with self._acquire() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *params)
        return rows


async def mark_dirty(conn: asyncpg.Connection, stamps: Iterable[tuple[str, datetime]]) -> None:
    """Inside the writing transaction: mark the (project, hour) of each (project, ts).
    Sorted, so two writers lock shared marks in the same order and cannot deadlock."""
    # Dedupe (project, ts) first: a batch holds many samples per probe and few distinct
    # timestamps, and floor_hour per row was a quarter of the ingest cost.
    pairs = sorted({(project, floor_hour(ts)) for project, ts in set(stamps)})
    if pairs:
        await conn.execute(
            "INSERT INTO rollup_dirty (project, hour)"
            " SELECT * FROM unnest($1::text[], $2::timestamptz[])"
            " ON CONFLICT (project, hour) DO UPDATE SET gen = rollup_dirty.gen + 1",
            [p for p, _ in pairs],
            [h for _, h in pairs],
        )


_FIRST_DIRTY = "SELECT min(hour) FROM rollup_dirty WHERE hour >= $1"
_MARKER_TABLES = (("consumed_events", "consumed_at"), ("job_runs", "claimed_at"))
_ROLLUP_TABLES = (("probe_hourly", "hour"), ("probe_daily", "day"), ("metric_hourly", "hour"))


async def _kept(conn: asyncpg.Connection) -> datetime:
    kept: datetime = await conn.fetchval("SELECT raw_kept_from FROM raw_horizon")
    return kept


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])  # "DELETE 42"
