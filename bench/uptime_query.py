"""Uptime % over 30 days for the whole fleet, with a year of roll-ups behind it.

``python -m bench uptime``.  In a fresh schema (migrated by the real ``PostgresStore``,
dropped at the end) the bench builds what a fleet of ``--projects`` projects polled every
10 s leaves after ``--days`` days:

* ``probe_hourly``: a row per project and hour up to two hours ago, generated inside the
  server (``INSERT ... SELECT`` over ``generate_series``: no row crosses the wire), in
  hour order as the roll-up job writes them.  360 probes an hour, the few seconds before
  the hour's first probe unobserved, failures in a few hours of a few projects.
* ``probe_daily``: the exact sums of those hours per project and UTC day.
* raw ``probes`` for the last complete hour and the current one up to its
  ``max(--minutes)``-th minute, written through ``store.add_probes`` (which marks their
  hours and 5-minute buckets dirty); then the real ``store.rollup_hours`` rolls the
  complete hour up (and rewrites its day), exactly as the hourly job does, leaving the
  current hour dirty.
* the raw horizon ``--raw-days`` (7) back, as retention leaves it.
* ``VACUUM ANALYZE`` of those tables, as autovacuum would have done by then.

"Now" is the current hour plus ``--minutes`` minutes (not the clock's minute, so runs
compare).  Before each window the real bucket job, ``store.rollup_buckets(now -
--job-lag)``, rolls up the buckets that had ended a ``--job-lag`` (1) minute(s) before
now, as the job running every minute leaves them (its time is reported too, and once for
one bucket of the fleet, the job's usual work), then the bucket tables are analysed as
autovacuum would.  Then ``store.uptime(None, since=now - 30 days, until)`` is timed
``--runs`` times (after one run that does not count) for ``until`` = the start of the
current hour, and for ``until`` = now for each of ``--minutes`` (the current hour is then
read from its buckets, plus raw probes for the buckets not rolled up and the last partial
one).  Every answer is checked against an independent computation: the hourly roll-ups
summed straight from ``probe_hourly`` plus ``storage.rollups.reference_coverage`` over
the generated raw probes.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bench.backends import DATABASE_URL, Lines, finish, latency_figures, log, scratch_schema
from bench.ingest import Fleet
from storage.base import ProbeRecord
from storage.postgres import PostgresStore
from storage.postgres_buckets import BUCKET
from storage.postgres_connect import quote_ident
from storage.rollups import DAY, HOUR, floor_day, floor_hour, reference_coverage

GOAL_S = 0.200
WINDOW = timedelta(days=30)
BATCH = 10_000

# One row per project and hour in [$1, $2), hour after hour: $3 projects.  Deterministic
# pseudo-random failures: about 2.5 % of hours have one failed probe, 0.5 % an outage of
# up to 2 minutes of failed probes; each failed probe stands for its 10 s.
_HOURLY = """
    INSERT INTO probe_hourly (project, hour, probes, failed, observed_us, up_us,
                              latency_avg_ms, latency_max_ms)
    SELECT 'project-' || lpad(p::text, 4, '0'), ts, 360, f.failed, o.observed,
           o.observed - f.failed * 10000000::bigint, 20 + p % 50 + x % 10, 60 + p % 50 + x % 300
    FROM generate_series($1::timestamptz, $2::timestamptz - interval '1 hour',
                         interval '1 hour') AS ts
    CROSS JOIN generate_series(0, $3::int - 1) AS p
    CROSS JOIN LATERAL (SELECT (p::bigint * 1103515245
                                + (extract(epoch FROM ts)::bigint / 3600) * 12345) % 1000
                               AS x) r
    CROSS JOIN LATERAL (SELECT CASE WHEN x < 5 THEN 1 + (x * 37 + p) % 12
                                    WHEN x < 30 THEN 1 ELSE 0 END AS failed) f
    CROSS JOIN LATERAL (SELECT 3600000000::bigint - (p::bigint * 7919) % 10000000
                               AS observed) o"""
_DAILY = """
    INSERT INTO probe_daily (project, day, probes, failed, observed_us, up_us)
    SELECT project, date_trunc('day', hour, 'UTC'), sum(probes), sum(failed),
           sum(observed_us), sum(up_us)
    FROM probe_hourly WHERE hour >= $1 AND hour < $2
    GROUP BY 1, 2"""
# The independent answer for the hours before $3: every hour overlapping [$1, $3) straight
# from probe_hourly, a partial one scaled by its share inside the window.
_EXPECTED = """
    SELECT project,
           sum(observed_us * (extract(epoch FROM least(hour + interval '1 hour', $2)
                                                 - greatest(hour, $1)) / 3600)),
           sum(up_us * (extract(epoch FROM least(hour + interval '1 hour', $2)
                                           - greatest(hour, $1)) / 3600))
    FROM probe_hourly WHERE hour > $1 - interval '1 hour' AND hour < $2
    GROUP BY project"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--projects", type=int, default=1000, help="projects (default 1,000)")
    parser.add_argument("--days", type=int, help="days of roll-ups (default 365)")
    parser.add_argument("--runs", type=int, help="timed runs per window (default 9)")
    parser.add_argument(
        "--minutes",
        type=int,
        nargs="+",
        help="minutes into the current hour that 'now' is, one window each (default 30 59)",
    )
    parser.add_argument(
        "--raw-days", type=int, default=7, help="raw horizon, days back (default 7)"
    )
    parser.add_argument(
        "--job-lag",
        type=float,
        default=1.0,
        help="minutes before 'now' that the bucket job last ran (default 1)",
    )


def finish_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.days is None:
        args.days = 40 if args.quick else 365
    if args.runs is None:
        args.runs = 3 if args.quick else 9
    if args.minutes is None:
        args.minutes = [30, 59]
    if args.projects < 1 or args.runs < 1 or args.days < 32:
        parser.error("--projects and --runs must be positive, --days at least 32")
    if not all(1 <= m <= 59 for m in args.minutes):
        parser.error("--minutes must be within 1..59")
    if not 1 <= args.raw_days < WINDOW.days:
        parser.error(f"--raw-days must be within 1..{WINDOW.days - 1}")
    if not 0 <= args.job_lag <= 60:
        parser.error("--job-lag must be within 0..60 minutes")


def budget(args: argparse.Namespace) -> float:
    # Building dominates: about 10 s per 1,000 projects and 30 days here; generous.
    build = 60 + args.projects / 1000 * args.days / 30 * 40
    return 120 + build + (1 + len(args.minutes)) * (args.runs + 1) * 5


class Build:
    """The schema's contents and what the bench needs to check answers."""

    def __init__(self, hour0: datetime, until_raw: datetime) -> None:
        self.hour0 = hour0  # the current hour
        self.until_raw = until_raw  # raw probes exist up to here
        self.current: list[ProbeRecord] = []  # raw probes of the current hour
        self.seconds: dict[str, float] = {}
        self.rows: dict[str, int] = {}


async def build(store: PostgresStore, conn: asyncpg.Connection, args: argparse.Namespace) -> Build:
    hour0 = floor_hour(datetime.now(UTC))
    prev = hour0 - HOUR
    data = Build(hour0, hour0 + timedelta(minutes=max(args.minutes)))
    start = floor_day(hour0) - args.days * DAY

    t0 = time.perf_counter()
    chunk = 30 * DAY  # whole days, so each chunk's days are complete for probe_daily
    lo = start
    while lo < prev:
        hi = min(lo + chunk, prev)
        await conn.execute(_HOURLY, lo, hi, args.projects)
        await conn.execute(_DAILY, lo, hi)
        lo = hi
        done = (lo - start) / (prev - start)
        log(f"uptime: roll-ups {done * 100:3.0f} % ({lo:%Y-%m-%d})")
    data.seconds["rollups"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    fleet = Fleet(args.projects, prev)
    raw = 0
    while True:
        batch = [p for p in fleet.probes(BATCH) if p.ts < data.until_raw]
        if not batch:
            break
        await store.add_probes(batch)
        data.current.extend(p for p in batch if p.ts >= hour0)
        raw += len(batch)
    data.seconds["raw_probes"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rolled = await store.rollup_hours(hour0)  # the last complete hour, as the job does
    data.seconds["rollup_job"] = time.perf_counter() - t0
    await conn.execute("UPDATE raw_horizon SET raw_kept_from = $1", hour0 - args.raw_days * DAY)
    t0 = time.perf_counter()
    await conn.execute(
        "VACUUM ANALYZE probe_hourly, probe_daily, probes, rollup_dirty, raw_horizon,"
        " probe_bucket, bucket_dirty"
    )
    data.seconds["vacuum"] = time.perf_counter() - t0
    for table in ("probe_hourly", "probe_daily", "probes", "rollup_dirty", "bucket_dirty"):
        data.rows[table] = await conn.fetchval(f"SELECT count(*) FROM {table}")
    data.rows["rolled_up_by_job"] = rolled
    size = await conn.fetchval(
        "SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND c.relkind = 'r'"
    )
    log(
        f"uptime: built in {sum(data.seconds.values()):.0f} s "
        f"({', '.join(f'{k} {v:.1f} s' for k, v in data.seconds.items())}): "
        f"{data.rows} raw probes written {raw:,}, schema {size}"
    )
    return data


async def bucket_job(
    store: PostgresStore, conn: asyncpg.Connection, data: Build, until: datetime, key: str
) -> None:
    """The real bucket job up to ``until``, timed, then ANALYZE of the bucket tables (in
    production autovacuum does it: the marks table changes all the time)."""
    t0 = time.perf_counter()
    data.rows[f"buckets_rolled_up_{key}"] = await store.rollup_buckets(until)
    data.seconds[f"bucket_job_{key}"] = time.perf_counter() - t0
    await conn.execute("ANALYZE probe_bucket, bucket_dirty")


async def expected(
    conn: asyncpg.Connection, data: Build, since: datetime, until: datetime
) -> dict[str, float]:
    """Uptime % computed without the store: hourly roll-ups, then raw coverage."""
    whole = min(until, data.hour0)
    totals = {r[0]: [float(r[1]), float(r[2])] for r in await conn.fetch(_EXPECTED, since, whole)}
    if until > data.hour0:
        for project, (observed, up) in reference_coverage(data.current, data.hour0, until).items():
            entry = totals.setdefault(project, [0.0, 0.0])
            entry[0] += observed
            entry[1] += up
    return {p: 100.0 * up / obs for p, (obs, up) in totals.items() if obs > 0}


async def run(args: argparse.Namespace, lines: Lines) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with scratch_schema("uptime") as schema:
        store = PostgresStore(DATABASE_URL, schema=schema, max_size=2)
        await store.open()
        conn = await asyncpg.connect(
            DATABASE_URL, server_settings={"search_path": quote_ident(schema)}
        )
        try:
            data = await build(store, conn, args)
            windows = [("hour", data.hour0 + timedelta(minutes=args.minutes[0]), data.hour0)]
            for minute in sorted(args.minutes):
                now = data.hour0 + timedelta(minutes=minute)
                windows.append((f"minute_{minute}", now, now))
            lag = timedelta(minutes=args.job_lag)
            if min(now for _, now, _ in windows) - lag >= data.hour0 + 2 * BUCKET:
                # The last hour's buckets and the first of this one; then what a run
                # usually does: the bucket that just ended, for the whole fleet.
                await bucket_job(store, conn, data, data.hour0 + BUCKET, "catch_up")
                await bucket_job(store, conn, data, data.hour0 + 2 * BUCKET, "one_bucket")
            for label, now, until in windows:
                await bucket_job(store, conn, data, now - lag, label)
                since = now - WINDOW
                times = []
                answer: dict[str, float] = {}
                for i in range(args.runs + 1):
                    t0 = time.perf_counter()
                    answer = await store.uptime(None, since, until)
                    elapsed = time.perf_counter() - t0
                    if i == 0:
                        first = elapsed
                    else:
                        times.append(elapsed)
                want = await expected(conn, data, since, until)
                diff = max((abs(answer.get(p, -1e9) - v) for p, v in want.items()), default=0)
                figures = latency_figures(times)
                results[label] = {
                    "since": since.isoformat(),
                    "until": until.isoformat(),
                    "p50_s": figures["p50"],
                    "max_s": figures["max"],
                    "first_s": first,
                    "projects": len(answer),
                    "expected_projects": len(want),
                    "max_abs_diff_pct": diff,
                    "mean_uptime_pct": sum(answer.values()) / max(1, len(answer)),
                }
                log(
                    f"uptime: until {label}: p50 {figures['p50'] * 1000:.1f} ms, "
                    f"max {figures['max'] * 1000:.1f} ms"
                )
        finally:
            await conn.close()
            await finish(store.close())
    for label, r in results.items():
        lines.add(f"uptime.until_{label}.p50", r["p50_s"], "s")
        lines.add(f"uptime.until_{label}.max", r["max_s"], "s")
        lines.add(f"uptime.until_{label}.first", r["first_s"], "s")
        lines.add(f"uptime.until_{label}.projects", r["projects"], "projects")
        lines.add(f"uptime.until_{label}.max_abs_diff", r["max_abs_diff_pct"], "%")
        lines.add(f"uptime.goal.until_{label}.p50_at_most_200ms", r["p50_s"] <= GOAL_S, "bool")
    for key, seconds in data.seconds.items():
        lines.add(f"uptime.build.{key}", seconds, "s")
    lines.add("uptime.build.probe_hourly_rows", data.rows["probe_hourly"], "rows")
    results["build"] = {"seconds": data.seconds, "rows": data.rows}
    return results


def summary(results: dict[str, Any], args: argparse.Namespace) -> str:
    build_info = results["build"]
    rows = [
        f"uptime (30 days, {args.projects:,} projects, {args.days} days of roll-ups = "
        f"{build_info['rows']['probe_hourly']:,} hourly rows; {args.runs} runs, "
        f"after one that does not count):"
    ]
    seconds, rows_built = build_info["seconds"], build_info["rows"]
    if "bucket_job_one_bucket" in seconds:
        rows.append(
            f"  bucket job: {seconds['bucket_job_one_bucket'] * 1000:.0f} ms for one bucket of "
            f"the fleet ({rows_built['buckets_rolled_up_one_bucket']:,} buckets), "
            f"{seconds['bucket_job_catch_up'] * 1000:.0f} ms catching up on "
            f"{rows_built['buckets_rolled_up_catch_up']:,}"
        )
    for label, r in results.items():
        if label == "build":
            continue
        verdict = "met" if r["p50_s"] <= GOAL_S else "MISSED"
        rows.append(
            f"  until {label:>9}: p50 {r['p50_s'] * 1000:7.1f} ms  max {r['max_s'] * 1000:7.1f} ms"
            f"  first {r['first_s'] * 1000:7.1f} ms  {r['projects']} projects, "
            f"mean {r['mean_uptime_pct']:.3f} %  goal ≤ 200 ms: {verdict}"
        )
        if r["projects"] != r["expected_projects"] or r["max_abs_diff_pct"] > 1e-6:
            rows.append(
                f"    WARNING: the answer differs from the independent computation "
                f"({r['projects']} vs {r['expected_projects']} projects, max difference "
                f"{r['max_abs_diff_pct']:.3g} %): the bench or the store is wrong"
            )
    return "\n".join(rows)
