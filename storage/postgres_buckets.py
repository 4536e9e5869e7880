"""Five-minute buckets of probe coverage (PostgreSQL): the hours not rolled up yet, cheaply.

``storage.rollups`` defines a probe's span (until the next probe of its project, at most
5 minutes, never past its UTC hour).  ``probe_bucket`` holds, per (project, 5-minute
bucket), those spans *clipped to the bucket* (integer microseconds): buckets sum exactly
to their hour, and a whole bucket inside a window is exact for that window.  ``uptime``
reads them wherever it used to read raw probes (the current hour, whole hours not rolled
up yet, the partial hours at a window's edges), and raw probes only for the buckets that
are stale and for the pieces of a window shorter than a bucket.

What a bucket depends on.  The part of a span inside bucket ``[b, b + 5 min)`` is decided
by the probes with ``ts < b + 5 min`` only: a later probe can end a span only after the
bucket.  So bucket b depends on the probes of b and of the bucket before it (a span lasts
at most 5 minutes: nothing older reaches b), in the same hour.  Conversely a probe at
``ts`` changes spans only inside ``[ts, ts + 5 min)`` (its own, and the one of the probe
before it, now cut at ``ts``): the bucket of ``ts`` and the next one, if that is in the
same hour.  ``mark_buckets`` marks those in ``bucket_dirty``, in the transaction writing
the probes (``add_probes``).  Marks are per bucket, for the whole fleet, not per project:
a batch of probes marks the one to three buckets its timestamps fall in, so a write costs
a few rows, not two per probe (which halved the rate of bulk probe ingest); a bucket is
recomputed for every project anyway, since every project writes into every bucket.

The invariant, for every bucket at or after the raw horizon: **a bucket without a mark has
``probe_bucket`` rows (no row: zero) equal to the definition over the committed probes**.
Readers (one REPEATABLE READ snapshot) use a whole bucket's rows when it has no mark and
read it from raw probes when it has one.  ``rollup_buckets`` makes marked buckets clean:
it recomputes them and deletes their marks with the ``gen`` check of
``storage.postgres_rollups`` (a write that committed meanwhile bumped gen and keeps the
mark; one after the delete re-inserts it), one transaction per hour.  Correctness never
depends on *when* a bucket is rolled up (a probe that comes later marks it again); the
job takes only buckets that have ended (``b + 5 min <= until``), because probes keep
arriving in the open one.  A window's partial bucket (the current one, mid-bucket) is
always read raw, mark or not: its rows count time past the window's end.  A late probe
(or a replica lagging behind) makes its buckets stale for the whole fleet until the next
run: slower for a minute, never wrong.

Buckets are kept as long as the raw rows (retention deletes both before the raw horizon),
so the invariant holds for every bucket at or after the horizon: dirty hours and a window
starting mid-hour are read from buckets too.  Cost: a row per project and 5 minutes of the
raw horizon (2 million rows for 1,000 projects and 7 days, a few per cent of the raw
probes).  Job runs take a transaction-level advisory lock per schema, so replicas running
it at once take turns instead of recomputing the same rows (and their deletes of marks
cannot race on a re-inserted mark's ``gen``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import asyncpg

from storage.rollups import HOUR, MAX_HOLD, add_totals, check_aware, floor_hour

BUCKET = timedelta(minutes=5)
# A bucket depends only on itself and the bucket before it because a span is never
# longer than a bucket; and buckets must tile the hour.
assert BUCKET >= MAX_HOLD and not HOUR % BUCKET
BUCKET_LOCK = 0x6F72_6362  # "orcb", with the schema's hash: one bucket roll-up at a time

_B = "interval '5 minutes'"
_US = "* 1000000)::bigint"  # completes "(extract(epoch FROM <interval>) "

Piece = tuple[datetime, datetime]
# A piece to read raw, and the clean bucket just before it whose rows give each project's
# last earlier probe (None: read the 5 minutes before the piece, or the piece starts an
# hour and nothing earlier counts).
RawPiece = tuple[datetime, datetime, datetime | None]


def floor_bucket(dt: datetime) -> datetime:
    dt = dt if dt.tzinfo is UTC else check_aware(dt)
    return dt.replace(minute=dt.minute - dt.minute % 5, second=0, microsecond=0)


def ceil_bucket(dt: datetime) -> datetime:
    floor = floor_bucket(dt)
    return floor if floor == dt else floor + BUCKET


def split_buckets(lo: datetime, hi: datetime) -> tuple[Piece | None, list[Piece]]:
    """``[lo, hi)`` inside one hour -> the whole buckets ``[b1, b2)`` it holds (None if
    none) and the pieces before and after them, each inside one bucket, to read raw."""
    b1, b2 = ceil_bucket(lo), floor_bucket(hi)
    if b1 >= b2:
        return None, [(lo, hi)] if lo < hi else []
    return (b1, b2), [(a, b) for a, b in ((lo, b1), (b2, hi)) if a < b]


def merge_pieces(pieces: Iterable[Piece]) -> list[Piece]:
    """Sorted, with pieces that touch inside one hour joined (one raw read instead of two
    that would both read the 5 minutes before their start)."""
    out: list[Piece] = []
    for lo, hi in sorted(pieces):
        if out and out[-1][1] == lo and floor_hour(out[-1][0]) == floor_hour(lo):
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


_OBSERVED = f"(extract(epoch FROM sum(cov)) {_US}"
_UP = f"(extract(epoch FROM coalesce(sum(cov) FILTER (WHERE level <> 'fail'), interval '0')) {_US}"

# The job: the buckets $3 (marked; all in one hour) for every project, from the probes
# of [$1, $2) (those buckets and the 5 minutes before each, inside the hour).  The last
# probe's next probe, if after the bucket, would end its span after the bucket anyway;
# that last probe (the one without a next, if inside the bucket) is kept for readers.
_ROLLUP = f"""
    INSERT INTO probe_bucket (project, bucket, probes, failed, observed_us, up_us,
                              last_ts, last_level)
    SELECT project, bucket, count(*) FILTER (WHERE ts >= bucket),
           count(*) FILTER (WHERE ts >= bucket AND level = 'fail'), {_OBSERVED}, {_UP},
           max(ts) FILTER (WHERE last AND ts >= bucket),
           max(level) FILTER (WHERE last AND ts >= bucket)
    FROM (SELECT project, bucket, ts, level, next_ts IS NULL AS last,
                 greatest(interval '0', least(coalesce(next_ts, bucket + {_B}),
                                              ts + {_B}, bucket + {_B})
                                        - greatest(ts, bucket)) AS cov
          FROM (SELECT p.project COLLATE "C" AS project, m.bucket, p.ts, p.level,
                       lead(p.ts) OVER (PARTITION BY p.project COLLATE "C", m.bucket
                                        ORDER BY p.ts, p.id) AS next_ts
                FROM unnest($3::timestamptz[]) AS m (bucket)
                JOIN probes p ON p.ts >= greatest($1, m.bucket - {_B})
                             AND p.ts < m.bucket + {_B}
                WHERE p.ts >= $1 AND p.ts < $2) x) c
    GROUP BY project, bucket ORDER BY project, bucket
    ON CONFLICT (project, bucket) DO UPDATE SET probes = EXCLUDED.probes,
        failed = EXCLUDED.failed, observed_us = EXCLUDED.observed_us, up_us = EXCLUDED.up_us,
        last_ts = EXCLUDED.last_ts, last_level = EXCLUDED.last_level"""
# Deletes the marks whose gen is unchanged, locking them in the writers' order (by
# bucket), so that a writer and the job never wait for each other in a circle.
_CLEAR_MARKS = """
    WITH done AS (SELECT * FROM unnest($1::timestamptz[], $2::bigint[]) AS t(bucket, gen)),
         locked AS (SELECT m.bucket FROM bucket_dirty m JOIN done ON done.bucket = m.bucket
                    ORDER BY m.bucket FOR UPDATE OF m)
    DELETE FROM bucket_dirty m USING done, locked
    WHERE m.bucket = locked.bucket AND m.bucket = done.bucket AND m.gen = done.gen"""

# Readers: the clean buckets of [$1, $2) (projects $3), of every project or only where the
# (project, hour) is dirty, i.e. its hourly roll-up is missing or stale.
_PROJECTS = " AND (b.project = ANY($3::text[]) OR $3::text[] IS NULL)"
_CLEAN = """
    SELECT b.project, sum(b.observed_us::float8), sum(b.up_us::float8)
    FROM probe_bucket b{scope}
    WHERE b.bucket >= $1 AND b.bucket < $2{projects}
      AND NOT EXISTS (SELECT 1 FROM bucket_dirty x WHERE x.bucket = b.bucket)
    GROUP BY b.project"""
_CLEAN_ALL = _CLEAN.format(scope="", projects=_PROJECTS)
_CLEAN_DIRTY_HOURS = _CLEAN.format(
    scope=" JOIN rollup_dirty d ON d.project = b.project AND d.hour >= $1 AND d.hour < $2"
    " AND b.bucket >= d.hour AND b.bucket < d.hour + interval '1 hour'",
    projects=_PROJECTS,
)


async def add_bucket_totals(
    conn: asyncpg.Connection,
    totals: dict[str, list[float]],
    lo: datetime,
    hi: datetime,
    names: list[str] | None,
    *,
    dirty_hours_only: bool,
) -> list[RawPiece]:
    """Add the observed and up time of the clean whole buckets inside ``[lo, hi)`` to
    ``totals`` and return the rest, to be read from raw probes: the stale buckets and the
    pieces shorter than a bucket (merged, each inside one hour).  Of every project with
    ``[lo, hi)`` inside one hour (a window's edge); or, with ``dirty_hours_only`` and
    whole hours, of the (project, hour) pairs that are dirty (their raw pieces must be
    read for those pairs only).  Inside the reader's snapshot, at or after the horizon."""
    whole: Piece | None = (lo, hi)
    pieces: list[Piece] = []
    if not dirty_hours_only:
        whole, pieces = split_buckets(lo, hi)
    stale: set[datetime] = set()
    if whole is not None:
        sql = _CLEAN_DIRTY_HOURS if dirty_hours_only else _CLEAN_ALL
        add_totals(totals, await conn.fetch(sql, *whole, names))
        rows = await conn.fetch(  # from the bucket before: carry-ins come from there
            "SELECT bucket FROM bucket_dirty WHERE bucket >= $1 AND bucket < $2",
            whole[0] - BUCKET,
            whole[1],
        )
        stale = {r["bucket"] for r in rows}
        pieces += [(b, b + BUCKET) for b in stale if b >= whole[0]]
    out: list[RawPiece] = []
    for piece_lo, piece_hi in merge_pieces(pieces):
        before = piece_lo - BUCKET
        clean_before = (
            whole is not None
            and whole[0] <= piece_lo <= whole[1]  # a bucket boundary inside the buckets read
            and floor_hour(before) == floor_hour(piece_lo)
            and before not in stale
        )
        out.append((piece_lo, piece_hi, before if clean_before else None))
    return out


async def rollup_buckets(conn: asyncpg.Connection, until: datetime) -> int:
    """Recompute the marked buckets that ended by ``until`` for every project and clear
    their marks; return how many (project, bucket) rows were written.  Newest hour first
    (after a backlog, the current hour is what readers need); a transaction per hour."""
    done_to = floor_bucket(until)  # bucket b has ended when b + 5 min <= until
    hours = await conn.fetch(
        "SELECT DISTINCT date_trunc('hour', bucket, 'UTC') AS hour FROM bucket_dirty"
        " WHERE bucket < $1 ORDER BY hour DESC",
        done_to,
    )
    written = 0
    for (hour,) in hours:
        async with conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))", BUCKET_LOCK
            )
            await conn.execute("SET LOCAL jit = off")  # milliseconds of work, not 30 ms JIT
            marks = await conn.fetch(
                "SELECT bucket, gen FROM bucket_dirty WHERE bucket >= $1 AND bucket < $2"
                " ORDER BY bucket",
                hour,
                min(hour + HOUR, done_to),
            )
            if not marks:
                continue  # another replica rolled them up meanwhile
            buckets = [m["bucket"] for m in marks]
            kept = await conn.fetchval("SELECT raw_kept_from FROM raw_horizon")
            if hour >= kept:  # older: raw rows gone, never read from buckets
                scan = max(hour, buckets[0] - BUCKET)
                status = await conn.execute(_ROLLUP, scan, buckets[-1] + BUCKET, buckets)
                written += int(status.rsplit(" ", 1)[-1])  # "INSERT 0 42"
            await conn.execute(_CLEAR_MARKS, buckets, [m["gen"] for m in marks])
    return written


async def mark_buckets(conn: asyncpg.Connection, times: Iterable[datetime]) -> None:
    """Inside the transaction writing probes at ``times``: mark the buckets they change,
    the bucket of each and the next one in the same hour.  Sorted, so writers (and the
    job's delete) lock shared marks in one order and cannot deadlock; this upsert should
    come last before the commit, as every writer takes these few rows."""
    times = list(times)
    if not times:
        return
    first, last = floor_bucket(min(times)), floor_bucket(max(times))
    # Nearly every batch falls inside one bucket: no per-row work then.
    buckets = {first} if first == last else {floor_bucket(t) for t in times}
    marks = buckets | {b + BUCKET for b in buckets if (b + BUCKET).minute}  # same hour
    await conn.execute(
        "INSERT INTO bucket_dirty (bucket) SELECT * FROM unnest($1::timestamptz[])"
        " ON CONFLICT (bucket) DO UPDATE SET gen = bucket_dirty.gen + 1",
        sorted(marks),
    )


async def delete_buckets(conn: asyncpg.Connection) -> None:
    """Retention, in its transaction after it moved the raw horizon: buckets before it
    are never read (their hours come from roll-ups), and their raw rows are gone."""
    await conn.execute(
        "DELETE FROM probe_bucket WHERE bucket < (SELECT raw_kept_from FROM raw_horizon)"
    )
