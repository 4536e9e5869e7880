"""The PostgreSQL side of ``storage.operations_store``: silences, acks and action requests
shared by replicas.

A mixin of ``PostgresStore`` (it needs ``_acquire`` and ``transaction``).  "Now" is the
server's ``now()``, the same instant for every statement of one transaction.  Every
change ends with ``insert_events`` inside the same ``transaction()`` (the events lock is
taken last, so the serialised stretch stays one insert long).

Races between replicas:

- Silences of one project take a transaction-scoped advisory lock keyed on the project
  first, so "close the open row, insert the new one" and "end the active one" run one at a
  time per project: no unique-index violation for two simultaneous ``/orch silence``, and
  an unsilence never misses a silence committed just before it.
- ``ack_incident`` locks the incident rows it chose (``FOR UPDATE``): a second ack of the
  same incident waits and then sees the first one's ``acked_by`` (the same person acking
  twice writes once).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from storage.base import EventFor, Incident
from storage.execution_store import action_columns, check_origin
from storage.operations_store import (
    REQUESTED,
    ActionEventFor,
    ActionRequest,
    AmbiguousIncident,
    AuditFor,
    IncidentAck,
    Silence,
    SilenceEventFor,
    check_ref,
    is_id_prefix,
)
from storage.postgres_autonomy import INSERT_AUDIT, audit_args
from storage.postgres_sql import INCIDENT_COLUMNS, TIME, as_utc, aware, insert_events
from storage.rows import action_from_row, check_limit, incident_from_row, silence_from_row

_SILENCE = "id, project, starts_at, ends_at, reason, created_by, ended_at, ended_by"
_ACTION = action_columns("")
# $1 is the instant asked about; NULL asks about the server's now().
_AT = "coalesce($1::timestamptz, now())"
_ACTIVE = f"starts_at <= {_AT} AND ends_at > {_AT} AND (ended_at IS NULL OR ended_at > {_AT})"
# Key 1 is the table's oid (separate orch schemas in one database do not contend), key 2
# the project's hash; a hash collision only makes two projects wait for each other.
_LOCK_PROJECT = "SELECT pg_advisory_xact_lock('silences'::regclass::oid::int4, hashtext($1))"
# Closing the open row: at now if it is still running (then $2 replaced it), else at its
# own end, where it ran out by itself.
_CLOSE_OPEN = """
    UPDATE silences
    SET ended_by = CASE WHEN ends_at > now() THEN $2 END, ended_at = least(ends_at, now())
    WHERE project = $1 AND ended_at IS NULL"""
_INSERT_SILENCE = f"""
    INSERT INTO silences ({_SILENCE})
    VALUES ($1, $2, now(), $3, $4, $5, NULL, NULL) RETURNING {_SILENCE}"""
_END_SILENCE = f"""
    UPDATE silences SET ended_at = now(), ended_by = $2
    WHERE project = $1 AND ended_at IS NULL
      AND starts_at <= now() AND ends_at > now() RETURNING {_SILENCE}"""
# Exact matches (id or fingerprint) sort first; a prefix counts only for hex references.
_FIND_OPEN = f"""
    SELECT {INCIDENT_COLUMNS}, acked_by, (id = $1 OR fingerprint = $1) AS exact
    FROM incidents
    WHERE state = 'open' AND (id = $1 OR fingerprint = $1 OR ($2 AND left(id, length($1)) = $1))
    ORDER BY exact DESC, opened_at DESC LIMIT 10
    FOR UPDATE"""
_ACK = f"""
    UPDATE incidents SET acked_at = coalesce($3::timestamptz, now()), acked_by = $2
    WHERE id = $1 AND state = 'open' RETURNING {INCIDENT_COLUMNS}"""
_INSERT_ACTION = f"""
    INSERT INTO actions (id, project, action, requested_by, reason, state, needs_approval,
                         created_at, incident_id, origin)
    VALUES ($1, $2, $3, $4, $5, $6, $7, now(), $8, $9) RETURNING {_ACTION}"""


class PostgresOperations:
    if TYPE_CHECKING:  # provided by PostgresStore

        def _acquire(self) -> AbstractAsyncContextManager[asyncpg.Connection]: ...

        async def _fetch(self, sql: str, *params: Any) -> list[asyncpg.Record]: ...

        def transaction(self) -> AbstractAsyncContextManager[asyncpg.Connection]: ...

    # -- silences ----------------------------------------------------------------------
    async def create_silence(
        self, project: str, until: datetime, reason: str, by: str, event_for: SilenceEventFor
    ) -> Silence:
        aware(until)
        async with self.transaction() as conn:
            await conn.execute(_LOCK_PROJECT, project)
            if until <= await conn.fetchval("SELECT now()"):
                raise ValueError("a silence must end in the future")
            await conn.execute(_CLOSE_OPEN, project, by)
            row = await conn.fetchrow(_INSERT_SILENCE, uuid.uuid4().hex, project, until, reason, by)
            silence = silence_from_row(row, TIME)
            await insert_events(conn, [event_for(silence)])
        return silence

    async def end_silence(
        self, project: str, by: str, event_for: SilenceEventFor
    ) -> Silence | None:
        async with self.transaction() as conn:
            await conn.execute(_LOCK_PROJECT, project)
            row = await conn.fetchrow(_END_SILENCE, project, by)
            if row is None:
                return None
            silence = silence_from_row(row, TIME)
            await insert_events(conn, [event_for(silence)])
        return silence

    async def active_silence(self, project: str, at: datetime | None = None) -> Silence | None:
        rows = await self._fetch(
            f"SELECT {_SILENCE} FROM silences WHERE project = $2 AND {_ACTIVE}"
            " ORDER BY starts_at DESC LIMIT 1",
            _at(at),
            project,
        )
        return next((silence_from_row(r, TIME) for r in rows), None)

    async def active_silences(self, at: datetime | None = None) -> list[Silence]:
        rows = await self._fetch(
            f"SELECT {_SILENCE} FROM silences WHERE {_ACTIVE} ORDER BY project, starts_at",
            _at(at),
        )
        return [silence_from_row(r, TIME) for r in rows]

    # -- acknowledgement ---------------------------------------------------------------
    async def ack_incident(
        self, ref: str, by: str, at: datetime | None, event_for: EventFor
    ) -> Incident | None:
        when = None if at is None else aware(at)
        async with self.transaction() as conn:
            found = await conn.fetch(_FIND_OPEN, check_ref(ref), is_id_prefix(ref))
            if not found:
                return None
            first = found[0]
            if not first["exact"] and len(found) > 1:  # prefixes only, more than one
                raise AmbiguousIncident(ref, [r["id"] for r in found])
            if first["acked_by"] == by:  # already theirs: nothing new to announce
                return incident_from_row(tuple(first)[:-2], TIME)
            incident = incident_from_row(await conn.fetchrow(_ACK, first["id"], by, when), TIME)
            await insert_events(conn, [event_for(incident)])
        return incident

    async def incident_acks(self, incident_ids: Sequence[str]) -> dict[str, IncidentAck]:
        if not incident_ids:
            return {}
        rows = await self._fetch(
            "SELECT id, acked_by, acked_at FROM incidents"
            " WHERE id = ANY($1::text[]) AND acked_by IS NOT NULL",
            list(incident_ids),
        )
        return {r[0]: IncidentAck(r[1], as_utc(r[2])) for r in rows}

    # -- action requests ---------------------------------------------------------------
    async def request_action(
        self,
        project: str,
        action: str,
        requested_by: str,
        reason: str,
        needs_approval: bool,
        event_for: ActionEventFor,
        *,
        incident_id: str | None = None,
        origin: str = "user",
        audit: AuditFor | None = None,
    ) -> ActionRequest:
        args = (uuid.uuid4().hex, project, action, requested_by, reason, REQUESTED,
                bool(needs_approval), incident_id, check_origin(origin))  # fmt: skip
        async with self.transaction() as conn:
            request = action_from_row(await conn.fetchrow(_INSERT_ACTION, *args), TIME)
            if audit is not None:
                await conn.execute(INSERT_AUDIT, *audit_args(audit(request)))
            await insert_events(conn, [event_for(request)])
        return request

    async def get_action(self, action_id: str) -> ActionRequest | None:
        rows = await self._fetch(f"SELECT {_ACTION} FROM actions WHERE id = $1", action_id)
        return next((action_from_row(r, TIME) for r in rows), None)

    async def list_actions(
        self, *, project: str | None = None, limit: int = 100
    ) -> list[ActionRequest]:
        check_limit(limit)
        rows = await self._fetch(
            f"SELECT {_ACTION} FROM actions WHERE ($1::text IS NULL OR project = $1)"
            " ORDER BY created_at DESC, seq DESC LIMIT $2",
            project,
            limit,
        )
        return [action_from_row(r, TIME) for r in rows]

    # -- plumbing ----------------------------------------------------------------------


def _at(at: datetime | None) -> datetime | None:
    return None if at is None else aware(at)
