"""The JSON schemas of the API's objects (OpenAPI 3.1, i.e. JSON Schema 2020-12), as
``bot.api.shapes`` builds them.  Every object is closed (``additionalProperties: false``)
so that the tests, which validate real answers against these, catch a field added on one
side only."""

from __future__ import annotations

from typing import Any, Final

from agents.events import EVENT_TYPES
from agents.health import STATUSES

Schema = dict[str, Any]

STRING: Final[Schema] = {"type": "string"}
INSTANT: Final[Schema] = {"type": "string", "format": "date-time"}
NUMBER: Final[Schema] = {"type": "number"}
COUNT: Final[Schema] = {"type": "integer", "minimum": 0}


def nullable(schema: Schema) -> Schema:
    if "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    kind = schema["type"]
    return {**schema, "type": [kind, "null"]}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict[str, Schema], *, optional: tuple[str, ...] = (), **extra: Any) -> Schema:
    required = [name for name in properties if name not in optional]
    return {"type": "object", "properties": properties, "required": required,
            "additionalProperties": False, **extra}  # fmt: skip


def items_of(name: str, *, paged: bool = True) -> Schema:
    fields: dict[str, Schema] = {"items": {"type": "array", "items": ref(name)}}
    if paged:
        fields["page"] = ref("Page")
    return obj(fields)


ACTIONS: Final = ["restart", "pause", "resume", "clear_cache"]

_PROJECT: Final[dict[str, Schema]] = {
    "name": STRING,
    "kind": {"type": "string", "enum": ["contract", "http", "prometheus"]},
    "url": {**STRING, "description": "Without credentials, query or fragment."},
    "group": nullable(STRING),
    "channel": nullable(STRING),
    "status": {"type": "string", "enum": sorted(STATUSES),
               "description": "As last announced by the fleet; unknown before that."},
    "uptime_24h": nullable({**NUMBER, "minimum": 0, "maximum": 100,
                            "description": "Percent over the last 24 hours; null: no probe."}),
    "open_incidents": COUNT,
    "uptime_hourly": obj({
        "first_hour": INSTANT,
        "percent": {"type": "array", "items": nullable({**NUMBER, "minimum": 0, "maximum": 100}),
                    "description": "Uptime % of each hour from first_hour on, the current"
                    " (partial) hour last; null: no probe in that hour."},
    }),
    "latency_ms": nullable({**NUMBER, "description": "The last probe's latency; null when it"
                            " failed (a timeout says nothing of the service's speed)."}),
    "last_probe_at": nullable(INSTANT),
    "anomalies": {"type": "array", "items": ref("Anomaly"),
                  "description": "Metrics over a threshold now (open metric incidents)."},
    "silenced_until": nullable(INSTANT),
    "auto_fix": {"type": "boolean"},
    "allowed_actions": {"type": "array", "items": {"type": "string", "enum": ACTIONS}},
    "needs_approval": {"type": "array", "items": {"type": "string", "enum": ACTIONS}},
    "depends_on": {"type": "array", "items": STRING},
    "interval_s": NUMBER,
    "timeout_s": NUMBER,
}  # fmt: skip

_INCIDENT: Final[dict[str, Schema]] = {
    "id": STRING,
    "fingerprint": {**STRING, "description": "project:condition, e.g. email-blast:down"},
    "project": STRING,
    "condition": {**STRING, "description": "down, or metric:<name>"},
    "severity": STRING,
    "summary": STRING,
    "state": {"type": "string", "enum": ["open", "resolved"]},
    "opened_at": INSTANT,
    "resolved_at": nullable(INSTANT),
    "duration_s": nullable(NUMBER),
    "caused_by": {
        **nullable(STRING),
        "description": "the id of the incident of a dependency"
        " this outage is folded into (depends_on), or null",
    },
    "acked_by": nullable(STRING),
    "acked_at": nullable(INSTANT),
}

_APPROVAL: Final[dict[str, Schema]] = {
    "id": STRING, "action_id": STRING, "project": STRING, "action": STRING,
    "requested_by": STRING, "reason": STRING,
    "state": {"type": "string", "enum": ["pending", "granted", "denied", "expired"]},
    "expires_at": INSTANT, "created_at": INSTANT, "decided_by": nullable(STRING),
    "decided_at": nullable(INSTANT),
}  # fmt: skip

_THRESHOLD: Final = obj({"warn": nullable(NUMBER), "crit": nullable(NUMBER),
                         "direction": {"type": "string", "enum": ["above", "below"]}})  # fmt: skip

SCHEMAS: Final[dict[str, Schema]] = {
    "Error": obj({"error": obj({
        "code": {**STRING, "description": "Stable, for programs: bad_parameter, unauthorized, …"},
        "message": {**STRING, "description": "What was wrong, for people."},
        "where": {**STRING, "description": "query.<name>, path.<name>, body.<field>, header.<…>"},
        "details": {"type": "object", "description": "More facts, e.g. the approval as it is."},
    }, optional=("where", "details"))}),
    "Page": obj({"limit": COUNT, "offset": COUNT, "next_offset": nullable(COUNT)},
                description="next_offset: the offset of the next page; null on the last."),
    "Project": obj(_PROJECT),
    "ProjectList": items_of("Project", paged=False),
    "ProjectDetail": obj({
        **_PROJECT,
        "thresholds": {"type": "object", "additionalProperties": _THRESHOLD},
        "incidents": {"type": "array", "items": ref("Incident"),
                      "description": "The project's open incidents."},
        "silence": nullable(ref("Silence")),
        "suspension": nullable(ref("Suspension")),
    }),
    "Silence": obj({"id": STRING, "starts_at": INSTANT, "ends_at": INSTANT, "reason": STRING,
                    "created_by": STRING}),
    "Suspension": obj({"reason": STRING, "by": STRING, "since": INSTANT,
                       "until": nullable(INSTANT)}),
    "History": obj({
        "project": STRING,
        "window": {"type": "string", "enum": ["24h", "7d", "30d"]},
        "since": INSTANT, "until": INSTANT,
        "uptime_percent": nullable({**NUMBER, "minimum": 0, "maximum": 100}),
        "hours": {"type": "array", "items": ref("ProbeHour")},
        "metrics": {"type": "object", "additionalProperties": {"type": "array",
                                                               "items": ref("MetricHour")}},
        "transitions": {"type": "array", "items": ref("Transition")},
    }),
    "ProbeHour": obj({
        "hour": INSTANT, "probes": COUNT, "failed": COUNT, "observed_s": NUMBER, "up_s": NUMBER,
        "uptime_percent": nullable(NUMBER), "latency_avg_ms": nullable(NUMBER),
        "latency_max_ms": nullable(NUMBER),
    }),
    "MetricHour": obj({"hour": INSTANT, "n": COUNT, "min": NUMBER, "avg": NUMBER, "max": NUMBER}),
    "Transition": obj({"ts": INSTANT, "from": nullable(STRING), "to": STRING, "reason": STRING}),
    "Incident": obj(_INCIDENT),
    "IncidentList": items_of("Incident"),
    "IncidentDetail": obj({
        **_INCIDENT,
        "actions": {"type": "array", "items": ref("Action")},
        "analyses": {"type": "array", "items": ref("Analysis")},
        "timeline": {"type": "array", "items": ref("Event"),
                     "description": "The incident's events, oldest first."},
    }),
    "Event": obj({
        "id": STRING, "type": {"type": "string", "enum": sorted(EVENT_TYPES)}, "ts": INSTANT,
        "source": STRING, "project": nullable(STRING), "incident_id": nullable(STRING),
        "payload": {"type": "object"},
    }),
    "EventList": items_of("Event"),
    "Action": obj({
        "id": STRING, "project": STRING, "action": STRING, "requested_by": STRING,
        "reason": STRING, "state": STRING, "needs_approval": {"type": "boolean"},
        "created_at": INSTANT, "incident_id": nullable(STRING), "origin": STRING,
        "outcome": nullable(STRING), "error": nullable(STRING), "executor": nullable(STRING),
        "started_at": nullable(INSTANT), "finished_at": nullable(INSTANT),
    }),
    "ActionList": items_of("Action"),
    "Approval": obj(_APPROVAL),
    "PendingApproval": obj({
        **_APPROVAL,
        "can_decide": {"type": "boolean",
                       "description": "Whether the caller may approve or deny it (four-eyes"
                       " is checked when deciding)."},
        "why_not": nullable({**STRING, "description": "Why the caller may not decide it."}),
    }),
    "PendingApprovalList": items_of("PendingApproval"),
    "Anomaly": obj({"metric": STRING, "severity": STRING, "summary": STRING,
                    "since": INSTANT}),
    "AgentActivity": obj({
        "since": INSTANT, "until": INSTANT, "minutes": COUNT,
        "agents": {"type": "array", "items": obj({
            "source": {**STRING, "description": "The events' source: an agent, api, slack…"},
            "agent": {"type": "boolean", "description": "One of orch's agents."},
            "events": COUNT, "per_minute": NUMBER, "last_at": nullable(INSTANT),
        })},
        "suspended": {"type": "array", "items": obj({
            "project": STRING, "reason": STRING, "by": STRING, "since": INSTANT,
            "until": nullable(INSTANT)})},
        "jobs": {"type": "array", "items": obj({"job": STRING, "last_run_at": INSTANT})},
    }),
    "Me": obj({
        "user": STRING, "mode": {"type": "string", "enum": ["local", "token"]},
        "local": {"type": "boolean"}, "slack_user": nullable(STRING),
        "may_decide": {"type": "boolean"},
    }),
    "Analysis": obj({
        "id": STRING, "created_at": INSTANT, "incident_id": STRING, "project": STRING,
        "engine": {"type": "string", "enum": ["claude", "rules"]}, "diagnosis": STRING,
        "recommended_action": nullable(STRING),
        "confidence": {**NUMBER, "minimum": 0, "maximum": 1}, "risk": STRING,
        "payload": {"type": "object"}, "input_tokens": COUNT, "output_tokens": COUNT,
        "latency_ms": NUMBER, "cost_usd": NUMBER, "requested_by": nullable(STRING),
    }),
    "AnalysisList": items_of("Analysis"),
    "DecisionBody": obj({"reason": {"type": "string", "maxLength": 500}}, optional=("reason",)),
    "Decision": obj({
        "outcome": {"type": "string", "enum": ["won"]},
        "decision": {"type": "string", "enum": ["granted", "denied"]},
        "approval": ref("Approval"),
    }),
    "OpenApi": {"type": "object", "description": "This document."},
}  # fmt: skip
