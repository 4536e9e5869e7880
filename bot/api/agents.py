"""GET /agents (what orch's agents have done lately, fleet-wide, from the store) and
GET /me (who the caller is, and whether it may decide approvals at all).

Activity is counted from the events each agent emitted (their ``source``), so it covers
every replica; a reader of the live stream sees only its own replica's bus."""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from aiohttp import web

from agents import autofixer, decision, executor, health, incidents, metrics_analyzer
from bot.api import shapes
from bot.api.context import ApiContext, Call
from bot.api.errors import json_response

# The agents listed even when idle (other sources, such as api, slack or cli, are listed
# once they emitted an event in the window).
AGENTS: Final = tuple(sorted({health.SOURCE, metrics_analyzer.SOURCE, incidents.SOURCE,
                              autofixer.SOURCE, executor.SOURCE, decision.SOURCE}))  # fmt: skip
# Scheduled jobs are shown with their last run of this long ago at most (the digest is daily).
JOBS_LOOKBACK: Final = timedelta(days=8)


async def list_agents(api: ApiContext, call: Call) -> web.StreamResponse:
    minutes: int = call.query["minutes"]
    now = api.clock.now()
    since = now - timedelta(minutes=minutes)
    store = api.store
    seen = {a.source: a for a in await store.event_activity(since)}
    rows = []
    for source in sorted(set(AGENTS) | set(seen)):
        a = seen.get(source)
        count = a.events if a is not None else 0
        rows.append({"source": source, "agent": source in AGENTS, "events": count,
                     "per_minute": round(count / minutes, 3),
                     "last_at": shapes.iso(a.last_at) if a is not None else None})  # fmt: skip
    jobs = await store.last_job_runs(now - JOBS_LOOKBACK)
    body = {
        "since": shapes.iso(since), "until": shapes.iso(now), "minutes": minutes,
        "agents": rows,
        "suspended": [{"project": s.project, **(shapes.suspension(s) or {})}
                      for s in await store.active_suspensions()],
        "jobs": [{"job": j, "last_run_at": shapes.iso(t)} for j, t in sorted(jobs.items())],
    }  # fmt: skip
    return json_response(body)


async def me(api: ApiContext, call: Call) -> web.StreamResponse:
    """``may_decide``: whether the caller can decide any approval (local operator, or an
    API user mapped to a Slack user); each approval's ``can_decide`` says it per project."""
    who = call.who
    slack_user = None if who.local else api.config().api_users.get(who.name)
    return json_response({
        "user": who.name, "mode": api.auth.mode, "local": who.local, "slack_user": slack_user,
        "may_decide": who.local or slack_user is not None,
    })  # fmt: skip
