"""The SQLite side of ``storage.incident_links`` (a mixin of ``SQLiteStore``).

The compare-and-set is ``caused_by IS ?`` (``IS`` also matches NULL to NULL) inside the
store's one-transaction ``_change_incident``: BEGIN IMMEDIATE makes it SQLite's single
writer, so of two reconcilers exactly one changes the row.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from storage.rows import check_limit, incident_from_row
from storage.sqlite_codec import INCIDENT_COLUMNS, TIME

if TYPE_CHECKING:
    import sqlite3

    from storage.base import EventFor, Incident

_LINK = (
    "UPDATE incidents SET caused_by = ? WHERE id = ? AND state = 'open' AND caused_by IS ?"
    f" RETURNING {INCIDENT_COLUMNS}"
)
_GET = f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = ?"
_CAUSED_BY = (
    f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE caused_by = ?"
    " ORDER BY opened_at_us, id LIMIT ?"
)


class SQLiteIncidentLinks:
    if TYPE_CHECKING:  # provided by SQLiteStore

        async def _change_incident(
            self, sql: str, params: tuple[Any, ...], event_for: EventFor
        ) -> Incident | None: ...

        async def _fetch(self, sql: str, params: Iterable[Any]) -> Iterable[sqlite3.Row]: ...

    async def link_incident(
        self, incident_id: str, caused_by: str | None, *, expected: str | None,
        event_for: EventFor,
    ) -> Incident | None:  # fmt: skip
        params = (caused_by, incident_id, expected)
        return await self._change_incident(_LINK, params, event_for)

    async def get_incident(self, incident_id: str) -> Incident | None:
        rows = list(await self._fetch(_GET, (incident_id,)))
        return incident_from_row(rows[0], TIME) if rows else None

    async def incidents_caused_by(self, root_id: str, limit: int = 500) -> list[Incident]:
        rows = await self._fetch(_CAUSED_BY, (root_id, check_limit(limit)))
        return [incident_from_row(r, TIME) for r in rows]
