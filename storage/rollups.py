"""Hourly roll-ups, retention and availability: the definitions every store implements.

What "up" means (the digest repeats this for users)
----------------------------------------------------
Uptime is *time-weighted*, not a share of probes.  Each probe's verdict holds from its
timestamp until the next probe of the same project, but for at most ``MAX_HOLD`` (5 min)
and never past the end of the UTC hour the probe falls in.  That span is the probe's
*observed* time; it is *up* time unless the probe failed (``warn`` counts as up, like
``ProbeResult.ok``).  For a window ``[since, until)`` the spans are clipped to the window
and

    uptime % = 100 × Σ up time / Σ observed time.

Why time-weighted: after a failed probe the monitor rechecks after 1 s instead of the
10 s interval, so counting probes would make a 2-second blip weigh like 30 s of outage;
weighting by time gives each verdict the time it actually stood for.  Why the cap: a gap
longer than 5 min (orch itself down, a paused monitor) is *unobserved* and counts neither
way, instead of stretching the last verdict over it.  Why the hour cut: it makes every
hour self-contained, so an hourly roll-up is exact, re-computable from that hour's rows
alone, and a late row touches one hour only.  It loses at most one probe interval of
observed time per hour (the stretch before the hour's first probe), never up or down
time in proportion, so the ratio is unaffected for any regular probing.  A project with
no observed time in the window has no uptime at all (it is left out, not 0 % or 100 %).

Roll-ups and the raw horizon
----------------------------
``probe_hourly`` holds per (project, hour): probes, failed probes, observed and up time
(integer microseconds, so sums are exact and a roll-up equals the raw computation to the
bit), and the latency mean/max of the non-failed probes (a timeout's latency says nothing
about the service's speed).  ``metric_hourly`` holds per (project, metric, hour) the
count, min, mean and max of the *finite* samples (NaN and ±inf are skipped).
``probe_daily`` holds the sums of ``probe_hourly`` per (project, UTC day), kept equal to
them in the same transaction, so a 30-day question reads 30 rows per project, not 720.

Every write of raw rows marks its (project, hour) pairs dirty in the same transaction;
``rollup_hours`` recomputes dirty hours that are complete and clears their marks, so it is
idempotent and a late row re-computes its hour (never lost, never counted twice).
Retention deletes raw rows of whole hours older than ``raw_days`` that are not dirty and
records the boundary, the *raw horizon*: raw data is complete from there on.  Roll-ups go
by whole UTC days older than ``rollup_days`` (hourly and daily rows leave together).  A row that
arrives for an hour older than the horizon cannot be reconciled (the hour's other rows are
gone): its mark is dropped, the roll-up is kept as it was and retention deletes the row.

``uptime`` reads: daily sums for whole days of the window before the first dirty hour;
hourly roll-ups for the other whole hours that are rolled up and clean; raw rows for dirty
hours and for the partial hours at the window's edges; and, for a partial edge hour older
than the horizon, its roll-up scaled by the share of the hour inside the window (assuming
the hour was uniform).  Its cost is a row per day and project, up to two days of hourly
rows, and the raw rows not rolled up yet (the current hour, and the last one until the
job has run), whatever the history's length.  PostgreSQL also keeps each probe's span
clipped to 5-minute buckets (``storage.postgres_buckets``, rolled up every minute by
``rollup_buckets``) and reads dirty hours and partial edge hours from those, leaving raw
only the buckets not rolled up yet and the pieces shorter than a bucket: the same
answers, to the bit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from storage.base import ProbeRecord

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
HOUR_US = 3_600_000_000
MAX_HOLD = timedelta(minutes=5)
MAX_HOLD_US = 300_000_000
# The horizon before any retention ran: raw data is complete from the epoch on.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def check_aware(dt: datetime) -> datetime:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"naive datetime {dt.isoformat()}: the store takes timezone-aware UTC")
    return dt.astimezone(UTC)


def floor_hour(dt: datetime) -> datetime:
    dt = check_aware(dt)
    return dt.replace(minute=0, second=0, microsecond=0)


def ceil_hour(dt: datetime) -> datetime:
    floor = floor_hour(dt)
    return floor if floor == dt else floor + HOUR


def floor_day(dt: datetime) -> datetime:
    return floor_hour(dt).replace(hour=0)


def ceil_day(dt: datetime) -> datetime:
    floor = floor_day(dt)
    return floor if floor == dt else floor + DAY


def scan_from(lo: datetime) -> datetime:
    """The earliest probe that can cover time at or after ``lo``: none before the hour, and
    none more than ``MAX_HOLD`` earlier (its span ends before ``lo``)."""
    return max(floor_hour(lo), lo - MAX_HOLD)


# Bookkeeping rows, pruned by retention after this long: markers of events a role
# handled (a redelivery comes within minutes; these only need to outlive it) and claims
# of once-per-hour/day jobs (only the current period's matters; /agents reads 8 days).
MARKER_DAYS = 30


def check_retention(raw_days: float, rollup_days: float) -> None:
    # Roll-ups must outlive raw rows: a whole, clean hour is read from its roll-up only.
    if not 0 < raw_days <= rollup_days:
        raise ValueError(
            f"need 0 < raw_days <= rollup_days, got raw_days={raw_days}, rollup_days={rollup_days}"
        )


@dataclass(frozen=True, slots=True)
class Window:
    """``[since, until)`` split into whole hours ``[whole_from, whole_to)`` (empty when
    ``whole_from >= whole_to``) and at most two partial edge pieces, each inside one hour."""

    since: datetime
    until: datetime
    whole_from: datetime
    whole_to: datetime
    edges: tuple[tuple[datetime, datetime], ...]


def plan_window(since: datetime, until: datetime) -> Window:
    since, until = check_aware(since), check_aware(until)
    if since > until:
        raise ValueError(f"since {since.isoformat()} is after until {until.isoformat()}")
    first, last = ceil_hour(since), floor_hour(until)
    edges: list[tuple[datetime, datetime]] = []
    if since < min(first, until):
        edges.append((since, min(first, until)))
    if last >= first and last < until:  # a boundary lies inside: the tail is its own piece
        edges.append((last, until))
    return Window(since, until, first, last, tuple(edges))


def day_range(w: Window, first_dirty: datetime | None) -> tuple[datetime, datetime]:
    """Whole UTC days ``[d1, dz)`` inside the window's whole hours and before the first dirty
    hour, to read from ``probe_daily`` (a day's sum is only as fresh as its hours).  The
    caller reads hourly roll-ups for ``[floor_hour(since), d1)`` and ``[dz, until)``; when
    there is no such day, ``d1 == dz == floor_hour(since)`` so those two cover everything."""
    end = w.whole_to if first_dirty is None else min(w.whole_to, first_dirty)
    d1, dz = ceil_day(w.whole_from), floor_day(end)
    if d1 >= dz:
        first = floor_hour(w.since)
        return first, first
    return d1, dz


def uptime_percent(totals: dict[str, list[float]]) -> dict[str, float]:
    """``{project: [observed, up]}`` (any unit) -> uptime % for projects observed at all."""
    return {p: 100.0 * up / observed for p, (observed, up) in totals.items() if observed > 0}


def add_totals(totals: dict[str, list[float]], rows: Iterable[Sequence[object]]) -> None:
    """Accumulate ``(project, observed, up)`` rows (numbers of any numeric type)."""
    for project, observed, up in rows:
        entry = totals.setdefault(str(project), [0.0, 0.0])
        entry[0] += float(observed or 0)  # type: ignore[arg-type]
        entry[1] += float(up or 0)  # type: ignore[arg-type]


def reference_coverage(
    probes: Iterable[ProbeRecord], since: datetime, until: datetime
) -> dict[str, tuple[int, int]]:
    """The definition above, straight from raw probes, in Python: ``{project: (observed_us,
    up_us)}`` over ``[since, until)``.  The stores compute the same in SQL; tests compare.
    Ties on ``ts`` keep the given order (the stores' insertion order)."""
    lo, hi = _us(check_aware(since)), _us(check_aware(until))
    streams: dict[tuple[str, int], list[ProbeRecord]] = {}
    for p in probes:
        ts = _us(p.ts)
        streams.setdefault((p.project, ts - ts % HOUR_US), []).append(p)
    out: dict[str, tuple[int, int]] = {}
    for (project, hour), stream in streams.items():
        stream.sort(key=lambda p: p.ts)  # stable: equal timestamps keep insertion order
        times = [_us(p.ts) for p in stream]
        observed = up = 0
        for i, p in enumerate(stream):
            nxt = times[i + 1] if i + 1 < len(times) else hour + HOUR_US
            span = max(0, min(nxt, times[i] + MAX_HOLD_US, hour + HOUR_US, hi) - max(times[i], lo))
            observed += span
            up += 0 if p.level == "fail" else span
        o, u = out.get(project, (0, 0))
        out[project] = (o + observed, u + up)
    return {p: v for p, v in out.items() if v[0] > 0}


def _us(dt: datetime) -> int:
    return (dt - EPOCH) // _US
