"""The HTTP API (issue 8): each endpoint's shape, validated against the OpenAPI document
orch serves; bad input as 4xx JSON naming what was wrong; token and local modes.

Real store (SQLite), real web app on an ephemeral port, FakeClock; nothing sleeps.
Deciding approvals, exactly once: ``test_api_approvals``; the property-based run against
the document: ``test_api_fuzz``.
"""

from __future__ import annotations

import io
import logging

import pytest

from agents.events import INCIDENT_RESOLVED, Event
from bot.api import ApiSetupError, api_mode, check_api_setup
from bot.api.endpoints import ENDPOINTS
from bot.api.openapi import PREFIX
from bot.config import Config
from bot.settings import Settings, parse_api_tokens
from storage.base import Incident
from tests.api_harness import (
    INCIDENT_ID,
    TOKENS,
    api_config,
    api_world,
    ask,
    open_incident,
    seed,
)

# -- every endpoint's shape ---------------------------------------------------------------


async def test_the_document_describes_every_endpoint_the_server_mounts() -> None:
    async with api_world() as w:
        doc = w.validator.doc if w.validator else {}
        assert doc["openapi"] == "3.1.0"
        documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
        assert documented == {(e.method, PREFIX + e.path) for e in ENDPOINTS}
        assert doc["security"] == [{"bearer": []}]
        for ops in doc["paths"].values():
            for op in ops.values():
                assert "500" in op["responses"]
                if op.get("security") != []:
                    assert {"401", "403"} <= set(op["responses"])


async def test_projects_show_config_status_uptime_incidents_and_silences() -> None:
    async with api_world() as w:
        seeded = await seed(w.store, w.clock)
        answer = await w.get("/projects")
        assert answer.status == 200
        assert answer.headers["Cache-Control"] == "no-store"
        blast, chatbot = answer.body["items"]
        assert blast["name"] == "email-blast" and blast["group"] == "outreach"
        assert blast["channel"] == "#ops-outreach"
        assert blast["url"] == "https://127.0.0.1:9/up"  # no credentials, no query
        assert blast["status"] == "healthy"  # the last announced transition
        assert blast["open_incidents"] == 1
        assert 85 < blast["uptime_24h"] < 95  # 15 of 180 minutes down
        assert blast["needs_approval"] == ["pause"] and blast["auto_fix"] is True
        assert chatbot["status"] == "unknown" and chatbot["uptime_24h"] is None
        assert chatbot["silenced_until"] == "2026-01-01T04:01:00Z"

        one = await w.get("/projects/{name}", path={"name": "email-blast"})
        assert one.status == 200
        assert [i["id"] for i in one.body["incidents"]] == [seeded.incident.id]
        assert one.body["thresholds"]["memory_percent"] == {
            "warn": 85.0, "crit": 95.0, "direction": "above"
        }  # fmt: skip
        assert one.body["silence"] is None and one.body["suspension"] is None
        bot = await w.get("/projects/{name}", path={"name": "chatbot"})
        assert bot.body["silence"]["reason"] == "maintenance"


async def test_history_has_hourly_rollups_metric_hours_and_transitions() -> None:
    async with api_world() as w:
        await seed(w.store, w.clock)
        answer = await w.get("/projects/{name}/history", path={"name": "email-blast"},
                             query={"window": "24h"})  # fmt: skip
        assert answer.status == 200
        body = answer.body
        assert body["window"] == "24h" and body["until"] == "2026-01-01T03:01:00Z"
        assert [h["hour"] for h in body["hours"]] == [
            "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z"
        ]  # fmt: skip
        second = body["hours"][1]
        assert second["probes"] == 12 and second["failed"] == 3
        assert second["uptime_percent"] == pytest.approx(75.0)
        assert second["latency_max_ms"] == 12.5  # failed probes' latency is not counted
        memory = body["metrics"]["memory_percent"]
        assert len(memory) == 3 and memory[0]["min"] == 40.0
        assert body["metrics"]["error_rate"] == []  # only NaN samples: nothing finite
        assert [(t["from"], t["to"]) for t in body["transitions"]] == [
            ("unknown", "healthy"), ("healthy", "down"), ("down", "healthy")
        ]  # fmt: skip
        assert 85 < body["uptime_percent"] < 95
        week = await w.get("/projects/{name}/history", path={"name": "email-blast"},
                           query={"window": "7d"})  # fmt: skip
        assert week.body["since"] == "2025-12-25T03:01:00Z"
        default = await w.get("/projects/{name}/history", path={"name": "chatbot"})
        assert default.body["window"] == "24h" and default.body["hours"] == []


async def test_incidents_list_and_detail_with_actions_analyses_and_timeline() -> None:
    async with api_world() as w:
        seeded = await seed(w.store, w.clock)
        await w.clock.advance(60)
        resolved_id = "ffff" + INCIDENT_ID[4:]
        other = await w.store.list_incidents()
        assert len(other) == 1
        await w.store.resolve_incident("email-blast:down", w.clock.now(), _resolved)
        await w.clock.advance(60)
        await open_incident(w.store, w.clock, resolved_id)

        every = await w.get("/incidents")
        assert [i["id"] for i in every.body["items"]] == [resolved_id, INCIDENT_ID]
        assert every.body["page"] == {"limit": 50, "offset": 0, "next_offset": None}
        opened = await w.get("/incidents", query={"state": "open"})
        assert [i["id"] for i in opened.body["items"]] == [resolved_id]
        resolved = await w.get("/incidents", query={"state": "resolved", "project": "email-blast"})
        (row,) = resolved.body["items"]
        assert row["id"] == INCIDENT_ID and row["duration_s"] == 60.0
        assert row["resolved_at"] == "2026-01-01T03:02:00Z"
        page = await w.get("/incidents", query={"limit": 1})
        assert page.body["page"]["next_offset"] == 1
        page2 = await w.get("/incidents", query={"limit": 1, "offset": 1})
        assert [i["id"] for i in page2.body["items"]] == [INCIDENT_ID]
        assert page2.body["page"]["next_offset"] is None

        detail = await w.get("/incidents/{id}", path={"id": INCIDENT_ID})
        assert detail.status == 200
        body = detail.body
        assert body["state"] == "resolved"
        assert [a["id"] for a in body["actions"]] == [seeded.restart_id, seeded.action_id]
        assert body["actions"][1]["state"] == "awaiting_approval"
        (analysis,) = body["analyses"]
        assert analysis["diagnosis"] == "the process crashed"
        assert analysis["payload"]["evidence"] == ["exit 137", None]  # no Infinity in JSON
        kinds = [e["type"] for e in body["timeline"]]
        assert kinds == [
            "incident.opened", "action.requested", "action.requested", "approval.requested",
            "analysis.completed", "incident.resolved",
        ]  # fmt: skip

        analyses = await w.get("/analyses", query={"incident": INCIDENT_ID})
        assert [a["id"] for a in analyses.body["items"]] == [seeded.analysis.id]


async def test_events_actions_and_approvals_filter_and_page() -> None:
    async with api_world() as w:
        seeded = await seed(w.store, w.clock)
        events = await w.get("/events", query={"limit": 2})
        assert [e["type"] for e in events.body["items"]] == ["silence.created",
                                                            "analysis.completed"]  # fmt: skip
        assert events.body["page"]["next_offset"] == 2
        changes = await w.get("/events", query={"type": "project.status_changed",
                                                "since": "2026-01-01T01:00:00+00:00"})  # fmt: skip
        assert [e["payload"]["to"] for e in changes.body["items"]] == ["healthy", "down"]
        both = await w.get("/events", query={"type": "incident.opened,silence.created",
                                             "project": "chatbot"})  # fmt: skip
        assert [e["type"] for e in both.body["items"]] == ["silence.created"]
        later = await w.get("/events", query={"since": "2026-01-01T05:00:00+02:00"})
        assert {e["type"] for e in later.body["items"]} >= {"incident.opened"}

        actions = await w.get("/actions", query={"project": "email-blast"})
        assert [a["id"] for a in actions.body["items"]] == [seeded.action_id, seeded.restart_id]
        assert (await w.get("/actions", query={"project": "chatbot"})).body["items"] == []

        pending = await w.get("/approvals")
        (approval,) = pending.body["items"]
        assert approval["id"] == seeded.approval_id and approval["state"] == "pending"
        assert approval["expires_at"] == "2026-01-01T03:31:00Z"
        none = await w.get("/approvals", query={"project": "chatbot"})
        assert none.body["items"] == []


# -- bad input: 4xx JSON that says what was wrong -------------------------------------------

BAD_QUERIES = [
    ("/incidents", {"limit": "-1"}, "query.limit"),
    ("/incidents", {"limit": "0"}, "query.limit"),
    ("/incidents", {"limit": "501"}, "query.limit"),
    ("/incidents", {"limit": "1e3"}, "query.limit"),
    ("/incidents", {"offset": "-5"}, "query.offset"),
    ("/incidents", {"state": "closed"}, "query.state"),
    ("/incidents", {"project": "Email Blast"}, "query.project"),
    ("/incidents", {"limt": "5"}, "query.limt"),
    ("/projects/{name}/history", {"window": "3y"}, "query.window"),
    ("/events", {"since": "yesterday"}, "query.since"),
    ("/events", {"since": "2026-01-01T00:00:00"}, "query.since"),  # no time zone
    ("/events", {"since": "0001-01-01T00:00:00+01:00"}, "query.since"),  # out of range
    ("/events", {"type": "nope"}, "query.type"),
    ("/events", {"type": ""}, "query.type"),
    ("/events", {"limit": "1001"}, "query.limit"),
    ("/analyses", {}, "query.incident"),
    ("/projects", {"limit": "5"}, "query.limit"),
]


@pytest.mark.parametrize(("template", "query", "where"), BAD_QUERIES)
async def test_bad_query_parameters_are_400s_naming_the_parameter(
    template: str, query: dict[str, str], where: str
) -> None:
    async with api_world() as w:
        answer = await w.get(template, path={"name": "email-blast"}, query=query)
        assert answer.status == 400
        assert answer.error["code"] == "bad_parameter" and answer.error["where"] == where
        assert answer.error["message"].startswith(where.split(".")[1] + ":")


async def test_a_parameter_given_twice_is_a_400() -> None:
    async with api_world() as w:
        answer = await w.get("/events", query=[("limit", "5"), ("limit", "6")])
        assert answer.status == 400 and answer.error["where"] == "query.limit"
        assert "more than once" in answer.error["message"]


async def test_unknown_projects_incidents_and_approvals_are_404s_saying_which() -> None:
    async with api_world() as w:
        for template, path, query, where, needle in [
            ("/projects/{name}", {"name": "billing"}, None, "path.name", "'billing'"),
            ("/projects/{name}/history", {"name": "billing"}, None, "path.name", "'billing'"),
            ("/incidents/{id}", {"id": "deadbeef"}, None, "path.id", "'deadbeef'"),
            ("/incidents", {}, {"project": "billing"}, "query.project", "'billing'"),
            ("/events", {}, {"project": "billing"}, "query.project", "'billing'"),
            ("/analyses", {}, {"incident": "deadbeef"}, "query.incident", "'deadbeef'"),
        ]:
            answer = await w.get(template, path=path, query=query)
            assert answer.status == 404, (template, answer.body)
            assert answer.error["where"] == where and needle in answer.error["message"]
        gone = await w.decide("0" * 32)
        assert gone.status == 404 and gone.error["code"] == "unknown_approval"


async def test_wrong_methods_are_405s_with_allow_and_unknown_paths_404s_as_json() -> None:
    async with api_world() as w:
        answer = await w.request("DELETE", "/projects", validate=False)
        assert answer.status == 405 and answer.headers["Allow"] == "GET, HEAD"
        assert answer.error["code"] == "method_not_allowed"
        get_a_post = await w.request("GET", "/approvals/{id}/approve", path={"id": "x"},
                                     validate=False)  # fmt: skip
        assert get_a_post.status == 405 and get_a_post.headers["Allow"] == "POST"
        for path in ("/nope", "/projects/email-blast/nope", "", "/"):
            missing = await w.request("GET", path, validate=False)
            assert missing.status == 404 and missing.error["code"] == "not_found"


@pytest.mark.parametrize(
    ("body", "headers", "where"),
    [
        ("{", {"Content-Type": "application/json"}, "body"),
        ("[1]", {"Content-Type": "application/json"}, "body"),
        ('{"reason": 5}', {"Content-Type": "application/json"}, "body.reason"),
        ('{"reason": "' + "x" * 501 + '"}', {"Content-Type": "application/json"}, "body.reason"),
        ('{"why": "x"}', {"Content-Type": "application/json"}, "body.why"),
        ('{"reason": NaN}', {"Content-Type": "application/json"}, "body"),
        ("reason=ok", {"Content-Type": "application/x-www-form-urlencoded"}, "body"),
        (b'{"reason": "\xff"}', {"Content-Type": "application/json"}, "body"),
    ],
)
async def test_a_malformed_body_is_a_400_and_decides_nothing(
    body: str | bytes, headers: dict[str, str], where: str
) -> None:
    async with api_world() as w:
        asked = await ask(w.store)
        assert asked.approval is not None
        answer = await w.decide(asked.approval.id, data=body, headers=headers)
        assert answer.status == 400 and answer.error["where"] == where
        row = await w.store.get_approval(asked.approval.id)
        assert row is not None and row.state == "pending"


async def test_a_body_over_the_size_limit_is_a_413() -> None:
    async with api_world() as w:
        asked = await ask(w.store)
        assert asked.approval is not None
        big = io.BytesIO(b'{"reason": "' + b"x" * (2 << 20) + b'"}')
        answer = await w.decide(asked.approval.id, data=big,
                                headers={"Content-Type": "application/json"})  # fmt: skip
        assert answer.status == 413 and answer.error["where"] == "body"


async def test_an_unexpected_failure_is_a_500_json_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with api_world() as w:
        await w.store.close()  # the store is gone under the API: nothing input can cause
        with caplog.at_level(logging.ERROR, logger="bot.api.errors"):
            answer = await w.get("/projects")
        assert answer.status == 500
        assert answer.error == {"code": "internal",
                                "message": "orch failed to answer; the log says why"}  # fmt: skip
        assert "Traceback" in caplog.text and "GET /api/v1/projects failed" in caplog.text
        await w.store.open()  # for the harness to close


# -- token mode ---------------------------------------------------------------------------


async def test_token_mode_answers_401_without_a_valid_token() -> None:
    async with api_world() as w:
        for headers in ({}, {"Authorization": "Basic YWxpY2U6eA=="},
                        {"Authorization": "Bearer"}, {"Authorization": "Bearer not-a-token"},
                        {"Authorization": f"Bearer {TOKENS['alice']}x"}):  # fmt: skip
            answer = await w.get("/projects", token=None, headers=headers)
            assert answer.status == 401, headers
            assert answer.error["where"] == "header.Authorization"
            assert answer.headers["WWW-Authenticate"].startswith('Bearer realm="orch"')
        assert (await w.decide("0" * 32, token="bad-token-0123456789")).status == 401
        # The scheme is case-insensitive; every valid token reads.
        ok = await w.get("/projects", token=None,
                         headers={"Authorization": f"bearer {TOKENS['dave']}"})  # fmt: skip
        assert ok.status == 200
        assert (await w.get("/openapi.json", token=None)).status == 200  # the document is public


async def test_an_unauthenticated_caller_learns_nothing_about_parameters() -> None:
    async with api_world() as w:
        answer = await w.get("/events", token=None, query={"type": "nope"})
        assert answer.status == 401


def test_settings_read_the_api_mode_and_tokens_from_the_environment() -> None:
    env = {"ORCH_API_TOKENS": "alice:0123456789abcdef0, ci-bot:fedcba9876543210f"}
    settings = Settings.from_env(env)
    assert settings.api_tokens == {"0123456789abcdef0": "alice", "fedcba9876543210f": "ci-bot"}
    assert api_mode(settings) == "token"
    assert "0123456789abcdef0" not in repr(settings)
    assert api_mode(Settings.from_env({})) == "off"
    assert api_mode(Settings.from_env({**env, "ORCH_API_MODE": "off"})) == "off"
    with pytest.raises(ValueError, match="ORCH_API_MODE must be one of"):
        Settings.from_env({"ORCH_API_MODE": "public"})
    for bad, message in [
        ("alice", "entry 1 must be user:token"),
        ("alice:short", "at least 16 characters"),
        ("Alice:0123456789abcdef0", "entry 1 must be user:token"),
        ("a:0123456789abcdef0,b:0123456789abcdef0", "entry 2 .* already given to a"),
    ]:
        with pytest.raises(ValueError, match=message) as caught:
            parse_api_tokens(bad)
        assert "0123456789abcdef0" not in str(caught.value)
    with pytest.raises(ApiSetupError, match="needs ORCH_API_TOKENS"):
        check_api_setup(Settings(api_mode="token"))


def test_api_users_map_names_to_slack_user_ids_only() -> None:
    assert api_config().api_users["alice"] == "U0BOSS"
    with pytest.raises(ValueError, match="not a user group"):
        Config.model_validate({"api_users": {"ops": "S0OPS"}})
    with pytest.raises(ValueError, match="API user name"):
        Config.model_validate({"api_users": {"Ops Team": "U0BOSS"}})


# -- local mode ---------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "orch.example.com", "", "::"])
def test_local_mode_refuses_to_serve_on_a_non_loopback_host(host: str) -> None:
    with pytest.raises(ApiSetupError, match="only on a loopback address"):
        check_api_setup(Settings(api_mode="local", host=host))


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_local_mode_serves_on_loopback(host: str) -> None:
    assert check_api_setup(Settings(api_mode="local", host=host)) == "local"


async def test_local_mode_needs_no_token_but_refuses_other_hosts_and_origins() -> None:
    async with api_world(settings=Settings(api_mode="local")) as w:
        assert "security" not in (w.validator.doc if w.validator else {})
        assert (await w.get("/projects", token=None)).status == 200
        mine = {"Origin": f"http://localhost:{w.web.port}", "Host": f"localhost:{w.web.port}"}
        assert (await w.get("/projects", token=None, headers=mine)).status == 200
        rebound = await w.get("/projects", token=None, headers={"Host": "evil.example:80"})
        assert rebound.status == 403 and rebound.error["where"] == "header.Host"
        for origin in ("https://evil.example", "null"):
            asked = await ask(w.store)
            assert asked.approval is not None
            csrf = await w.decide(asked.approval.id, token=None, headers={"Origin": origin})
            assert csrf.status == 403 and csrf.error["where"] == "header.Origin"
            row = await w.store.get_approval(asked.approval.id)
            assert row is not None and row.state == "pending"
            await w.decide(asked.approval.id, "deny", token=None)


def _resolved(incident: Incident) -> Event:
    assert incident.resolved_at is not None
    return Event(INCIDENT_RESOLVED, incident.resolved_at, "test",
                 {"fingerprint": incident.fingerprint, "duration_s": incident.duration_s},
                 incident.project, incident.id)  # fmt: skip
