"""The PostgreSQL store's rows and statements, and the one way to insert events.

Instants go to asyncpg as timezone-aware datetimes (``timestamptz``) and come back as UTC.
A naive datetime is refused before anything is sent: asyncpg would read it as the
client's local time, and SQLite refuses it too, so the two stores agree.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

import asyncpg

from agents.events import Event
from storage.base import MetricSample, ProbeRecord
from storage.rows import TimeCodec

# Key class of the advisory lock that serialises event-inserting transactions (the second
# key is the events table's oid, so separate orch schemas in one database do not contend).
EVENTS_LOCK_CLASS = 0x6F72_6368  # "orch"


def aware(dt: datetime) -> datetime:
    # ``is UTC`` first: the common case costs one comparison (this runs per COPY row).
    if dt.tzinfo is not UTC and (dt.tzinfo is None or dt.utcoffset() is None):
        raise ValueError(f"naive datetime {dt.isoformat()}: the store takes timezone-aware UTC")
    return dt


def check_sample_types(metric: Any, value: Any) -> None:
    """The TypeError asyncpg raised for a wrong type when samples were one column each: an
    array element's error would be a ValueError, and a None would be a NULL element (which
    the table refuses, but only once the batch is on the server)."""
    if not isinstance(metric, str):
        raise TypeError(f"expected str, got {type(metric).__name__}")
    math.isfinite(value)  # float8's encoder takes what this takes: "must be real number"


def as_utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo is UTC else dt.astimezone(UTC)


def opt_utc(dt: datetime | None) -> datetime | None:
    return None if dt is None else as_utc(dt)


# Decodes this store's instants for the shared row decoders of ``storage.rows``.
TIME = TimeCodec(as_utc)


# -- probes and samples ----------------------------------------------------------------

PROBE_COLUMNS = ("project", "ts", "level", "latency_ms", "reason", "http_status", "probe")
# metric_samples holds one row per probe instant: names[i] is the metric of vals[i]
# (migrations/postgres/0008 says why).
SAMPLE_COLUMNS = ("project", "ts", "names", "vals")


# attrgetter builds each row tuple in C: about 3× faster than a Python function per row,
# which matters at COPY rates (hundreds of thousands of rows a second).
_probe_fields = attrgetter(*PROBE_COLUMNS)
_NO_PROJECT: Any = object()  # unequal to every project: the first sample starts a row


def probe_rows(probes: Sequence[ProbeRecord]) -> list[tuple[Any, ...]]:
    """COPY rows in ``PROBE_COLUMNS`` order; ValueError (nothing sent) on a naive ts."""
    rows: list[tuple[Any, ...]] = list(map(_probe_fields, probes))
    for row in rows:
        aware(row[1])
    return rows


def sample_rows(samples: Sequence[MetricSample]) -> list[tuple[Any, ...]]:
    """COPY rows in ``SAMPLE_COLUMNS`` order: consecutive samples of one (project, ts)
    share a row, in their order (NaN is a float8 value as is); a (project, ts) that comes
    back later just starts another row.  ValueError (nothing sent) on a naive ts,
    TypeError on a metric that is no str or a value that is no real number."""
    rows: list[tuple[Any, ...]] = []
    names: list[Any] = []
    vals: list[Any] = []
    project: Any = _NO_PROJECT
    ts: Any = None
    # One pass, no call per well-typed sample: a probe's samples share one datetime object,
    # so the identity test is what usually decides.  Only a sample that starts a row is checked
    # for a naive ts: the others equal its (aware) ts, and no naive datetime equals one.
    for s in samples:
        p, t, m, v = s.project, s.ts, s.metric, s.value
        if m.__class__ is not str or v.__class__ is not float:
            check_sample_types(m, v)
        if (t is not ts or p != project) and not (t == ts and p == project):
            project, ts, names, vals = p, aware(t), [m], [v]
            rows.append((p, t, names, vals))
        else:
            names.append(m)
            vals.append(v)
    return rows


def sample_from_row(row: Any) -> MetricSample:
    """A row of ``SQL.metric_series`` (one sample: project, metric, ts, value)."""
    project, metric, ts, value = row
    return MetricSample(project, as_utc(ts), metric, value)


# -- events ----------------------------------------------------------------------------

EVENT_COLUMNS = "id, type, ts, source, project, incident_id, payload"


def event_row(e: Event) -> tuple[Any, ...]:
    payload = json.dumps(e.payload, separators=(",", ":"), ensure_ascii=False)
    return (e.id, e.type, aware(e.ts), e.source, e.project, e.incident_id, payload)


async def insert_events(conn: asyncpg.Connection, events: Sequence[Event]) -> None:
    """Insert ``events`` (unpublished; a stored id is ignored) inside the caller's
    transaction.  Every event insert in the store goes through here.

    Why the lock: ``seq`` is drawn at INSERT time, but rows become visible at COMMIT.  Two
    transactions T1 (seq 7) and T2 (seq 8) may commit T2 first; a relay reading
    "unpublished ORDER BY seq" in between publishes 8 before 7, out of commit order.
    ``pg_advisory_xact_lock`` makes each event-inserting transaction wait until the
    previous one has committed (or rolled back) before it draws a seq: the lock is released
    only after the commit is visible, so seq order is commit order and every snapshot sees
    a gap-free prefix of the committed seqs.  Callers take it as their last step before
    COMMIT (after any incident row), so the serialised stretch is one insert long and no
    lock-order cycle can form.  The alternatives cost more: SERIALIZABLE retries, or a
    relay that waits out in-flight transactions via ``pg_snapshot_xmin``.
    """
    rows = [event_row(e) for e in events]  # encode first: a bad event sends nothing
    if not rows:
        return
    await conn.execute(SQL.lock_events, EVENTS_LOCK_CLASS)
    await conn.executemany(SQL.insert_event, rows)


# -- incidents -------------------------------------------------------------------------

INCIDENT_COLUMNS = (
    "id, fingerprint, project, condition, severity, summary, state, "
    "opened_at, resolved_at, duration_s, caused_by"
)


# -- statements ------------------------------------------------------------------------


def _where(conditions: list[str]) -> str:
    return f"WHERE {' AND '.join(conditions)}" if conditions else ""


class SQL:
    """Every statement the store runs, next to the column lists the decoders expect."""

    create_schema_migrations = (
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL)"
    )
    # ``'events'::regclass`` resolves through search_path to the very table we insert into.
    lock_events = "SELECT pg_advisory_xact_lock($1, 'events'::regclass::oid::int4)"
    # Ties on ts break by insertion order (id/seq), so equal timestamps stay stable.
    recent_probes = (
        f"SELECT {', '.join(PROBE_COLUMNS)} FROM probes WHERE project = $1"
        " ORDER BY ts DESC, id DESC LIMIT $2"
    )
    # The project's rows since $3 from the (project, ts) index, unnested; equal timestamps
    # keep insertion order: the row's id, then the position in its arrays.
    metric_series = (
        "SELECT s.project, u.metric, s.ts, u.value FROM metric_samples s,"
        " unnest(s.names, s.vals) WITH ORDINALITY AS u(metric, value, i)"
        " WHERE s.project = $1 AND s.ts >= $3 AND u.metric = $2 ORDER BY s.ts, s.id, u.i"
    )
    insert_event = (
        f"INSERT INTO events ({EVENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT (id) DO NOTHING"
    )
    unpublished_events = (
        f"SELECT {EVENT_COLUMNS} FROM events WHERE published_at IS NULL ORDER BY seq LIMIT $1"
    )
    mark_published = (
        "UPDATE events SET published_at = $1 WHERE id = ANY($2::text[]) AND published_at IS NULL"
    )
    open_incident = (
        "INSERT INTO incidents"
        " (id, fingerprint, project, condition, severity, summary, state, opened_at,"
        " caused_by) VALUES ($1, $2, $3, $4, $5, $6, 'open', $7, $8)"
        # The target names the partial index, so an id collision still raises.  A racing
        # open waits for the other transaction and, once it commits, does nothing.
        " ON CONFLICT (fingerprint) WHERE state = 'open' DO NOTHING"
        f" RETURNING {INCIDENT_COLUMNS}"
    )
    update_incident = (
        "UPDATE incidents SET severity = $1, summary = $2"
        f" WHERE fingerprint = $3 AND state = 'open' RETURNING {INCIDENT_COLUMNS}"
    )
    # EXTRACT gives an exact numeric of seconds; numeric -> float8 rounds once, to the same
    # double as timedelta.total_seconds().
    resolve_incident = (
        "UPDATE incidents SET state = 'resolved', resolved_at = $1,"
        " duration_s = EXTRACT(EPOCH FROM ($1 - opened_at))::double precision"
        f" WHERE fingerprint = $2 AND state = 'open' RETURNING {INCIDENT_COLUMNS}"
    )
    get_open_incident = (
        f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE fingerprint = $1 AND state = 'open'"
    )
    claim_event = (
        "INSERT INTO consumed_events (role, event_id, consumed_at) VALUES ($1, $2, $3)"
        " ON CONFLICT DO NOTHING RETURNING true"
    )
    claimed_ids = "SELECT event_id FROM consumed_events WHERE role = $1 AND event_id = ANY($2)"
    # One statement for a whole read batch: claiming one id per round trip saturated
    # below 1,000 events/s on the Redis bus.
    claim_events = (
        "INSERT INTO consumed_events (role, event_id, consumed_at)"
        " SELECT $1, id, $3 FROM unnest($2::text[]) AS t(id)"
        " ON CONFLICT DO NOTHING RETURNING event_id"
    )
    count_rows = (
        "SELECT (SELECT count(*) FROM probes),"
        " (SELECT coalesce(sum(cardinality(names)), 0) FROM metric_samples),"
        " (SELECT count(*) FROM events), (SELECT count(*) FROM incidents)"
    )

    @staticmethod
    def list_events(conditions: list[str], limit_param: str) -> str:
        # The newest ``limit`` (the caller reverses them to oldest first).
        return (
            f"SELECT {EVENT_COLUMNS} FROM events {_where(conditions)}"
            f" ORDER BY ts DESC, seq DESC LIMIT {limit_param}"
        )

    @staticmethod
    def unclaimed_events(conditions: list[str], limit_param: str) -> str:
        # $1 is the role.  Commit order is seq order (see insert_events).
        columns = ", ".join(f"e.{c}" for c in EVENT_COLUMNS.split(", "))
        return (
            f"SELECT {columns} FROM events e {_where(conditions)} AND NOT EXISTS"
            " (SELECT 1 FROM consumed_events c WHERE c.role = $1 AND c.event_id = e.id)"
            f" ORDER BY e.seq LIMIT {limit_param}"
        )

    @staticmethod
    def list_incidents(conditions: list[str], limit_param: str) -> str:
        return (
            f"SELECT {INCIDENT_COLUMNS} FROM incidents {_where(conditions)}"
            f" ORDER BY opened_at DESC, seq DESC LIMIT {limit_param}"
        )
