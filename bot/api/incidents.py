"""GET /incidents, /incidents/{id}, /events, /actions, /analyses: what happened, newest
first, a page at a time (``limit`` and ``offset``; ``page.next_offset`` is null on the last
page)."""

from __future__ import annotations

from typing import Any, Final, TypeVar

from aiohttp import web

from bot.api import shapes
from bot.api.context import ApiContext, Call, configured
from bot.api.errors import ApiError, json_response
from bot.api.projects import OPEN_LIMIT
from storage.base import Incident, Store

T = TypeVar("T")
# An incident is found by id among this many of the newest (the store has no lookup by id).
INCIDENT_SCAN: Final = 10_000
# An incident's timeline: its events among this many of its project's since it opened.
TIMELINE_SCAN: Final = 5_000


async def list_incidents(api: ApiContext, call: Call) -> web.StreamResponse:
    q = call.query
    project = _project(api, q["project"])
    limit, offset, state = q["limit"], q["offset"], q["state"]
    want = offset + limit + 1  # one more than the page: is there a next one?
    store = api.store
    if state == "open":
        rows = await store.list_incidents(project=project, open_only=True, limit=want)
    elif state == "resolved":
        # The newest `want + open` incidents hold the newest `want` resolved ones.
        opened = await store.list_incidents(project=project, open_only=True, limit=OPEN_LIMIT)
        everything = await store.list_incidents(project=project, limit=want + len(opened))
        rows = [i for i in everything if i.state == "resolved"]
    else:
        rows = await store.list_incidents(project=project, limit=want)
    page, more = _page(rows, limit, offset)
    acks = await store.incident_acks([i.id for i in page])
    items = [shapes.incident(i, acks.get(i.id)) for i in page]
    return json_response({"items": items, "page": shapes.page(limit, offset, more)})


async def get_incident(api: ApiContext, call: Call) -> web.StreamResponse:
    store = api.store
    incident = await find_incident(store, call.path("id"), "path.id")
    acks = await store.incident_acks([incident.id])
    actions = await store.incident_actions(incident.id)
    analyses = await store.analyses_for(incident.id)
    seen = await store.list_events(project=incident.project, since=incident.opened_at,
                                   limit=TIMELINE_SCAN)  # fmt: skip
    timeline = [shapes.event(e) for e in seen if e.incident_id == incident.id]
    body = {
        **shapes.incident(incident, acks.get(incident.id)),
        "actions": [shapes.action(a) for a in actions],
        "analyses": [shapes.analysis(a) for a in analyses],
        "timeline": timeline,
    }
    return json_response(body)


async def list_events(api: ApiContext, call: Call) -> web.StreamResponse:
    q = call.query
    project = _project(api, q["project"])
    limit, offset = q["limit"], q["offset"]
    rows = await api.store.list_events(project=project, types=q["type"], since=q["since"],
                                       limit=offset + limit + 1)  # fmt: skip
    page, more = _page(rows[::-1], limit, offset)  # the store answers oldest first
    items = [shapes.event(e) for e in page]
    return json_response({"items": items, "page": shapes.page(limit, offset, more)})


async def list_actions(api: ApiContext, call: Call) -> web.StreamResponse:
    q = call.query
    project = _project(api, q["project"])
    limit, offset = q["limit"], q["offset"]
    rows = await api.store.list_actions(project=project, limit=offset + limit + 1)
    page, more = _page(rows, limit, offset)
    items = [shapes.action(a) for a in page]
    return json_response({"items": items, "page": shapes.page(limit, offset, more)})


async def list_analyses(api: ApiContext, call: Call) -> web.StreamResponse:
    q = call.query
    incident = await find_incident(api.store, q["incident"], "query.incident")
    limit, offset = q["limit"], q["offset"]
    rows = (await api.store.analyses_for(incident.id))[::-1]  # newest first
    page, more = _page(rows, limit, offset)
    items = [shapes.analysis(a) for a in page]
    return json_response({"items": items, "page": shapes.page(limit, offset, more)})


async def find_incident(store: Store, incident_id: str, where: str) -> Incident:
    rows = await store.list_incidents(limit=INCIDENT_SCAN)
    found = next((i for i in rows if i.id == incident_id), None)
    if found is None:
        raise ApiError(404, "unknown_incident", f"no incident {incident_id[:64]!r}", where=where)
    return found


def _project(api: ApiContext, name: Any) -> str | None:
    if name is None:
        return None
    return configured(api.config(), name, "query.project").name


def _page(rows: list[T], limit: int, offset: int) -> tuple[list[T], bool]:
    return rows[offset : offset + limit], len(rows) > offset + limit
