"""The SQLite store's rows: record <-> row conversions, the SQL statements, script splitting.

Instants are stored as INTEGER microseconds since the Unix epoch (UTC).  The conversion is
integer arithmetic on ``timedelta``, so a datetime round-trips exactly (microseconds are
Python's resolution) and always comes back timezone-aware in UTC.  Naive datetimes are
refused rather than guessed at: a naive value is local time to some libraries (asyncpg)
and UTC to others, and the two stores must agree.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

from agents.events import Event
from storage.base import MetricSample, ProbeRecord
from storage.rows import TimeCodec

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_us(dt: datetime) -> int:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"naive datetime {dt.isoformat()}: the store takes timezone-aware UTC")
    return (dt - EPOCH) // _MICROSECOND


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def opt_from_us(us: int | None) -> datetime | None:
    return None if us is None else from_us(us)


# Decodes this store's instants for the shared row decoders of ``storage.rows``.
TIME = TimeCodec(from_us)


# -- probes and samples ----------------------------------------------------------------

PROBE_COLUMNS = "project, ts_us, level, latency_ms, reason, http_status, probe"


def probe_row(p: ProbeRecord) -> tuple[Any, ...]:
    return (p.project, to_us(p.ts), p.level, p.latency_ms, p.reason, p.http_status, p.probe)


SAMPLE_COLUMNS = "project, metric, ts_us, value"


def sample_row(s: MetricSample) -> tuple[Any, ...]:
    # NaN binds as NULL in SQLite anyway; say so explicitly and map it back on reading.
    value = None if math.isnan(s.value) else s.value
    return (s.project, s.metric, to_us(s.ts), value)


def sample_from_row(row: Any) -> MetricSample:
    project, metric, ts_us, value = row
    return MetricSample(project, from_us(ts_us), metric, math.nan if value is None else value)


# -- events ----------------------------------------------------------------------------

EVENT_COLUMNS = "id, type, ts_us, source, project, incident_id, payload"


def event_row(e: Event) -> tuple[Any, ...]:
    payload = json.dumps(e.payload, separators=(",", ":"), ensure_ascii=False)
    return (e.id, e.type, to_us(e.ts), e.source, e.project, e.incident_id, payload)


# -- incidents -------------------------------------------------------------------------

INCIDENT_COLUMNS = (
    "id, fingerprint, project, condition, severity, summary, state, "
    "opened_at_us, resolved_at_us, duration_s, caused_by"
)


# -- statements ------------------------------------------------------------------------


def _where(conditions: list[str]) -> str:
    return f"WHERE {' AND '.join(conditions)}" if conditions else ""


class SQL:
    """Every statement the store runs, next to the column lists the decoders expect."""

    create_schema_migrations = (
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at TEXT NOT NULL)"  # ISO 8601 UTC: bookkeeping for humans, never queried
    )
    insert_probe = f"INSERT INTO probes ({PROBE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
    insert_sample = f"INSERT INTO metric_samples ({SAMPLE_COLUMNS}) VALUES (?, ?, ?, ?)"
    # Ties on ts break by insertion order (id/seq), so equal timestamps stay stable.
    recent_probes = (
        f"SELECT {PROBE_COLUMNS} FROM probes WHERE project = ? ORDER BY ts_us DESC, id DESC LIMIT ?"
    )
    metric_series = (
        f"SELECT {SAMPLE_COLUMNS} FROM metric_samples"
        " WHERE project = ? AND metric = ? AND ts_us >= ? ORDER BY ts_us, id"
    )
    insert_event = (
        f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (id) DO NOTHING"
    )
    unpublished_events = (
        f"SELECT {EVENT_COLUMNS} FROM events WHERE published_at_us IS NULL ORDER BY seq LIMIT ?"
    )
    mark_published = (
        "UPDATE events SET published_at_us = ? WHERE id = ? AND published_at_us IS NULL"
    )
    open_incident = (
        "INSERT INTO incidents"
        " (id, fingerprint, project, condition, severity, summary, state, opened_at_us,"
        " caused_by) VALUES (?, ?, ?, ?, ?, ?, 'open', ?, ?)"
        # The target names the partial index, so an id collision still raises.
        " ON CONFLICT (fingerprint) WHERE state = 'open' DO NOTHING"
        f" RETURNING {INCIDENT_COLUMNS}"
    )
    update_incident = (
        "UPDATE incidents SET severity = ?, summary = ?"
        f" WHERE fingerprint = ? AND state = 'open' RETURNING {INCIDENT_COLUMNS}"
    )
    # Integer microseconds subtract exactly; dividing once gives the same float as
    # timedelta.total_seconds().
    resolve_incident = (
        "UPDATE incidents SET state = 'resolved', resolved_at_us = ?,"
        " duration_s = (? - opened_at_us) / 1000000.0"
        f" WHERE fingerprint = ? AND state = 'open' RETURNING {INCIDENT_COLUMNS}"
    )
    get_open_incident = (
        f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE fingerprint = ? AND state = 'open'"
    )

    @staticmethod
    def list_events(conditions: list[str]) -> str:
        # The newest ``limit`` (the caller reverses them to oldest first).
        return (
            f"SELECT {EVENT_COLUMNS} FROM events {_where(conditions)}"
            " ORDER BY ts_us DESC, seq DESC LIMIT ?"
        )

    @staticmethod
    def list_incidents(conditions: list[str]) -> str:
        return (
            f"SELECT {INCIDENT_COLUMNS} FROM incidents {_where(conditions)}"
            " ORDER BY opened_at_us DESC, rowid DESC LIMIT ?"
        )


# -- scripts ---------------------------------------------------------------------------

_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)


def split_statements(script: str) -> list[str]:
    """Split a SQL script into single statements.

    Python's ``executescript`` commits any open transaction before it runs, so a migration
    cannot be applied atomically with it; instead each statement runs through ``execute``
    inside our own transaction.  ``sqlite3.complete_statement`` decides where a statement
    ends, so semicolons inside string literals and trigger bodies are handled by SQLite's
    own tokenizer, not by a guess.
    """
    statements: list[str] = []
    buf = ""
    pieces = script.split(";")
    for index, piece in enumerate(pieces):
        buf += piece
        if index < len(pieces) - 1:
            buf += ";"
        if sqlite3.complete_statement(buf):
            if _COMMENTS.sub("", buf).strip(" \t\r\n;"):
                statements.append(buf.strip())
            buf = ""
    if _COMMENTS.sub("", buf).strip():
        raise ValueError(f"SQL script ends with an incomplete statement: {buf.strip()[:80]!r}")
    return statements
