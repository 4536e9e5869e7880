"""``/orch history <project> [24h|7d]``: availability numbers and a text timeline.

Numbers come from the store's definitions (``storage.rollups``: time-weighted uptime,
downtime of ``down`` incidents clipped to the window, MTTR of the ones resolved in it);
the timeline is the project's status transitions and incident events in the window,
oldest first, the newest ``MAX_HISTORY`` of them.  The chart of the project's status and
key metrics is posted in its group's channel (``bot.history_chart``: a response_url cannot
carry a file); the answer says where, or why there is none.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Final

from agents.events import (
    INCIDENT_OPENED,
    INCIDENT_RESOLVED,
    PROJECT_FLAPPING,
    PROJECT_STATUS_CHANGED,
)
from bot.history_chart import queue_history_chart
from bot.slack import replies
from bot.slack.command_parser import Command
from bot.slack.operations import current_project
from bot.slack.replies import Reply
from bot.slack.services import Services
from bot.slack.views import MAX_HISTORY, HistoryEntry, HistoryView

WINDOWS: Final = {"24h": timedelta(hours=24), "7d": timedelta(days=7)}
TIMELINE_TYPES: Final = (
    PROJECT_STATUS_CHANGED, PROJECT_FLAPPING, INCIDENT_OPENED, INCIDENT_RESOLVED,
)  # fmt: skip
# Events read to count what is not shown; a week of a flapping project can be thousands.
READ_LIMIT: Final = 2000

log = logging.getLogger(__name__)


async def history(services: Services, command: Command, user: str) -> Reply:
    project = current_project(services, command.project)
    if project is None:
        return replies.error_reply(f"no project {command.project} any more")
    window = command.window or "24h"
    # The agents' clock: probes and events are stamped with it.
    until = services.clock.now()
    since = until - WINDOWS[window]
    store = services.store
    uptime = (await store.uptime([project.name], since, until)).get(project.name)
    downtime = await store.downtime(project.name, since, until)
    mttr = await store.mttr(project.name, since, until)
    events = await store.list_events(
        project=project.name, types=TIMELINE_TYPES, since=since, limit=READ_LIMIT
    )
    events = [e for e in events if e.ts < until]
    opened = sum(1 for e in events if e.type == INCIDENT_OPENED)
    shown = events[-MAX_HISTORY:]
    view = HistoryView(
        project.name, window, uptime, downtime, mttr, opened,
        tuple(HistoryEntry.of(e) for e in shown), len(events) - len(shown),
    )  # fmt: skip
    try:
        channel = await queue_history_chart(
            store, services.config(), project, view, since, until, user
        )
    except Exception:  # the numbers and the timeline still answer the question
        log.exception("the history chart of %s could not be drawn", project.name)
        return replies.history_reply(view, chart="failed")
    if channel is None:
        return replies.history_reply(view, chart="no_group")
    return replies.history_reply(view, chart="queued", channel=channel)
