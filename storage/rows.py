"""Rows -> records, shared by both stores, and the argument checks both make alike.

The SQLite and PostgreSQL stores select the same columns in the same order for every
record; they differ only in how a row holds an instant (INTEGER microseconds in SQLite,
``timestamptz`` in PostgreSQL).  Each backend passes its ``TimeCodec``; the rest of the
decoding is here, once.  SQL text stays with each backend: the dialects differ.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agents.events import Event
from storage.autonomy_store import Approval
from storage.base import Incident, MetricHour, ProbeHour, ProbeRecord
from storage.budget_store import Analysis, NewAnalysis, Suspension
from storage.operations_store import ActionRequest, Silence
from storage.slack_store import SlackOutboxRow, SlackStorm


@dataclass(frozen=True, slots=True)
class TimeCodec:
    """How one backend's rows hold an instant: ``decode`` gives an aware UTC datetime."""

    decode: Callable[[Any], datetime]

    def decode_opt(self, value: Any) -> datetime | None:
        return None if value is None else self.decode(value)


# -- argument checks -------------------------------------------------------------------


def check_limit(limit: int) -> int:
    # SQLite reads a negative LIMIT as "no limit"; PostgreSQL rejects it with its own
    # error.  Refuse it here so a caller's bug is the same ValueError on both backends,
    # raised before any round trip.
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    return limit


def open_incident_params(incident: Incident, encode: Callable[[datetime], Any]) -> tuple[Any, ...]:
    """``open_incident``'s INSERT parameters (id ... summary, opened_at encoded), once the
    incident is checked to be open and unresolved."""
    if incident.state != "open" or incident.resolved_at is not None:
        raise ValueError("open_incident takes an open incident (state='open', unresolved)")
    i = incident
    return (i.id, i.fingerprint, i.project, i.condition, i.severity, i.summary,
            encode(i.opened_at), i.caused_by)  # fmt: skip


# -- the store's core records ----------------------------------------------------------


def probe_from_row(row: Any, t: TimeCodec) -> ProbeRecord:
    project, ts, level, latency_ms, reason, http_status, probe = row
    return ProbeRecord(project, t.decode(ts), level, latency_ms, reason, http_status, probe)


def event_from_row(row: Any, t: TimeCodec) -> Event:
    event_id, type_, ts, source, project, incident_id, payload = row
    return Event(
        id=event_id,
        type=type_,
        ts=t.decode(ts),
        source=source,
        project=project,
        incident_id=incident_id,
        payload=json.loads(payload),
    )


def incident_from_row(row: Any, t: TimeCodec) -> Incident:
    (id_, fingerprint, project, condition, severity, summary, state, opened, resolved, dur,
     caused_by) = row  # fmt: skip
    return Incident(
        id=id_,
        fingerprint=fingerprint,
        project=project,
        condition=condition,
        severity=severity,
        summary=summary,
        opened_at=t.decode(opened),
        state=state,
        resolved_at=t.decode_opt(resolved),
        duration_s=dur,
        caused_by=caused_by,
    )


# -- roll-ups --------------------------------------------------------------------------


def probe_hour_from_row(r: Any, t: TimeCodec) -> ProbeHour:
    # observed/up are stored as integer microseconds on both backends.
    return ProbeHour(r[0], t.decode(r[1]), r[2], r[3], r[4] / 1e6, r[5] / 1e6, r[6], r[7])


def metric_hour_from_row(r: Any, t: TimeCodec) -> MetricHour:
    return MetricHour(r[0], r[1], t.decode(r[2]), r[3], r[4], r[5], r[6])


# -- operations, autonomy, budget ------------------------------------------------------


def silence_from_row(row: Any, t: TimeCodec) -> Silence:
    id_, project, starts, ends, reason, by, ended, ended_by = row
    return Silence(id_, project, t.decode(starts), t.decode(ends), reason, by,
                   t.decode_opt(ended), ended_by)  # fmt: skip


def action_from_row(row: Any, t: TimeCodec) -> ActionRequest:
    """Columns in ActionRequest's order (``storage.execution_store.action_columns``)."""
    (id_, project, action, by, reason, state, needs, created, incident_id, origin, outcome,
     error, executor, started, finished) = row  # fmt: skip
    return ActionRequest(id_, project, action, by, reason, state, bool(needs), t.decode(created),
                         incident_id, origin, outcome, error, executor, t.decode_opt(started),
                         t.decode_opt(finished))  # fmt: skip


def approval_from_row(row: Any, t: TimeCodec) -> Approval:
    # The first 11 columns: a caller may select more after them (PostgreSQL's "is it due").
    id_, action_id, project, action, by, reason, state, expires, created, dby, dat = row[:11]
    return Approval(id_, action_id, project, action, by, reason, state, t.decode(expires),
                    t.decode(created), dby, t.decode_opt(dat))  # fmt: skip


def suspension_from_row(row: Any, t: TimeCodec) -> Suspension:
    project, reason, by, since, until = row
    return Suspension(project, reason, by, t.decode(since), t.decode_opt(until))


def analysis_from_row(row: Any, t: TimeCodec) -> Analysis:
    id_, created, *fields = row
    fields[7] = json.loads(fields[7])  # payload
    return Analysis(id_, t.decode(created), NewAnalysis(*fields))


# -- Slack outbox ----------------------------------------------------------------------


def slack_row_from_row(r: Any, t: TimeCodec) -> SlackOutboxRow:
    return SlackOutboxRow(
        id=r[0], channel=r[1], kind=r[2], dedupe_key=r[3], payload=json.loads(r[4]),
        incident_id=r[5], storm_id=r[6], state=r[7], attempts=r[8], order_at=t.decode(r[9]),
        not_before=t.decode(r[10]), created=t.decode(r[11]), sent_at=t.decode_opt(r[12]),
        ts=r[13], last_error=r[14],
    )  # fmt: skip


def slack_storm_from_rows(storm: Any, members: Iterable[Any]) -> SlackStorm:
    """``storm`` is (id, channel, posted_channel, ts); ``members`` the cards' payloads."""
    lines = tuple(json.loads(m[0]).get("line", {}) for m in members)
    sid, channel, posted_channel, ts = storm
    return SlackStorm(sid, channel, posted_channel, ts, lines)
