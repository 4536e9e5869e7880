"""What people do to the fleet from Slack, in the store: silences, acknowledgements, and
action requests (DESIGN §4, §5).

Tables (``migrations/*/0006_operations.sql``):

- ``silences``: one row per silence.  A project has at most one *open* row (``ended_at``
  NULL, a partial unique index); it is *active* at ``t`` when ``starts_at <= t <
  ends_at`` and it was not ended by then.  A silence that runs out keeps ``ended_at`` NULL
  (nothing has to happen at expiry); creating a new one closes the old row first.
- ``incidents.acked_at`` / ``acked_by``: who took an incident on.
- ``actions``: a request to run an action on a project, from ``requested`` on; approval
  (``storage.autonomy_store``) and execution (``storage.execution_store``) move it on.

Every change commits with the event that announces it, built by the caller's
``event_for`` from the row as stored (as for incidents).  Times are database time
(PostgreSQL ``now()``; the SQLite store's injected clock); ``at=None`` means "now" there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final, Protocol

from agents.events import Event

if TYPE_CHECKING:  # storage.base composes the Store from this protocol: no import cycle
    from storage.autonomy_store import AuditEntry
    from storage.base import EventFor, Incident

# The state every new action request starts in; "Autonomy" moves it on from there.
REQUESTED: Final = "requested"
_HEX: Final = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    project: str
    starts_at: datetime
    ends_at: datetime  # when it runs out on its own
    reason: str
    created_by: str  # a Slack user id, or an agent's name
    ended_at: datetime | None = None  # set by unsilence (or a newer silence)
    ended_by: str | None = None

    def active_at(self, at: datetime) -> bool:
        ended = self.ended_at is not None and self.ended_at <= at
        return self.starts_at <= at < self.ends_at and not ended


@dataclass(frozen=True, slots=True)
class ActionRequest:
    id: str  # also the idempotency key of its /control call
    project: str
    action: str  # restart | pause | resume | clear_cache
    requested_by: str  # a Slack user id, an OS user, or an agent's name
    reason: str
    state: str  # storage.execution_store: requested ... verified | failed
    needs_approval: bool
    created_at: datetime
    incident_id: str | None = None  # the incident it is about (its thread tells the story)
    origin: str = "user"  # user | operator | autofix | claude: who decided to act
    outcome: str | None = None  # what the project answered: accepted | refused | unknown
    error: str | None = None  # why it failed, for people
    executor: str | None = None  # the replica that ran it
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class IncidentAck:
    acked_by: str
    acked_at: datetime


class AmbiguousIncident(LookupError):
    """An incident reference matched several open incidents (their ids, sorted)."""

    def __init__(self, ref: str, ids: Sequence[str]) -> None:
        super().__init__(f"{ref!r} matches {len(ids)} open incidents")
        self.ref = ref
        self.ids = tuple(sorted(ids))


# Build the announcing event from the row as stored, inside the transaction.
SilenceEventFor = Callable[[Silence], Event]
ActionEventFor = Callable[[ActionRequest], Event]
AuditFor = Callable[[ActionRequest], "AuditEntry"]  # the audit row, from the stored request


def check_ref(ref: str) -> str:
    """An incident reference must be non-empty: "" would be a prefix of every id."""
    if not ref:
        raise ValueError("an incident reference must not be empty")
    return ref


def is_id_prefix(ref: str) -> bool:
    """Only hex references are matched as id prefixes (ids are uuid4 hex); anything else
    must equal an id or a fingerprint exactly."""
    return _HEX.fullmatch(ref) is not None


class OperationsStore(Protocol):
    # -- silences ----------------------------------------------------------------------
    async def create_silence(
        self,
        project: str,
        until: datetime,
        reason: str,
        by: str,
        event_for: SilenceEventFor,
    ) -> Silence:
        """Silence ``project`` from now until ``until`` (ValueError unless it is later than
        now), with its event, in one transaction.  An open silence of the project is
        closed first (at now, or at its own end if it ran out): one open row per
        project, and a new silence replaces the old one."""
        ...

    async def end_silence(
        self, project: str, by: str, event_for: SilenceEventFor
    ) -> Silence | None:
        """End the project's active silence now, with its event; None (nothing written,
        ``event_for`` not called) when it has none."""
        ...

    async def active_silence(self, project: str, at: datetime | None = None) -> Silence | None:
        """The silence active on ``project`` at ``at`` (default: now), if any."""
        ...

    async def active_silences(self, at: datetime | None = None) -> list[Silence]:
        """Every silence active at ``at`` (default: now), by project."""
        ...

    # -- acknowledgement ---------------------------------------------------------------
    async def ack_incident(
        self, ref: str, by: str, at: datetime | None, event_for: EventFor
    ) -> Incident | None:
        """Acknowledge the open incident ``ref`` names: its id, its fingerprint, or (hex
        only) the start of its id.  Records ``by`` and ``at`` (default: now) with the
        event in one transaction.  Acknowledging again by the same person writes nothing
        and calls no ``event_for``; by someone else, it records them.  None when no open
        incident matches; AmbiguousIncident when a prefix matches several (an exact id or
        fingerprint always wins over prefixes)."""
        ...

    async def incident_acks(self, incident_ids: Sequence[str]) -> dict[str, IncidentAck]:
        """Who acknowledged which of ``incident_ids`` (those never acknowledged absent)."""
        ...

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
        """Record a request (state ``requested``, created now) with its event in one
        transaction.  ``origin``: one of ``storage.execution_store.ORIGINS``.  ``audit``:
        the audit row that allows it, written in the same transaction, so a request that
        may run at once never exists without the row that says who allowed it (issue
        10.1: an outage between two writes must not leave a runnable, unaudited action)."""
        ...

    async def get_action(self, action_id: str) -> ActionRequest | None: ...

    async def list_actions(
        self, *, project: str | None = None, limit: int = 100
    ) -> list[ActionRequest]:
        """Newest first."""
        ...
