"""orch's HTTP API on a real port, over a real store, for the ``test_api*`` modules.

``api_world`` mounts ``bot.api.api_routes`` on orch's web app (``bot.web.make_web_app``),
as the runtime does, and gives a client whose every answer is checked against the
OpenAPI document the server itself serves: the operation's documented status and its
schema (JSON Schema 2020-12, date-times checked).  ``seed`` fills the store through its
own protocol with one of everything the endpoints show.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from slack_sdk.web.async_client import AsyncWebClient

from agents.actions import Requested, request_action
from agents.clock import FakeClock
from agents.events import (
    ANALYSIS_COMPLETED,
    INCIDENT_OPENED,
    PROJECT_STATUS_CHANGED,
    SILENCE_CREATED,
    Event,
)
from bot.api import ApiParts, api_routes
from bot.config import Config
from bot.settings import Settings
from bot.web import WebServer, make_web_app
from storage.base import Incident, MetricSample, ProbeRecord, Store
from storage.budget_store import Analysis, NewAnalysis
from storage.operations_store import Silence
from storage.sqlite import SQLiteStore

PREFIX = "/api/v1"
APPROVER, SECOND, OUTSIDER, ASKER, MEMBER = "U0BOSS", "U0BOSS2", "U0OUT", "U0ASKER", "U0MEMBER"
GROUP = "S0OPS"
# alice, bob and asker (the requester, for four-eyes) approve (listed), carol is mapped
# but approves nothing, dave only reads, mia is in the approvers' user group.
TOKENS = {
    "alice": "tok-alice-0123456789abcdef", "bob": "tok-bob-0123456789abcdef0",
    "carol": "tok-carol-0123456789abcdef", "dave": "tok-dave-0123456789abcdef",
    "asker": "tok-asker-0123456789abcdef", "mia": "tok-mia-0123456789abcdef00",
}  # fmt: skip
INCIDENT_ID = "1a2b3c4d5e6f708192a3b4c5d6e7f809"


def api_config(
    *, four_eyes: bool = False, allowed: list[str] | None = None, group: bool = False
) -> Config:
    actions = allowed if allowed is not None else ["restart", "clear_cache", "pause", "resume"]
    approvers = [APPROVER, SECOND, ASKER, *([GROUP] if group else [])]
    return Config.model_validate(
        {
            "orchestrators": {
                "outreach": {"channel": "#ops-outreach", "approvers": approvers,
                             "projects": ["email-blast"]},
                "support": {"channel": "#ops-support", "projects": ["chatbot"]},
            },
            "projects": [
                {"name": "email-blast", "url": "https://ops:hunter2@127.0.0.1:9/up?key=s3cret",
                 "control_secret_env": "EMAIL_BLAST_CONTROL_SECRET",
                 "allowed_actions": actions,
                 "needs_approval": [a for a in ["pause"] if a in actions],
                 "remediation": {"four_eyes": four_eyes, "approval_ttl": "30m"}},
                {"name": "chatbot", "url": "http://127.0.0.1:9", "allowed_actions": ["restart"],
                 "control_secret_env": "CHATBOT_CONTROL_SECRET"},
            ],
            "api_users": {"alice": APPROVER, "bob": SECOND, "carol": OUTSIDER, "asker": ASKER,
                          "mia": MEMBER},
        }
    )  # fmt: skip


def token_settings(**overrides: Any) -> Settings:
    return Settings(api_mode="token", api_tokens={t: u for u, t in TOKENS.items()}, **overrides)


class Validator:
    """Answers checked against the served OpenAPI document."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        resource = Resource.from_contents(doc, default_specification=DRAFT202012)
        self._registry: Registry[Any] = Registry().with_resource("urn:orch-api", resource)
        self._formats = FormatChecker()

        @self._formats.checks("date-time", raises=ValueError)
        def _instant(value: object) -> bool:
            if not isinstance(value, str):
                return True
            parsed = datetime.fromisoformat(value)
            return parsed.tzinfo is not None and value.endswith("Z")

    def check(self, method: str, template: str, status: int, body: Any) -> None:
        operation = self.doc["paths"][PREFIX + template][method.lower()]
        responses = operation["responses"]
        assert str(status) in responses, f"{method} {template}: {status} is not documented"
        schema = responses[str(status)]["content"]["application/json"]["schema"]
        ref = "urn:orch-api" + schema["$ref"]
        validator = Draft202012Validator(
            {"$ref": ref}, registry=self._registry, format_checker=self._formats
        )
        errors = sorted(validator.iter_errors(body), key=str)
        assert not errors, f"{method} {template} {status}: {errors[0]}"


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]

    @property
    def error(self) -> dict[str, Any]:
        assert isinstance(self.body, dict) and "error" in self.body, self.body
        return self.body["error"]  # type: ignore[no-any-return]


@dataclass
class ApiWorld:
    store: Store
    clock: FakeClock
    web: WebServer
    http: aiohttp.ClientSession
    configs: list[Config]  # [current]: tests swap it to "reload"
    wakes: list[int] = field(default_factory=lambda: [0])
    validator: Validator | None = None

    @property
    def url(self) -> str:
        return self.web.url

    async def request(
        self,
        method: str,
        template: str,
        *,
        path: dict[str, str] | None = None,
        query: Any = None,
        token: str | None = "alice",
        headers: dict[str, str] | None = None,
        validate: bool = True,
        **kwargs: Any,
    ) -> Answer:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {TOKENS.get(token, token)}"
        url = self.url + PREFIX + template.format(**(path or {}))
        async with self.http.request(method, url, params=query, headers=sent, **kwargs) as resp:
            text = await resp.text()
            assert resp.content_type == "application/json", (resp.status, text)
            answer = Answer(resp.status, json.loads(text), dict(resp.headers))
        if validate and self.validator is not None:
            self.validator.check(method, template, answer.status, answer.body)
        return answer

    async def get(self, template: str, **kwargs: Any) -> Answer:
        return await self.request("GET", template, **kwargs)

    async def post(self, template: str, **kwargs: Any) -> Answer:
        return await self.request("POST", template, **kwargs)

    async def decide(self, approval_id: str, verb: str = "approve", **kwargs: Any) -> Answer:
        return await self.post(f"/approvals/{{id}}/{verb}", path={"id": approval_id}, **kwargs)


@asynccontextmanager
async def api_world(
    *,
    settings: Settings | None = None,
    config: Config | None = None,
    store: Store | None = None,
    clock: FakeClock | None = None,
    wake: Callable[[], None] | None = None,
    slack_client: AsyncWebClient | None = None,
    operator: str = "operator-ann",
) -> AsyncIterator[ApiWorld]:
    clock = clock or FakeClock()
    store = store or SQLiteStore(":memory:", clock=clock)
    configs = [config or api_config()]
    wakes = [0]

    def woken() -> None:
        wakes[0] += 1
        if wake is not None:
            wake()

    parts = ApiParts(store, lambda: configs[0], clock, settings or token_settings(), woken,
                     slack_client=slack_client, operator=operator)  # fmt: skip
    await store.open()
    web = WebServer(make_web_app(dict, routes=api_routes(parts)), "127.0.0.1", 0)
    try:
        await web.start()
        async with aiohttp.ClientSession() as http:
            w = ApiWorld(store, clock, web, http, configs, wakes)
            doc = await w.get("/openapi.json", token=None, validate=False)
            assert doc.status == 200
            w.validator = Validator(doc.body)
            yield w
    finally:
        await web.stop()
        await store.close()


# -- seeding ------------------------------------------------------------------------------


@dataclass
class Seeded:
    incident: Incident
    approval_id: str
    action_id: str  # the approval's
    restart_id: str  # an action that needed no approval
    analysis: Analysis


async def open_incident(store: Store, clock: FakeClock, incident_id: str = INCIDENT_ID) -> Incident:
    now = clock.now()

    def announce(incident: Incident) -> Event:
        payload = {"fingerprint": incident.fingerprint, "severity": "critical",
                   "summary": incident.summary}  # fmt: skip
        return Event(INCIDENT_OPENED, now, "test", payload, incident.project, incident.id)

    row = Incident(incident_id, "email-blast:down", "email-blast", "down", "critical",
                   "email-blast is down", now)  # fmt: skip
    opened = await store.open_incident(row, announce)
    assert opened is not None
    return opened


async def ask(
    store: Store, action: str = "pause", *, by: str = ASKER, incident_id: str | None = None
) -> Requested:
    """An action request that waits for approval (pause always does here)."""
    return await request_action(store, "email-blast", action, requested_by=by,
                                reason="queue stuck", origin="user", needs_approval=True,
                                incident_id=incident_id, source="test")  # fmt: skip


async def seed(store: Store, clock: FakeClock) -> Seeded:
    """Three hours of probes and metrics (rolled up), status changes, an open incident
    with an action, an approval and an analysis, a silence on chatbot."""
    start = clock.now()
    probes, samples = [], []
    for minute in range(0, 180, 5):
        ts = start + timedelta(minutes=minute)
        failed = 60 <= minute < 75
        level, latency = ("fail", 5000.0) if failed else ("pass", 12.5)
        probes.append(ProbeRecord("email-blast", ts, level, latency, "refused" if failed else ""))
        samples.append(MetricSample("email-blast", ts, "memory_percent", 40.0 + minute / 10))
        samples.append(MetricSample("email-blast", ts, "error_rate", float("nan")))
    await store.add_probes(probes)
    await store.add_metric_samples(samples)
    changes = (("healthy", "unknown", 0), ("down", "healthy", 62), ("healthy", "down", 76))
    for to, frm, at in changes:
        payload = {"from": frm, "to": to, "reason": f"probe said {to}", "probe": {"ms": 1}}
        ts = start + timedelta(minutes=at)
        await store.append_events([Event(PROJECT_STATUS_CHANGED, ts, "test", payload,
                                         "email-blast")])  # fmt: skip
    await clock.advance(3 * 3600 + 60)
    await store.rollup_hours(clock.now())
    incident = await open_incident(store, clock)
    restart = await request_action(store, "email-blast", "restart", requested_by="autofixer",
                                   reason="down", origin="autofix", needs_approval=False,
                                   incident_id=incident.id, source="test")  # fmt: skip
    asked = await ask(store, incident_id=incident.id)
    assert asked.approval is not None

    def analysed(a: Analysis) -> Event:
        return Event(ANALYSIS_COMPLETED, a.created_at, "test", {"diagnosis": a.new.diagnosis},
                     a.new.project, a.new.incident_id)  # fmt: skip

    analysis = await store.record_analysis(
        NewAnalysis(incident.id, "email-blast", "rules", "the process crashed", "restart", 0.8,
                    "low", {"evidence": ["exit 137", float("inf")]}, 10, 20, 3.5, 0.01),
        analysed,
    )  # fmt: skip

    def silenced(s: Silence) -> Event:
        return Event(SILENCE_CREATED, s.starts_at, "test", {"until": s.ends_at.isoformat()},
                     s.project)  # fmt: skip

    await store.create_silence("chatbot", clock.now() + timedelta(hours=1), "maintenance",
                               APPROVER, silenced)  # fmt: skip
    return Seeded(incident, asked.approval.id, asked.action.id, restart.action.id, analysis)
