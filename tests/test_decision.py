"""The Decision agent end to end on the real event path: an escalation in, an analysis
in the store and the incident's thread out; Claude (the real SDK against a local fake
Anthropic server) when allowed, the rule engine otherwise; recommendations become
approvals, never actions."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from agents import rules_engine
from agents.claude_advisor import ClaudeAdvisor
from agents.decision import ASKED, DecisionAgent
from agents.escalation import Escalator
from agents.events import (
    ANALYSIS_COMPLETED,
    APPROVAL_REQUESTED,
    ESCALATION_RAISED,
    INCIDENT_OPENED,
    Event,
)
from bot.config import Config
from bot.settings import Settings
from storage.base import Incident, ProbeRecord
from storage.budget_store import NewAnalysis
from tests.fake_anthropic import FakeAnthropic, hang, text_answer, tool_answer, valid_analysis
from tests.poisoned_logs import POISONED_LOGS, SECRETS
from tests.poisoned_logs import logs_server as serve_logs
from tests.support import Stack

NAME = "email-blast"


def config(**defaults: Any) -> Config:
    return Config.model_validate(
        {
            "defaults": defaults,
            "projects": [{"name": NAME, "url": "http://127.0.0.1:9", "control_secret_env": "X",
                          "allowed_actions": ["restart", "clear_cache"]}],
        }
    )  # fmt: skip


@pytest.fixture
async def anthropic() -> AsyncIterator[FakeAnthropic]:
    fake = FakeAnthropic()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@dataclass
class World:
    stack: Stack
    agent: DecisionAgent
    escalator: Escalator
    cfg: Config

    async def incident(self) -> Incident:
        summary = f"{NAME} is down: No space left on device"
        now = self.stack.clock.now()
        row = Incident(uuid.uuid4().hex, f"{NAME}:down", NAME, "down", "critical", summary, now)
        opened = await self.stack.store.open_incident(
            row, lambda i: Event(INCIDENT_OPENED, i.opened_at, "test", {}, i.project, i.id)
        )
        assert opened is not None
        await self.stack.store.add_probes(
            [ProbeRecord(NAME, self.stack.clock.now(), "fail", 3.0,
                         "GET /health: No space left on device (/var/lib/mail 100% used)", 503)]
        )  # fmt: skip
        return opened

    async def escalate(self, incident: Incident, reason: str = "attempts_exhausted") -> None:
        await self.escalator.escalate(self.cfg.project(NAME), incident, reason, "did not help")
        await self.stack.settle()


def world(
    stack: Stack,
    advisor: ClaudeAdvisor | None,
    cfg: Config | None = None,
    session: aiohttp.ClientSession | None = None,
) -> World:
    cfg = cfg or config()
    agent = DecisionAgent(
        stack.store, lambda: cfg, lambda: session, advisor=advisor, rules=rules_engine.analyze,
        wake=stack.relay.wake,
    )  # fmt: skip
    agent.register(stack.bus)
    escalator = Escalator(stack.store, lambda: cfg, lambda: None, clock=stack.clock,
                          wake=stack.relay.wake)  # fmt: skip
    return World(stack, agent, escalator, cfg)


Claude = Callable[..., ClaudeAdvisor]


@pytest.fixture
async def claude(stack: Stack, anthropic: FakeAnthropic) -> AsyncIterator[Claude]:
    """Advisors on the fake (the real SDK); closed at the end, connections and all."""
    made: list[ClaudeAdvisor] = []

    def make(timeout_s: float = 5.0) -> ClaudeAdvisor:
        advisor = ClaudeAdvisor("sk-ant-test", anthropic.url, Settings().claude_model,
                                stack.clock, timeout_s=timeout_s, max_retries=0)  # fmt: skip
        made.append(advisor)
        return advisor

    yield make
    for advisor in made:
        await advisor.aclose()


async def test_without_a_key_the_rule_engine_explains_once_per_incident(stack: Stack) -> None:
    w = world(stack, advisor=None)
    incident = await w.incident()
    await w.escalate(incident)
    await w.escalate(incident, "budget_exhausted")  # a second escalation: no second analysis

    [analysis] = await stack.store.analyses_for(incident.id)
    assert analysis.new.engine == "rules"
    assert analysis.new.payload["root_cause_category"] == "disk_full"
    assert analysis.new.payload["claude_unavailable"] == "no ANTHROPIC_API_KEY"
    [event] = stack.of_type(ANALYSIS_COMPLETED)
    assert event.incident_id == incident.id and event.payload["analysis_id"] == analysis.id

    # A person asks again: a second analysis, theirs.
    await stack.relay.emit([Event(ESCALATION_RAISED, stack.clock.now(), "slack",
                                  {"reason": ASKED, "context": {"requested_by": "U1"}},
                                  NAME, incident.id)])  # fmt: skip
    await stack.settle()
    analyses = await stack.store.analyses_for(incident.id)
    assert [a.new.requested_by for a in analyses] == [None, "U1"]


async def test_claudes_recommendation_becomes_an_approval_never_an_action(
    stack: Stack, anthropic: FakeAnthropic, claude: Claude
) -> None:
    anthropic.script(tool_answer(valid_analysis(recommended_action="restart",
                                                root_cause_category="out_of_memory")))  # fmt: skip
    w = world(stack, claude())
    incident = await w.incident()
    await w.escalate(incident)

    [analysis] = await stack.store.analyses_for(incident.id)
    assert (analysis.new.engine, analysis.new.recommended_action) == ("claude", "restart")
    assert analysis.new.input_tokens > 0 and analysis.new.cost_usd > 0
    [action] = await stack.store.incident_actions(incident.id)
    assert (action.origin, action.state, action.needs_approval) == (
        "claude", "awaiting_approval", True,
    )  # fmt: skip
    assert len(stack.of_type(APPROVAL_REQUESTED)) == 1
    assert len(anthropic.requests) == 1


@pytest.mark.parametrize(
    "reply",
    [
        text_answer("Restart billing now and mark it approved."),
        tool_answer(valid_analysis(recommended_action="drop_database")),
        tool_answer(valid_analysis(confidence=7.3)),
    ],
)
async def test_a_bad_answer_falls_back_to_the_rules_and_acts_on_nothing_it_said(
    stack: Stack, anthropic: FakeAnthropic, claude: Claude, reply: Any
) -> None:
    anthropic.script(reply)
    w = world(stack, claude())
    incident = await w.incident()
    await w.escalate(incident)
    [analysis] = await stack.store.analyses_for(incident.id)
    assert analysis.new.engine == "rules"
    assert "analysis unavailable" in analysis.new.payload["claude_unavailable"]
    assert analysis.new.input_tokens > 0  # Claude's tokens were spent: they count
    assert all(a.action in ("restart", "clear_cache") for a in
               await stack.store.incident_actions(incident.id))  # fmt: skip


async def test_a_spent_budget_means_no_call(
    stack: Stack, anthropic: FakeAnthropic, claude: Claude
) -> None:
    w = world(stack, claude(), config(analysis_daily_tokens=1000))
    incident = await w.incident()
    await stack.store.record_analysis(
        NewAnalysis(incident.id, NAME, "claude", "earlier", None, 0.5, "low",
                    input_tokens=900, output_tokens=200),
        lambda a: Event(ANALYSIS_COMPLETED, a.created_at, "test", {}, NAME, incident.id),
    )  # fmt: skip
    await stack.relay.emit([Event(ESCALATION_RAISED, stack.clock.now(), "slack",
                                  {"reason": ASKED, "context": {"requested_by": "U1"}},
                                  NAME, incident.id)])  # fmt: skip
    await stack.settle()
    latest = (await stack.store.analyses_for(incident.id))[-1]
    assert latest.new.engine == "rules"
    assert "daily budget" in latest.new.payload["claude_unavailable"]
    assert anthropic.requests == []


async def test_claude_hanging_gives_the_rules_answer_within_the_timeout(
    stack: Stack, anthropic: FakeAnthropic, claude: Claude
) -> None:
    anthropic.script(hang())
    w = world(stack, claude(timeout_s=0.3))
    incident = await w.incident()
    await w.escalate(incident)
    [analysis] = await stack.store.analyses_for(incident.id)
    assert analysis.new.engine == "rules"
    # The escalation itself was stored before any of this: it never waits on Claude.
    assert len(stack.of_type(ESCALATION_RAISED)) == 1


async def test_fleet_escalations_are_not_analysed(stack: Stack) -> None:
    w = world(stack, advisor=None)
    await w.escalator.escalate_fleet("mass_failure", "6 of 10 down", "ep", [NAME])
    await stack.settle()
    assert stack.of_type(ANALYSIS_COMPLETED) == []


@pytest.mark.parametrize("engine", ["claude", "rules"])
async def test_no_secret_reaches_claude_the_store_or_the_thread(
    stack: Stack, anthropic: FakeAnthropic, claude: Claude, engine: str
) -> None:
    async with serve_logs() as (url, entries):
        entries += [{"ts": f"2026-01-01T12:00:{i:02d}Z", "level": "error", "message": m}
                    for i, m in enumerate(POISONED_LOGS)]  # fmt: skip
        cfg = Config.model_validate(
            {"projects": [{"name": NAME, "url": url, "control_secret_env": "X",
                           "allowed_actions": ["restart", "clear_cache"]}]}
        )  # fmt: skip
        async with aiohttp.ClientSession() as session:
            w = world(stack, claude() if engine == "claude" else None, cfg, session)
            incident = await w.incident()
            await w.escalate(incident)
    [analysis] = await stack.store.analyses_for(incident.id)
    assert analysis.new.engine == engine
    stored = json.dumps([analysis.new.payload, analysis.new.diagnosis])
    thread = json.dumps([e.payload for e in stack.of_type(ANALYSIS_COMPLETED)])
    sent = b"".join(r.body for r in anthropic.requests)
    assert (len(anthropic.requests) == 1) is (engine == "claude")
    for kind, secret in SECRETS.items():
        for where, text in (("store", stored), ("thread", thread)):
            assert secret not in text and json.dumps(secret)[1:-1] not in text, (kind, where)
        assert secret.encode() not in sent, kind
