"""Incident cards end to end: status events -> the real IncidentManager -> relay -> bus ->
SlackNotifier -> store -> SlackOutbox -> the fake Slack over HTTP; and the same story as
terminal text.  Time is the FakeClock of the shared stack (store, agents, outbox)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from agents.escalation import Escalator
from agents.events import (
    ACTION_STARTED,
    ANALYSIS_COMPLETED,
    INCIDENT_OPENED,
    INCIDENT_RESOLVED,
    METRIC_ANOMALY,
    PROJECT_STATUS_CHANGED,
    Event,
)
from agents.incidents import IncidentManager
from bot.config import Config
from bot.notifier import SlackNotifier
from bot.slack_outbox import SlackOutbox
from bot.terminal_cards import TerminalCards
from storage.base import Incident
from tests.fake_slack import Call, FakeSlack
from tests.support import Stack

FLEET = [f"svc-{n}" for n in range(8)]
CONFIG = Config.model_validate(
    {
        "orchestrators": {
            "outreach": {"channel": "#ops-outreach", "oncall": "S0ONCALL",
                         "projects": ["email-blast"]},
            "support": {"channel": "#ops-support", "projects": ["chatbot"]},
            "fleet": {"channel": "#ops-fleet", "projects": FLEET},
        },
        "projects": [
            {"name": name, "url": f"http://127.0.0.1:{8100 + n}"}
            for n, name in enumerate(["email-blast", "chatbot", "orphan", *FLEET])
        ],
    }
)  # fmt: skip
REFUSED = "GET /health: connection refused"
GREEN = "#2EB67D"


def status_event(project: str, to: str, stack: Stack) -> Event:
    was = "healthy" if to == "down" else "down"
    payload = {"from": was, "to": to, "reason": REFUSED if to == "down" else "probe pass"}
    return Event(PROJECT_STATUS_CHANGED, stack.clock.now(), "monitor", payload, project=project)


@dataclass
class World:
    stack: Stack
    fake: FakeSlack
    notifier: SlackNotifier
    outbox: SlackOutbox

    async def status(self, *projects: str, to: str = "down") -> None:
        """``project.status_changed`` for each project, handled by the IncidentManager."""
        await self.stack.relay.emit([status_event(p, to, self.stack) for p in projects])
        await self.stack.settle()

    async def emit(self, type_: str, incident: Incident, payload: dict[str, Any]) -> None:
        event = Event(type_, self.stack.clock.now(), "test", payload, incident.project, incident.id)
        await self.stack.relay.emit([event])
        await self.stack.settle()

    async def incident(self, project: str) -> Incident:
        return (await self.stack.store.list_incidents(project=project, limit=1))[0]

    async def pump(self, seconds: float = 0) -> None:
        """Let ``seconds`` pass, then as long as writes are pending, one second at a time
        (the channel pacing), letting the outbox act at every step."""
        await self.outbox.settle()
        for _ in range(600):
            pending = await self.stack.store.slack_rows(state="pending")
            if seconds <= 0 and not pending:
                return
            await self.stack.clock.advance(1)
            seconds -= 1
            await self.outbox.settle()
        raise AssertionError("the outbox never drained")

    def posts(self, channel: str | None = None) -> list[Call]:
        return [
            c for c in self.fake.calls if c.method.startswith("chat.")
            and channel in (None, c.params["channel"])
        ]  # fmt: skip


@pytest.fixture
async def make_world(stack: Stack) -> AsyncIterator[Callable[..., Any]]:
    fake = FakeSlack()
    await fake.start()
    IncidentManager(stack.store, stack.relay, stack.clock).register(stack.bus)
    outboxes: list[SlackOutbox] = []
    async with aiohttp.ClientSession() as session:

        @asynccontextmanager
        async def make(**options: Any) -> AsyncIterator[World]:
            client = AsyncWebClient(token="xoxb-test", base_url=fake.api_url, session=session)
            outbox = SlackOutbox(stack.store, client, stack.clock)
            notifier = SlackNotifier(stack.store, lambda: CONFIG, wake=outbox.wake, **options)
            notifier.register(stack.bus)
            outboxes.append(outbox)
            await outbox.start()
            yield World(stack, fake, notifier, outbox)

        try:
            yield make
        finally:
            for outbox in outboxes:
                await outbox.stop()
            await fake.stop()


async def test_one_incident_life_one_card_then_edits_and_thread(make_world: Any) -> None:
    async with make_world() as world:
        await world.status("email-blast")
        await world.pump()
        [card] = world.posts()
        assert card.method == "chat.postMessage" and "thread_ts" not in card.params
        assert card.params["channel"] == "#ops-outreach"
        assert f"email-blast is down: {REFUSED}" in card.params["text"]
        assert "<!subteam^S0ONCALL>" in json.dumps(card.params["blocks"])  # critical: paged
        incident = await world.incident("email-blast")
        slack_card = await world.stack.store.slack_card(incident.id)
        assert slack_card is not None and slack_card.ts is not None

        await world.emit(ACTION_STARTED, incident, {"action_id": "a1", "action": "restart"})
        await world.emit(
            ANALYSIS_COMPLETED,
            incident,
            {"diagnosis": "the process died", "evidence": ["exit 137"], "engine": "rules",
             "recommended_action": "restart", "confidence": 0.8, "risk": "low"},
        )  # fmt: skip
        await world.pump(125)  # 2 minutes down
        await world.status("email-blast", to="healthy")
        await world.pump()

        later = world.posts()[1:]
        assert {c.method for c in later} == {"chat.update", "chat.postMessage"}
        for call in later:  # nothing new in the channel: edits of the card, or its thread
            assert call.params["channel"] == "#ops-outreach"
            if call.method == "chat.update":
                assert call.params["ts"] == slack_card.ts
            else:
                assert call.params["thread_ts"] == slack_card.ts
        thread = [c.params["text"] for c in later if c.method == "chat.postMessage"]
        assert thread == [
            "▶️ restart started",
            "🧠 Analysis by rules",
            "✅ Resolved: down for 2m 05s",
        ]
        [update] = [c.params for c in later if c.method == "chat.update"]
        assert update["text"] == "✅ email-blast: resolved, down for 2m 05s"
        assert update["attachments"][0]["color"] == GREEN
        assert "S0ONCALL" not in json.dumps(update["blocks"])  # an edit pages nobody again
        assert "3 updates in the thread" in json.dumps(update["attachments"])
        assert await world.stack.store.slack_rows(state="failed") == []
        assert world.outbox.health() == "ok"


async def test_a_storm_is_folded_into_one_grouped_message(make_world: Any) -> None:
    async with make_world() as world:
        await world.status(*FLEET)  # 8 incidents at once in #ops-fleet
        await world.pump()
        posts = world.posts("#ops-fleet")
        assert [c.method for c in posts] == ["chat.postMessage"] * 6
        cards, storm = posts[:5], posts[5].params
        assert [c.params["text"].split(":")[0] for c in cards] == [f"🔴 svc-{n}" for n in range(5)]
        assert storm["text"] == "🚨 3 incidents opened within 30s"
        listed = json.dumps(storm["blocks"], ensure_ascii=False)
        assert all(f"*svc-{n}*" in listed for n in (5, 6, 7))
        assert "svc-4" not in listed

        # A folded incident's timeline goes to the grouped message's thread; its card
        # edits are not sent (it has no card).  A posted card is edited as usual.
        await world.status("svc-6", "svc-0", to="healthy")
        await world.pump()
        later = world.posts("#ops-fleet")[6:]
        storm_row = next(r for r in await world.stack.store.slack_rows() if r.kind == "storm")
        down_for = "down for 5s"  # the pump took 5 s: six writes, one a second
        replies = {
            c.params["text"]: c.params["thread_ts"] for c in later if "thread_ts" in c.params
        }
        assert replies[f"✅ svc-6: Resolved: {down_for}"] == storm_row.ts
        [update] = [c for c in later if c.method == "chat.update"]
        assert update.params["text"] == f"✅ svc-0: resolved, {down_for}"
        folded = await world.stack.store.slack_rows(state="folded")
        assert {r.kind for r in folded} == {"post_card", "update_card"}
        assert len(folded) == 4  # three cards, one edit: kept, not sent


async def test_silenced_projects_post_nothing_but_are_recorded(make_world: Any) -> None:
    async with make_world(is_silenced=lambda project: project == "chatbot") as world:
        await world.status("chatbot", "email-blast")
        await world.status("chatbot", to="healthy")
        await world.pump()
        assert [c.params["channel"] for c in world.posts()] == ["#ops-outreach"]
        incident = await world.incident("chatbot")
        assert incident.state == "resolved"  # recorded as usual
        assert await world.stack.store.slack_card(incident.id) is None


async def test_a_project_in_no_orchestrator_is_skipped_with_one_log_line(
    make_world: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with make_world() as world:
        with caplog.at_level(logging.WARNING, logger="bot.notifier"):
            await world.status("orphan")
            await world.status("orphan", to="healthy")
        await world.pump()
        assert world.posts() == []
        assert [r.getMessage() for r in caplog.records].count(
            "orphan is in no orchestrator and there is no default channel:"
            " its incidents are not posted to Slack"
        ) == 1


async def test_a_project_in_no_orchestrator_may_use_a_default_channel(make_world: Any) -> None:
    async with make_world(default_channel="#ops-misc") as world:
        await world.status("orphan")
        await world.pump()
        assert [c.params["channel"] for c in world.posts()] == ["#ops-misc"]


async def test_redelivery_and_replicas_never_post_a_card_twice(make_world: Any) -> None:
    async with make_world() as world:
        other = SlackNotifier(world.stack.store, lambda: CONFIG)  # another replica's
        await world.status("email-blast")
        await world.pump(1)
        await world.status("email-blast", to="healthy")
        [opened] = world.stack.of_type(INCIDENT_OPENED)
        [resolved] = world.stack.of_type(INCIDENT_RESOLVED)
        for event in (resolved, opened, opened, resolved):  # late, out of order, twice
            await other.handle(event)
            await world.notifier.handle(event)
        await world.pump()
        cards = [c for c in world.posts() if c.method == "chat.postMessage"]
        assert len([c for c in cards if "thread_ts" not in c.params]) == 1
        assert len([c for c in cards if "thread_ts" in c.params]) == 1  # one "Resolved"
        assert len([c for c in world.posts() if c.method == "chat.update"]) == 1


async def test_a_late_incident_opened_is_not_needed_for_the_card(stack: Stack) -> None:
    """An update handled before its incident.opened (another replica was slower) queues
    the card first: nothing waits for ever, the card is posted once."""
    IncidentManager(stack.store, stack.relay, stack.clock).register(stack.bus)
    notifier = SlackNotifier(stack.store, lambda: CONFIG)
    await stack.relay.emit([status_event("chatbot", "down", stack)])
    await stack.settle()
    [opened] = stack.of_type(INCIDENT_OPENED)
    incident = (await stack.store.list_incidents())[0]
    action = Event(ACTION_STARTED, stack.clock.now(), "test", {"action": "restart"}, "chatbot",
                   incident.id)  # fmt: skip
    await notifier.handle(action)
    await notifier.handle(opened)
    rows = await stack.store.slack_rows()
    assert [r.kind for r in rows] == ["post_card", "thread_reply"]


async def test_terminal_cards_tell_the_same_story(stack: Stack) -> None:
    IncidentManager(stack.store, stack.relay, stack.clock).register(stack.bus)
    lines: list[str] = []
    TerminalCards(stack.store, write=lines.append).register(stack.bus)
    await stack.relay.emit([status_event("email-blast", "down", stack)])
    await stack.settle()
    incident = (await stack.store.list_incidents())[0]
    action = Event(ACTION_STARTED, stack.clock.now(), "test", {"action": "restart"},
                   "email-blast", incident.id)  # fmt: skip
    await stack.relay.emit([action])
    await stack.clock.advance(65)
    await stack.relay.emit([status_event("email-blast", "healthy", stack)])
    await stack.settle()
    text = "\n".join(lines)
    assert text.splitlines()[0] == (
        f"🔴 email-blast CRITICAL [email-blast:down] email-blast is down: {REFUSED}"
    )
    assert "      ↳ email-blast: ▶️ restart started" in lines
    assert lines[-1].startswith("✅ email-blast RESOLVED after 1m 05s [email-blast:down]")


async def test_probe_evidence_goes_to_the_other_open_incidents_threads(make_world: Any) -> None:
    async with make_world() as world:
        anomaly = {"metric": "error_rate", "value": 0.3, "threshold": 0.2, "level": "crit"}
        now = world.stack.clock.now()
        await world.stack.relay.emit([Event(METRIC_ANOMALY, now, "analyzer", anomaly, "chatbot")])
        await world.stack.settle()
        await world.pump()
        [metric_card] = world.posts()
        assert metric_card.params["text"].startswith("🔴 chatbot: chatbot error_rate is 0.3")
        metric_ts = (await world.stack.store.slack_rows(state="sent"))[0].ts
        await world.status("chatbot")  # the down incident: its own card …
        await world.pump()
        later = world.posts()[1:]
        [down_card] = [c.params for c in later if "thread_ts" not in c.params]
        assert down_card["text"] == f"🔴 chatbot: chatbot is down: {REFUSED}"
        # … and, as evidence, a line in the metric incident's thread (not in its own).
        [evidence] = [c.params for c in later if "thread_ts" in c.params]
        assert evidence["text"] == "🔁 Status healthy → down"
        assert evidence["thread_ts"] == metric_ts


async def test_a_fleet_escalation_is_posted_to_every_group_with_its_oncall(
    make_world: Any,
) -> None:
    async with make_world() as world:
        stack = world.stack
        escalator = Escalator(stack.store, lambda: CONFIG, lambda: None, clock=stack.clock,
                              wake=stack.relay.wake)  # fmt: skip
        down = ["email-blast", "chatbot", *FLEET[:4]]
        for _ in range(2):  # raised twice (two replicas): posted once
            await escalator.escalate_fleet("mass_failure", "6 of 11 projects are down", "ep1", down)
        await stack.settle()
        await world.pump()
        channels = sorted(c.params["channel"] for c in world.posts())
        assert channels == ["#ops-fleet", "#ops-outreach", "#ops-support"]
        [outreach] = world.posts("#ops-outreach")
        text = json.dumps(outreach.params, ensure_ascii=False)
        assert "orch suspects its own network" in text
        assert "Down: email-blast, chatbot, svc-0" in text
        assert "<!subteam^S0ONCALL>" in text  # the group's on-call is paged
        assert "subteam" not in json.dumps(world.posts("#ops-support")[0].params)


async def test_an_escalation_reads_as_sentences_not_json(make_world: Any) -> None:
    async with make_world() as world:
        await world.status("email-blast")
        incident = await world.incident("email-blast")
        context = {
            "summary": "2 automatic restart attempt(s) did not fix email-blast",
            "recent_probes": [{"level": "fail", "reason": "HTTP 503"}] * 3,
            "actions": [{"action": "restart", "state": "failed", "error": "still failing"}],
            "logs": [{"ts": "t", "level": "error", "message": "No space left on device"}],
        }
        await world.emit("escalation.raised", incident,
                         {"reason": "attempts_exhausted", "context": context})  # fmt: skip
        await world.pump()
        reply = world.posts()[-1]
        text = json.dumps(reply.params, ensure_ascii=False)
        assert reply.params["thread_ts"]
        assert "Needs a human: automatic fixes did not help" in text
        assert "Last 3 probes: 3 failed; newest: HTTP 503" in text
        assert "Tried: restart failed (still failing)" in text
        assert "log ERROR: No space left on device" in text
        assert '{\\"' not in text  # no raw JSON for people
