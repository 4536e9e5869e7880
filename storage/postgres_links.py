"""The PostgreSQL side of ``storage.incident_links`` (a mixin of ``PostgresStore``).

The compare-and-set is ``caused_by IS NOT DISTINCT FROM $3`` (NULL matches NULL): under
READ COMMITTED a second updater waits for the first's row lock, re-checks the condition on
the committed row and matches nothing, so of two replicas exactly one changes the row;
the event commits with it (``_change_incident``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from storage.postgres_sql import INCIDENT_COLUMNS, TIME
from storage.rows import check_limit, incident_from_row

if TYPE_CHECKING:
    import asyncpg

    from storage.base import EventFor, Incident

_LINK = (
    "UPDATE incidents SET caused_by = $1"
    " WHERE id = $2 AND state = 'open' AND caused_by IS NOT DISTINCT FROM $3"
    f" RETURNING {INCIDENT_COLUMNS}"
)
_GET = f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = $1"
_CAUSED_BY = (
    f"SELECT {INCIDENT_COLUMNS} FROM incidents WHERE caused_by = $1"
    " ORDER BY opened_at, seq LIMIT $2"
)


class PostgresIncidentLinks:
    if TYPE_CHECKING:  # provided by PostgresStore

        async def _change_incident(
            self, sql: str, params: tuple[Any, ...], event_for: EventFor
        ) -> Incident | None: ...

        async def _fetch(self, sql: str, *params: Any) -> list[asyncpg.Record]: ...

    async def link_incident(
        self, incident_id: str, caused_by: str | None, *, expected: str | None,
        event_for: EventFor,
    ) -> Incident | None:  # fmt: skip
        params = (caused_by, incident_id, expected)
        return await self._change_incident(_LINK, params, event_for)

    async def get_incident(self, incident_id: str) -> Incident | None:
        rows = await self._fetch(_GET, incident_id)
        return incident_from_row(rows[0], TIME) if rows else None

    async def incidents_caused_by(self, root_id: str, limit: int = 500) -> list[Incident]:
        rows = await self._fetch(_CAUSED_BY, root_id, check_limit(limit))
        return [incident_from_row(r, TIME) for r in rows]
