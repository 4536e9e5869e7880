"""The pieces of the interaction burst (tests/test_interaction_burst.py): projects that
count their ``/control`` calls, a fake Slack that notes when each answer arrived, a Redis
database of the test's own, and the load generator that posts signed requests to the
replicas round-robin and times their acks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from bot.config import Config
from bot.runtime import Runtime
from demo.services.listener import Listener
from orch_kit import Callbacks, Check, Contract, ControlRequest, Health, LogEntry, LogQuery
from tests.fake_slack import (
    Call,
    FakeSlack,
    block_action,
    form_body,
    interactive_body,
    signed_headers,
    slash_command,
)

SIGNING = "burst-signing-secret"
SECRET = b"burst-control-secret"
ENV = {"BURST_CONTROL_SECRET": SECRET.decode()}
ASKER, BOSS, ALICE, BOB = "U0ASKER", "U0BOSS", "U0ALICE", "U0BOB"  # Alice, Bob: in S0OPS
USERGROUPS = {"S0OPS": [ALICE, BOB]}


class Project:
    """A contract service that is always healthy; it counts every HTTP request to
    ``/control`` (authentic or not) and records the authentic ones' idempotency keys."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.control_requests = 0
        self.keys: list[str] = []  # one per authentic /control call: the action's id
        callbacks = Callbacks(
            health=lambda: Health.from_checks({"app:ok": [Check("pass")]}),
            metrics=lambda: {"cpu_percent": 1.0},
            status=lambda: {"state": "running", "queue_depth": 0, "uptime_s": 1.0},
            logs=self._logs, control=self._control,
        )  # fmt: skip
        self.contract = Contract(callbacks, secret=SECRET)
        self.listener = Listener(self._app, "127.0.0.1", 0)

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._count])
        self.contract.mount(app)
        return app

    @web.middleware
    async def _count(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/control":
            self.control_requests += 1
        response: web.StreamResponse = await handler(request)
        return response

    def _logs(self, query: LogQuery) -> list[LogEntry]:
        return []

    async def _control(self, request: ControlRequest) -> dict[str, Any]:
        self.keys.append(request.idempotency_key)
        return {}


def burst_config(projects: dict[str, Project]) -> Config:
    """Each project in a group of its own, with its own channel (the outbox paces one
    message a second per channel); approvers: Boss by id, Alice and Bob by user group."""
    remediation = {"verify_interval": "200ms", "verify_timeout": "5s", "control_timeout": "2s"}
    return Config.model_validate({
        "defaults": {"interval": "5s", "timeout": "1s", "remediation": remediation,
                     "max_concurrent_remediations": 8},
        "orchestrators": {
            f"team-{name}": {"channel": f"#ops-{name}", "approvers": [BOSS, "S0OPS"],
                             "projects": [name]} for name in projects
        },
        "projects": [
            {"name": name, "url": p.listener.url, "control_secret_env": "BURST_CONTROL_SECRET",
             "allowed_actions": ["restart"]} for name, p in projects.items()
        ],
    })  # fmt: skip


class TimedSlack(FakeSlack):
    """The fake Slack, noting when each response_url answer arrived (loop time)."""

    def __init__(self) -> None:
        super().__init__(usergroups=USERGROUPS)
        self.arrived: dict[str, float] = {}

    async def _record(self, call: Call) -> None:
        if call.method == "response_url":
            self.arrived[call.params["_name"]] = asyncio.get_running_loop().time()
        await super()._record(call)


@dataclass
class Sent:
    kind: str  # status | restart | click
    replica: int
    reply_to: str  # the response_url's name: one per request
    started: float = 0.0  # loop time
    ack_s: float = 0.0
    status: int = 0
    body: str = ""
    approval: str = ""  # clicks: the approval id
    click: tuple[str, str] = ("", "")  # clicks: (action id, user)


@dataclass
class Burst:
    slack: TimedSlack
    runtimes: list[Runtime]
    http: aiohttp.ClientSession
    sent: list[Sent] = field(default_factory=list)

    async def send(self, kind: str, body: str, **fields: Any) -> Sent:
        """The next request, to the next replica (round-robin); its ack timed from the
        request to the whole HTTP answer."""
        n = len(self.sent)
        request = Sent(kind, n % len(self.runtimes), f"{kind}-{n}", **fields)
        self.sent.append(request)
        web_server = self.runtimes[request.replica].web
        assert web_server is not None
        body = body.replace("REPLY_TO", self.slack.response_url(request.reply_to))
        loop = asyncio.get_running_loop()
        request.started = loop.time()
        async with self.http.post(f"{web_server.url}/slack/events", data=body,
                                  headers=signed_headers(SIGNING, body)) as response:  # fmt: skip
            request.body = await response.text()
            request.status = response.status
        request.ack_s = loop.time() - request.started
        return request

    async def command(self, text: str, user: str = ASKER) -> Sent:
        body = form_body(slash_command(text, "REPLY_TO", user_id=user))
        return await self.send(text.split()[0], body)

    def clicks(
        self, approval: str, channel: str, pattern: list[tuple[str, str]], status: str
    ) -> list[Coroutine[Any, Any, Sent]]:
        """One card's clicks, to be started together (consecutive requests: three
        replicas), then ``/orch <status>``."""
        requests = []
        for action_id, user in pattern:
            payload = block_action(action_id, approval, user=user, response_url="REPLY_TO",
                                   channel=channel)  # fmt: skip
            requests.append(self.send("click", interactive_body(payload), approval=approval,
                                      click=(action_id, user)))  # fmt: skip
        requests.append(self.command(status))
        return requests

    def answer_s(self) -> list[float]:
        """Per request: seconds from sending it to its answer at its response_url."""
        return [self.slack.arrived[s.reply_to] - s.started for s in self.sent]


def approval_cards(slack: FakeSlack, start: int) -> tuple[int, list[tuple[str, str]]]:
    """(chat.postMessage calls seen, (approval id, channel) of each new approval card)."""
    posts = slack.calls_to("chat.postMessage")
    found = []
    for call in posts[start:]:
        blocks = call.params.get("blocks")
        blocks = json.loads(blocks) if isinstance(blocks, str) else blocks or []
        for block in blocks:
            values = {e.get("value") for e in block.get("elements", []) if "value" in e}
            if block.get("type") == "actions" and len(values) == 1:
                found.append((values.pop(), str(call.params.get("channel"))))
    return len(posts), found


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"p50 {percentile(ms, 0.5):.0f} ms, p99 {percentile(ms, 0.99):.0f} ms, max {max(ms):.0f} ms"
    )
