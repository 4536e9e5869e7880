"""Every endpoint of the API, once: the router (``bot.api.routes``) mounts this table and
the OpenAPI document (``bot.api.openapi``) describes it."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from bot.api import agents, approvals, incidents, projects
from bot.api.context import ApiContext, Call, Endpoint
from bot.api.errors import json_response
from bot.api.openapi import document
from bot.api.params import (
    INCIDENT,
    MINUTES,
    OFFSET,
    PROJECT,
    SINCE,
    STATE,
    TYPES,
    WINDOW,
    limit,
)


async def openapi_json(api: ApiContext, call: Call) -> web.StreamResponse:
    return json_response(document(ENDPOINTS, api.auth.mode))


ENDPOINTS: Final[tuple[Endpoint, ...]] = (
    Endpoint("GET", "/projects", projects.list_projects, "listProjects",
             "The configured projects, with status, latency, 24 h uptime (hour by hour too),"
             " current anomalies and open incidents.", "projects", "ProjectList"),
    Endpoint("GET", "/projects/{name}", projects.get_project, "getProject",
             "One project: its summary, thresholds, open incidents, silence and suspension.",
             "projects", "ProjectDetail", errors=(404,)),
    Endpoint("GET", "/projects/{name}/history", projects.project_history, "getProjectHistory",
             "Hourly roll-ups, metric hours and status transitions over a window.",
             "projects", "History", query=(WINDOW,), errors=(404,),
             description="`hours` holds the hours rolled up so far (the current hour has a row"
             " once it ended and the roll-up ran); `uptime_percent` covers the whole window,"
             " raw probes included."),
    Endpoint("GET", "/incidents", incidents.list_incidents, "listIncidents",
             "Incidents, newest opened first.", "incidents", "IncidentList",
             query=(STATE, PROJECT, limit(50, 500), OFFSET), errors=(404,)),
    Endpoint("GET", "/incidents/{id}", incidents.get_incident, "getIncident",
             "One incident with its actions, analyses and timeline.", "incidents",
             "IncidentDetail", errors=(404,)),
    Endpoint("GET", "/events", incidents.list_events, "listEvents",
             "Events (the bus vocabulary), newest first.", "events", "EventList",
             query=(PROJECT, TYPES, SINCE, limit(100, 1000), OFFSET), errors=(404,)),
    Endpoint("GET", "/actions", incidents.list_actions, "listActions",
             "Actions asked for, newest first, with their execution state.", "actions",
             "ActionList", query=(PROJECT, limit(50, 500), OFFSET), errors=(404,)),
    Endpoint("GET", "/approvals", approvals.list_approvals, "listApprovals",
             "Approvals waiting for a decision, oldest first, with whether the caller may"
             " decide each.", "approvals", "PendingApprovalList",
             query=(PROJECT, limit(100, 500), OFFSET), errors=(404,)),
    Endpoint("POST", "/approvals/{id}/approve", approvals.approve, "approve",
             "Approve: the same compare-and-set and audit as a Slack click.", "approvals",
             "Decision", errors=(404, 409), body="DecisionBody"),
    Endpoint("POST", "/approvals/{id}/deny", approvals.deny, "deny",
             "Deny: the same compare-and-set and audit as a Slack click.", "approvals",
             "Decision", errors=(404, 409), body="DecisionBody"),
    Endpoint("GET", "/analyses", incidents.list_analyses, "listAnalyses",
             "An incident's analyses (Claude's or the rule engine's), newest first.",
             "incidents", "AnalysisList", query=(INCIDENT, limit(50, 500), OFFSET),
             errors=(404,)),
    Endpoint("GET", "/agents", agents.list_agents, "listAgents",
             "Each agent's events over the last minutes (every replica's), suspended"
             " remediations and the last run of each scheduled job.", "agents", "AgentActivity",
             query=(MINUTES,)),
    Endpoint("GET", "/me", agents.me, "getMe",
             "Who the caller is, and whether it may decide approvals at all.", "meta", "Me"),
    Endpoint("GET", "/openapi.json", openapi_json, "getOpenApi", "This document.", "meta",
             "OpenApi", public=True),
)  # fmt: skip
