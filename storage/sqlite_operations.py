"""The SQLite side of ``storage.operations_store``: silences, acks and action requests.

A mixin of ``SQLiteStore``.  Every change and its event run in one ``_transaction``
(BEGIN IMMEDIATE: SQLite's single writer), so closing a project's open silence and
opening the next, or choosing the incident a reference names and acknowledging it, cannot
interleave with another writer, even another process on the same file.  "Now" is the
store's injected clock.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aiosqlite

from agents.clock import Clock
from agents.events import Event
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
from storage.rows import action_from_row, check_limit, incident_from_row, silence_from_row
from storage.sqlite_autonomy import insert_audit
from storage.sqlite_codec import INCIDENT_COLUMNS, SQL, TIME, event_row, from_us, to_us

_SILENCE = "id, project, starts_at_us, ends_at_us, reason, created_by, ended_at_us, ended_by"
_ACTION = action_columns("_us")
_ACTIVE = "starts_at_us <= :at AND ends_at_us > :at AND (ended_at_us IS NULL OR ended_at_us > :at)"
# Closing the open row: at now if it is still running (then ``by`` replaced it), else at
# its own end, where it ran out by itself.
_CLOSE_OPEN = """
    UPDATE silences
    SET ended_by = CASE WHEN ends_at_us > :now THEN :by END, ended_at_us = min(ends_at_us, :now)
    WHERE project = :project AND ended_at_us IS NULL"""
_INSERT_SILENCE = f"""
    INSERT INTO silences ({_SILENCE})
    VALUES (:id, :project, :now, :until, :reason, :by, NULL, NULL) RETURNING {_SILENCE}"""
_END_SILENCE = f"""
    UPDATE silences SET ended_at_us = :at, ended_by = :by
    WHERE project = :project AND ended_at_us IS NULL AND {_ACTIVE} RETURNING {_SILENCE}"""
# Exact matches (id or fingerprint) sort first; a prefix counts only for hex references.
_FIND_OPEN = f"""
    SELECT {INCIDENT_COLUMNS}, acked_by, (id = :ref OR fingerprint = :ref) AS exact
    FROM incidents
    WHERE state = 'open' AND (id = :ref OR fingerprint = :ref
                              OR (:prefix AND substr(id, 1, length(:ref)) = :ref))
    ORDER BY exact DESC, opened_at_us DESC LIMIT 10"""
_ACK = f"""
    UPDATE incidents SET acked_at_us = :at, acked_by = :by
    WHERE id = :id AND state = 'open' RETURNING {INCIDENT_COLUMNS}"""
_INSERT_ACTION = f"""
    INSERT INTO actions (id, project, action, requested_by, reason, state, needs_approval,
                         created_at_us, incident_id, origin)
    VALUES (:id, :project, :action, :by, :reason, :state, :needs, :now, :incident_id, :origin)
    RETURNING {_ACTION}"""


class SQLiteOperations:
    if TYPE_CHECKING:  # provided by SQLiteStore
        _clock: Clock

        def _locked(self) -> AbstractAsyncContextManager[aiosqlite.Connection]: ...

        def _transaction(self) -> AbstractAsyncContextManager[aiosqlite.Connection]: ...

    # -- silences ----------------------------------------------------------------------
    async def create_silence(
        self, project: str, until: datetime, reason: str, by: str, event_for: SilenceEventFor
    ) -> Silence:
        now, until_us = to_us(self._clock.now()), to_us(until)
        if until_us <= now:
            raise ValueError("a silence must end in the future")
        params: dict[str, Any] = {"project": project, "now": now, "until": until_us, "by": by}
        async with self._transaction() as tx:
            await tx.execute(_CLOSE_OPEN, params)
            params |= {"id": uuid.uuid4().hex, "reason": reason}
            row = next(iter(await tx.execute_fetchall(_INSERT_SILENCE, params)))
            silence = silence_from_row(row, TIME)
            await _append(tx, event_for(silence))
        return silence

    async def end_silence(
        self, project: str, by: str, event_for: SilenceEventFor
    ) -> Silence | None:
        params = {"project": project, "at": to_us(self._clock.now()), "by": by}
        async with self._transaction() as tx:
            rows = list(await tx.execute_fetchall(_END_SILENCE, params))
            if not rows:
                return None
            silence = silence_from_row(rows[0], TIME)
            await _append(tx, event_for(silence))
        return silence

    async def active_silence(self, project: str, at: datetime | None = None) -> Silence | None:
        rows = await self._op_read(
            f"SELECT {_SILENCE} FROM silences WHERE project = :project AND {_ACTIVE}"
            " ORDER BY starts_at_us DESC LIMIT 1",
            {"project": project, "at": self._at(at)},
        )
        return next((silence_from_row(r, TIME) for r in rows), None)

    async def active_silences(self, at: datetime | None = None) -> list[Silence]:
        rows = await self._op_read(
            f"SELECT {_SILENCE} FROM silences WHERE {_ACTIVE} ORDER BY project, starts_at_us",
            {"at": self._at(at)},
        )
        return [silence_from_row(r, TIME) for r in rows]

    # -- acknowledgement ---------------------------------------------------------------
    async def ack_incident(
        self, ref: str, by: str, at: datetime | None, event_for: EventFor
    ) -> Incident | None:
        params = {"ref": check_ref(ref), "prefix": is_id_prefix(ref), "by": by}
        params["at"] = self._at(at)
        async with self._transaction() as tx:
            found = list(await tx.execute_fetchall(_FIND_OPEN, params))
            if not found:
                return None
            first = found[0]
            if not first[-1] and len(found) > 1:  # prefixes only, more than one
                raise AmbiguousIncident(ref, [r[0] for r in found])
            if first[-2] == by:  # already theirs: nothing new to announce
                return incident_from_row(first[:-2], TIME)
            rows = list(await tx.execute_fetchall(_ACK, params | {"id": first[0]}))
            incident = incident_from_row(rows[0], TIME)
            await _append(tx, event_for(incident))
        return incident

    async def incident_acks(self, incident_ids: Sequence[str]) -> dict[str, IncidentAck]:
        if not incident_ids:
            return {}
        rows = await self._op_read(
            "SELECT id, acked_by, acked_at_us FROM incidents"
            " WHERE id IN (SELECT value FROM json_each(:ids)) AND acked_by IS NOT NULL",
            {"ids": json.dumps(list(incident_ids))},
        )
        return {r[0]: IncidentAck(r[1], from_us(r[2])) for r in rows}

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
        now = to_us(self._clock.now())
        params = {
            "id": uuid.uuid4().hex, "project": project, "action": action, "by": requested_by,
            "reason": reason, "state": REQUESTED, "needs": int(needs_approval),
            "now": now, "incident_id": incident_id,
            "origin": check_origin(origin),
        }  # fmt: skip
        async with self._transaction() as tx:
            row = next(iter(await tx.execute_fetchall(_INSERT_ACTION, params)))
            request = action_from_row(row, TIME)
            if audit is not None:
                await insert_audit(tx, audit(request), now)
            await _append(tx, event_for(request))
        return request

    async def get_action(self, action_id: str) -> ActionRequest | None:
        rows = await self._op_read(
            f"SELECT {_ACTION} FROM actions WHERE id = :id", {"id": action_id}
        )
        return next((action_from_row(r, TIME) for r in rows), None)

    async def list_actions(
        self, *, project: str | None = None, limit: int = 100
    ) -> list[ActionRequest]:
        check_limit(limit)
        where = "WHERE project = :project" if project is not None else ""
        rows = await self._op_read(
            f"SELECT {_ACTION} FROM actions {where}"
            " ORDER BY created_at_us DESC, rowid DESC LIMIT :limit",
            {"project": project, "limit": limit},
        )
        return [action_from_row(r, TIME) for r in rows]

    # -- plumbing ----------------------------------------------------------------------
    def _at(self, at: datetime | None) -> int:
        return to_us(self._clock.now() if at is None else at)

    async def _op_read(self, sql: str, params: dict[str, Any]) -> Iterable[sqlite3.Row]:
        async with self._locked() as db:
            return await db.execute_fetchall(sql, params)


async def _append(tx: aiosqlite.Connection, event: Event) -> None:
    # Last in the transaction, as every event insert of the store: the row it announces
    # is written, and an error in either rolls both back.
    await tx.execute(SQL.insert_event, event_row(event))
