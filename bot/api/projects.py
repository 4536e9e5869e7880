"""GET /projects, /projects/{name}, /projects/{name}/history: the fleet as configured,
with what the store knows of each project now and over a window."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Final

from aiohttp import web

from agents.events import PROJECT_STATUS_CHANGED
from agents.health import STATUSES, UNKNOWN
from bot.api import shapes
from bot.api.context import ApiContext, Call, configured
from bot.api.errors import json_response
from bot.api.params import WINDOWS
from bot.config import Config, Project
from storage.base import Store

DAY: Final = timedelta(hours=24)
# At most this many open incidents are counted (far more than any fleet has open).
OPEN_LIMIT: Final = 10_000
# The sparkline's hours: the current one and the 23 before it.
SPARK_HOURS: Final = 24
METRIC_PREFIX: Final = "metric:"
# Status changes shown in a history window, the newest.
TRANSITIONS_LIMIT: Final = 5_000


def status(announced: str | None) -> str:
    return announced if announced in STATUSES else UNKNOWN


async def list_projects(api: ApiContext, call: Call) -> web.StreamResponse:
    config = api.config()
    items = await _summaries(api, config, config.projects)
    return json_response({"items": items})


async def get_project(api: ApiContext, call: Call) -> web.StreamResponse:
    config = api.config()
    p = configured(config, call.path("name"), "path.name")
    (summary,) = await _summaries(api, config, [p])
    store = api.store
    incidents = await store.list_incidents(project=p.name, open_only=True, limit=OPEN_LIMIT)
    acks = await store.incident_acks([i.id for i in incidents])
    body = {
        **summary,
        "thresholds": shapes.thresholds(p),
        "incidents": [shapes.incident(i, acks.get(i.id)) for i in incidents],
        "silence": shapes.silence(await store.active_silence(p.name)),
        "suspension": shapes.suspension(await store.remediation_suspended(p.name)),
    }
    return json_response(body)


async def project_history(api: ApiContext, call: Call) -> web.StreamResponse:
    config = api.config()
    p = configured(config, call.path("name"), "path.name")
    window = call.query["window"]
    hours = WINDOWS[window]
    now = api.clock.now()
    since = now - timedelta(hours=hours)
    # The hourly rows of the window's hours, the current one included (it has a row only
    # once rolled up, after it ended).
    first = _hour(now) - timedelta(hours=hours - 1)
    store = api.store
    rows = await store.probe_hours(p.name, first, now)
    metrics = {m: [shapes.metric_hour(h) for h in await store.metric_hours(p.name, m, first, now)]
               for m in sorted(p.thresholds)}  # fmt: skip
    uptime = (await store.uptime([p.name], since, now)).get(p.name)
    changes = await store.list_events(project=p.name, types=[PROJECT_STATUS_CHANGED],
                                      since=since, limit=TRANSITIONS_LIMIT)  # fmt: skip
    body = {
        "project": p.name, "window": window, "since": shapes.iso(since),
        "until": shapes.iso(now), "uptime_percent": uptime,
        "hours": [shapes.probe_hour(h) for h in rows], "metrics": metrics,
        "transitions": [shapes.transition(e) for e in changes],
    }  # fmt: skip
    return json_response(body)


async def _summaries(api: ApiContext, config: Config, projects: list[Project]) -> list[shapes.Json]:
    """Each project's summary: a fixed number of store calls for the whole fleet."""
    names = [p.name for p in projects]
    if not names:
        return []
    store: Store = api.store
    now = api.clock.now()
    statuses = await store.announced_statuses(names)
    uptime = await store.uptime(names, now - DAY, now)
    first_hour = _hour(now) - timedelta(hours=SPARK_HOURS - 1)
    hourly = await store.uptime_hours(names, first_hour, now)
    probes = await store.last_probes(names)
    open_ = await store.list_incidents(open_only=True, limit=OPEN_LIMIT)
    counts = Counter(i.project for i in open_)
    # Metrics over a threshold now: the open metric:<name> incidents (the incidents agent
    # opens one at metric.anomaly and resolves it at metric.recovered).
    anomalies: dict[str, list[shapes.Json]] = {}
    for i in sorted(open_, key=lambda i: i.condition):
        if i.condition.startswith(METRIC_PREFIX):
            anomalies.setdefault(i.project, []).append(shapes.anomaly(i))
    silences = {s.project: s for s in await store.active_silences()}
    return [
        shapes.project(p, config, status=status(statuses.get(p.name)),
                       uptime=uptime.get(p.name), open_incidents=counts[p.name],
                       silence=silences.get(p.name), last_probe=probes.get(p.name),
                       anomalies=anomalies.get(p.name, []),
                       hourly=(first_hour, hourly.get(p.name, [])))
        for p in projects
    ]  # fmt: skip


def _hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
