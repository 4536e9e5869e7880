"""The fleet as Slack shows it: every project's status, 24 h uptime and open incidents,
read once for ``/orch status`` and the App Home board."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from bot.cards import ApprovalView, HomeView, IncidentLine, ProjectRow
from bot.slack import replies
from bot.slack.services import Services
from storage.base import Incident

DAY: Final = timedelta(hours=24)
MAX_OPEN: Final = 1000  # open incidents read for the board (the templates cap what shows)


@dataclass(frozen=True, slots=True)
class Fleet:
    statuses: dict[str, str]
    incidents: list[Incident]  # open, newest first
    uptimes: dict[str, float]  # percent over the last 24 h; absent when nothing observed
    now: datetime

    def rows(self, services: Services) -> list[ProjectRow]:
        open_by: dict[str, int] = {}
        for incident in self.incidents:
            open_by[incident.project] = open_by.get(incident.project, 0) + 1
        return [
            ProjectRow(p.name, self.statuses.get(p.name, "unknown"), self.uptimes.get(p.name),
                       open_by.get(p.name, 0), p.orchestrator or "")
            for p in services.config().projects
        ]  # fmt: skip


async def read_fleet(services: Services) -> Fleet:
    # The agents' clock: probes and events are stamped with it, so "the last 24 h" of
    # uptime is measured on the same time line.
    now = services.clock.now()
    incidents = await services.store.list_incidents(open_only=True, limit=MAX_OPEN)
    uptimes = await services.store.uptime(None, now - DAY, now)
    return Fleet(dict(services.statuses()), incidents, uptimes, now)


async def home_view(services: Services) -> dict[str, Any]:
    """The App Home board: every project, open incidents, and the approvals waiting."""
    fleet = await read_fleet(services)
    lines = [IncidentLine.from_incident(i) for i in fleet.incidents]
    approvals = [
        ApprovalView(
            approval_id=a.id,
            project=a.project,
            action=a.action,
            reason=a.reason,
            requested_by=a.requested_by,
            state=a.state,
            expires_at=a.expires_at,
        )
        for a in await services.store.pending_approvals()
    ]
    return replies.home_view(HomeView.build(fleet.rows(services), lines, approvals, fleet.now))
