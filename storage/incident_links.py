"""Incidents folded into another's: the store side of shared dependencies (issue 9).

A project that goes down while a project it depends on (``depends_on``) is down keeps its
own incident row: its downtime, probes and events are recorded as for any outage.  The
row's ``caused_by`` names the dependency's incident, the root cause, so Slack shows one
card, the Auto-Fixer restarts only the root, and the API can show the link.  When and why
the link is set or cleared: ``agents.dependencies``.

``caused_by`` always names a root (an incident whose own ``caused_by`` is NULL) at the
moment it is set: the tree is one level deep, so "everything folded into X" is one
indexed lookup.  Column added by ``migrations/*/0012_incident_causes.sql``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # storage.base composes the Store from this protocol: no import cycle
    from storage.base import EventFor, Incident


class IncidentLinkStore(Protocol):
    async def link_incident(
        self, incident_id: str, caused_by: str | None, *, expected: str | None,
        event_for: EventFor,
    ) -> Incident | None:  # fmt: skip
        """Set the open incident's ``caused_by`` (None: unfold it) if it is still
        ``expected``, with the event ``event_for`` builds from the changed row, in one
        transaction.  None when the incident is not open or was changed meanwhile (another
        replica won): a compare-and-set, so concurrent reconcilers change it once."""
        ...

    async def get_incident(self, incident_id: str) -> Incident | None:
        """The incident with this id, open or resolved; None when there is none."""
        ...

    async def incidents_caused_by(self, root_id: str, limit: int = 500) -> list[Incident]:
        """The incidents (open or resolved) folded into ``root_id``, oldest first."""
        ...
