"""``/orch`` silence, unsilence, ack, action requests, history and the Block Kit replies,
end to end over signed HTTP against the fake Slack with a real SQLite store; and the App
Home refresher, debounced on a FakeClock.

A recording HTTP server stands in for the project, so "no /control call" is observed,
not assumed.  Nothing waits on a fixed sleep: replies are awaited on the fake Slack and
time moves only with ``FakeClock.advance``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

import tests.slack_harness as harness_module
from agents.bus import InProcessBus
from agents.events import (
    ACTION_REQUESTED,
    INCIDENT_OPENED,
    INCIDENT_RESOLVED,
    INCIDENT_UPDATED,
    PROJECT_STATUS_CHANGED,
    SILENCE_CREATED,
    SILENCE_ENDED,
    Event,
)
from bot.blockkit import check_message, check_view
from bot.config import Config
from bot.render import render_blocks
from bot.slack import operations
from bot.slack.command_parser import Command
from bot.slack.home_refresh import HomeRefresher
from bot.slack.silences import SilenceBoard
from bot.slack.views import IncidentListView, ProjectsView
from storage.base import Incident, ProbeRecord
from tests.fake_slack import event_callback, form_body, signed_headers, slash_command
from tests.slack_harness import SECRET, Harness, slack_harness

APPROVER = "U0BOSS"
DOWN_ID = "1a2b3c4d5e6f708192a3b4c5d6e7f809"
METRIC_ID = "1a2b99990000000000000000000000aa"


def ops_config(project_url: str) -> Config:
    return Config.model_validate(
        {
            "orchestrators": {
                "outreach": {"channel": "#ops-outreach", "approvers": [APPROVER, "S0OPS"],
                             "projects": ["email-blast"]},
                "support": {"channel": "#ops-support", "projects": ["chatbot"]},
            },
            "projects": [
                {"name": "email-blast", "url": project_url,
                 "control_secret_env": "EMAIL_BLAST_CONTROL_SECRET",
                 "allowed_actions": ["restart", "clear_cache", "pause", "resume"],
                 "needs_approval": ["pause"]},
                {"name": "chatbot", "url": project_url, "control_secret_env": "CHATBOT_SECRET",
                 "allowed_actions": ["restart"]},
            ],
        }
    )  # fmt: skip


@pytest.fixture
async def project_calls() -> AsyncIterator[tuple[str, list[str]]]:
    """A stand-in for the projects that records every request it gets."""
    seen: list[str] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path}")
        return web.json_response({"accepted": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(iter(runner.addresses))[1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


@pytest.fixture
def ops(
    project_calls: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[str]]:
    """The harness serves ``ops_config`` (its ``config`` reads the module's CONFIG)."""
    url, seen = project_calls
    monkeypatch.setattr(harness_module, "CONFIG", ops_config(url))
    yield seen


async def answer_as(h: Harness, text: str, user: str = "U0ASKER") -> dict[str, Any]:
    """``/orch <text>`` from ``user``; returns what came back through the response_url."""
    before = len(h.fake.calls_to("response_url"))
    body = form_body(slash_command(text, h.fake.response_url(), user_id=user))
    status, ack = await h.post(body, signed_headers(SECRET, body))
    assert status == 200 and ack == {}, (status, ack)
    calls = await h.fake.wait_for("response_url", before + 1)
    await h.service.background.drain()
    return calls[before].params


def block_text(reply: dict[str, Any]) -> str:
    """Every text of the reply's blocks, one per line (what a reader sees)."""
    parts: list[str] = []
    for block in reply.get("blocks") or []:
        for obj in [block.get("text"), *block.get("fields", []), *block.get("elements", [])]:
            if isinstance(obj, dict) and isinstance(obj.get("text"), str):
                parts.append(obj["text"])
    return "\n".join(parts)


def valid(reply: dict[str, Any]) -> bool:
    payload = {"text": reply["text"], "blocks": reply["blocks"]}
    return check_message(payload) == [] and bool(reply["text"])


async def open_incidents(h: Harness) -> tuple[Incident, Incident]:
    now = h.clock.now()

    def announce(incident: Incident) -> Event:
        return Event(INCIDENT_OPENED, now, "test", {"fingerprint": incident.fingerprint},
                     incident.project, incident.id)  # fmt: skip

    made = []
    for ident, condition, ago in ((DOWN_ID, "down", 5), (METRIC_ID, "metric:error_rate", 2)):
        row = Incident(ident, f"email-blast:{condition}", "email-blast", condition, "critical",
                       f"<!channel> {condition} & worse", now - timedelta(minutes=ago))  # fmt: skip
        opened = await h.store.open_incident(row, announce)
        assert opened is not None
        made.append(opened)
    return made[0], made[1]


# -- silences ---------------------------------------------------------------------------


async def test_silence_stores_a_row_and_its_event_and_tells_the_channel(ops: list[str]) -> None:
    async with slack_harness() as h:
        reply = await answer_as(h, "silence email-blast 2h db migration <!here>")
        assert reply["response_type"] == "in_channel" and valid(reply)
        until = h.clock.now() + timedelta(hours=2)
        text = block_text(reply)
        assert "<@U0ASKER> silenced *email-blast* for 2h 00m, until <!date^" in text
        assert f"|{until:%Y-%m-%d %H:%M:%S} UTC>" in text
        assert "Reason: db migration &lt;!here&gt;" in text  # the user's text stays inert
        assert reply["text"].startswith("🔕 email-blast is silenced until <!date^")

        silence = await h.store.active_silence("email-blast")
        assert silence is not None and silence.created_by == "U0ASKER"
        assert silence.ends_at == until and silence.reason == "db migration <!here>"
        assert await h.store.active_silence("chatbot") is None
        (event,) = await h.store.list_events(types=[SILENCE_CREATED])
        assert event.project == "email-blast" and event.payload["silence_id"] == silence.id
        assert event.payload["by"] == "U0ASKER"

        status = block_text(await answer_as(h, "status email-blast"))
        assert "🔕 Silenced until <!date^" in status and "by <@U0ASKER>" in status
        assert ops == []  # nothing was sent to the project


async def test_unsilence_ends_it_and_a_second_one_changes_nothing(ops: list[str]) -> None:
    async with slack_harness() as h:
        await answer_as(h, "silence email-blast 30m")
        reply = await answer_as(h, "unsilence email-blast", user=APPROVER)
        assert reply["response_type"] == "in_channel" and valid(reply)
        assert "<@U0BOSS> ended the silence on *email-blast*" in block_text(reply)
        assert "It was set by <@U0ASKER>" in block_text(reply)
        assert await h.store.active_silence("email-blast") is None
        (ended,) = await h.store.list_events(types=[SILENCE_ENDED])
        assert ended.payload["by"] == APPROVER

        again = await answer_as(h, "unsilence email-blast")
        assert again["response_type"] == "ephemeral"
        assert again["text"] == "email-blast is not silenced; nothing was changed."
        assert len(await h.store.list_events(types=[SILENCE_ENDED])) == 1


async def test_a_silence_runs_out_on_the_clock(ops: list[str]) -> None:
    async with slack_harness() as h:
        board = SilenceBoard(h.store, h.clock, refresh_s=60)
        await board.start()
        try:
            assert not board.is_silenced("email-blast")
            await answer_as(h, "silence email-blast 1h")
            (event,) = await h.store.list_events(types=[SILENCE_CREATED])
            await board.handle(event)  # as the bus delivers it
            assert board.is_silenced("email-blast") and not board.is_silenced("chatbot")
            await h.clock.advance(3599)
            assert board.is_silenced("email-blast")
            await h.clock.advance(1)
            assert not board.is_silenced("email-blast")  # no event needed at expiry
            assert await h.store.active_silence("email-blast") is None
        finally:
            await board.stop()


# -- acknowledgement ------------------------------------------------------------------------


async def test_ack_by_id_prefix_then_by_fingerprint(ops: list[str]) -> None:
    async with slack_harness() as h:
        down, metric = await open_incidents(h)
        listed = await answer_as(h, "incidents")
        assert valid(listed) and "`1a2b3c4d`" in block_text(listed)  # the id ack takes
        assert "`1a2b9999`" in block_text(listed)

        reply = await answer_as(h, "ack 1a2b3c")
        assert reply["response_type"] == "in_channel" and valid(reply)
        assert "<@U0ASKER> acknowledged 🔴 *email-blast:down* (id `1a2b3c4d`)" in block_text(reply)
        assert "&lt;!channel&gt; down &amp; worse" in block_text(reply)

        reply = await answer_as(h, "ack email-blast:metric:error_rate", user=APPROVER)
        assert "<@U0BOSS> acknowledged" in block_text(reply)
        assert "*email-blast:metric:error_rate*" in block_text(reply)

        updates = await h.store.list_events(types=[INCIDENT_UPDATED])
        assert [(e.incident_id, e.payload["acked_by"]) for e in updates] == [
            (down.id, "U0ASKER"),
            (metric.id, APPROVER),
        ]
        assert set(updates[0].payload) == {"fingerprint", "severity", "summary", "acked_by"}
        acks = await h.store.incident_acks([down.id, metric.id])
        assert {i: a.acked_by for i, a in acks.items()} == {down.id: "U0ASKER", metric.id: APPROVER}
        assert "👀 <@U0ASKER>" in block_text(await answer_as(h, "incidents"))


async def test_ack_that_matches_several_or_none_is_refused(ops: list[str]) -> None:
    async with slack_harness() as h:
        await open_incidents(h)
        # A prefix both ids share is too short to parse (6 hex digits at least).
        _, ack = await h.command("ack 1a2b")
        assert ack["response_type"] == "ephemeral" and "6 to 32 hex digits" in ack["text"]

        await h.store.open_incident(
            Incident("1a2b3c000000000000000000000000bb", "chatbot:down", "chatbot", "down",
                     "critical", "x", h.clock.now()),
            lambda i: Event(INCIDENT_OPENED, h.clock.now(), "test", {}, i.project, i.id),
        )  # fmt: skip
        many = await answer_as(h, "ack 1a2b3c")
        assert many["response_type"] == "ephemeral"
        assert (
            many["text"]
            == "1a2b3c matches 2 open incidents (1a2b3c00, 1a2b3c4d); type more of the id."
        )
        none = await answer_as(h, "ack ffffff")
        assert none["text"] == "No open incident matches ffffff."
        assert "/orch incidents lists them" in block_text(none)
        assert await h.store.list_events(types=[INCIDENT_UPDATED]) == []


# -- action requests --------------------------------------------------------------------------


async def test_restart_by_a_non_approver_needs_approval_and_calls_nothing(ops: list[str]) -> None:
    async with slack_harness() as h:
        down, _ = await open_incidents(h)
        reply = await answer_as(h, "restart email-blast")
        assert reply["response_type"] == "in_channel" and valid(reply)
        (request,) = await h.store.list_actions()
        assert (request.project, request.action, request.state) == (
            "email-blast",
            "restart",
            "awaiting_approval",
        )
        assert request.needs_approval and request.requested_by == "U0ASKER"
        text = block_text(reply)
        assert f"<@U0ASKER> asked to *restart* *email-blast* (request `{request.id[:8]}`)" in text
        assert "Needs approval: the requester is not an approver of outreach." in text
        assert "Nothing runs until then" in text
        (approval,) = await h.store.pending_approvals()
        assert approval.action_id == request.id and approval.id[:8] in text

        (event,) = await h.store.list_events(types=[ACTION_REQUESTED])
        assert event.payload == {"action_id": request.id, "action": "restart",
                                 "requested_by": "U0ASKER", "reason": "/orch restart in Slack",
                                 "needs_approval": True, "origin": "user"}  # fmt: skip
        assert event.project == "email-blast" and event.incident_id == down.id  # its card's thread
        assert ops == []  # no /control call
        # S0OPS's members were looked up: the asker might have been one of them.
        assert h.fake.methods() == ["usergroups.users.list", "response_url"]


async def test_an_action_the_project_does_not_allow_is_refused_and_stores_nothing(
    ops: list[str],
) -> None:
    async with slack_harness() as h:
        _, ack = await h.command("pause chatbot")
        assert ack["response_type"] == "ephemeral" and valid(ack)
        assert ack["text"] == "chatbot does not allow pause (allowed: restart)"
        await h.service.background.drain()
        # Authorised again when answering: a reload may have changed the config since.
        reply = await operations.request_action(
            h.service.services, Command("clear-cache", project="chatbot"), APPROVER
        )
        assert reply.response_type == "ephemeral"
        assert reply.text == "chatbot does not allow clear-cache (allowed: restart)"
        assert await h.store.list_actions() == []
        assert await h.store.list_events() == []
        assert ops == [] and h.fake.methods() == []


async def test_an_approver_needs_approval_only_for_needs_approval_actions(ops: list[str]) -> None:
    async with slack_harness() as h:
        paused = await answer_as(h, "pause email-blast", user=APPROVER)
        assert "Needs approval: pause on email-blast always needs an approver." in block_text(
            paused
        )
        cleared = await answer_as(h, "clear-cache email-blast", user=APPROVER)
        assert "No approval needed: requested by an approver of outreach." in block_text(cleared)
        cleared_by_other = await answer_as(h, "clear-cache email-blast", user="U0OTHER")
        assert "Needs approval" in block_text(cleared_by_other)
        requests = await h.store.list_actions()  # newest first
        assert [(r.action, r.requested_by, r.needs_approval) for r in requests] == [
            ("clear_cache", "U0OTHER", True),
            ("clear_cache", APPROVER, False),
            ("pause", APPROVER, True),
        ]
        events = await h.store.list_events(types=[ACTION_REQUESTED])
        assert [e.payload["needs_approval"] for e in events] == [True, False, True]
        assert all(e.incident_id is None for e in events)  # no open incident to thread into
        assert ops == []


async def test_user_groups_and_empty_approver_lists_do_not_approve() -> None:
    # Without Slack (approvers=None) only listed user ids approve; tests/test_approvals.py
    # covers user groups resolved through usergroups.users.list.
    config = ops_config("http://127.0.0.1:1")
    blast, chatbot = config.project("email-blast"), config.project("chatbot")
    assert (await operations.approval_needed(config, blast, "restart", "S0OPS", None))[0]
    assert (await operations.approval_needed(config, chatbot, "restart", APPROVER, None))[0]
    assert not (await operations.approval_needed(config, blast, "resume", APPROVER, None))[0]


# -- reading: history, status -----------------------------------------------------------------


async def seed_an_outage(h: Harness) -> None:
    """90 one-minute probes up to now, failing from 50 to 40 minutes ago; its status
    events and its incident."""
    now = h.clock.now()

    def ago(minutes: float) -> datetime:
        return now - timedelta(minutes=minutes)

    await h.store.add_probes(
        [ProbeRecord("email-blast", ago(m), "fail" if 40 < m <= 50 else "pass", 9.0)
         for m in range(90, 0, -1)]
    )  # fmt: skip
    await h.store.append_events(
        [
            Event(PROJECT_STATUS_CHANGED, ago(50), "health-monitor",
                  {"from": "healthy", "to": "down", "reason": "HTTP 503"}, "email-blast"),
            Event(PROJECT_STATUS_CHANGED, ago(40), "health-monitor",
                  {"from": "down", "to": "healthy", "reason": "ok"}, "email-blast"),
        ]
    )  # fmt: skip

    def opened(i: Incident) -> Event:
        payload = {"summary": i.summary, "severity": i.severity}
        return Event(INCIDENT_OPENED, i.opened_at, "t", payload, i.project, i.id)

    def resolved(i: Incident) -> Event:
        assert i.resolved_at is not None
        payload = {"duration_s": i.duration_s}
        return Event(INCIDENT_RESOLVED, i.resolved_at, "t", payload, i.project, i.id)

    row = Incident("i" * 32, "email-blast:down", "email-blast", "down", "critical",
                   "email-blast is down", ago(50))  # fmt: skip
    await h.store.open_incident(row, opened)
    await h.store.resolve_incident("email-blast:down", ago(40), resolved)


async def test_history_24h_has_the_transitions_and_the_numbers(ops: list[str]) -> None:
    async with slack_harness() as h:
        now = h.clock.now()
        await seed_an_outage(h)
        reply = await answer_as(h, "history email-blast 24h")
        assert reply["response_type"] == "ephemeral" and valid(reply)
        uptime = (await h.store.uptime(["email-blast"], now - timedelta(hours=24), now))[
            "email-blast"
        ]
        assert 80 < uptime < 95
        assert reply["text"] == (
            f"email-blast, last 24h: {uptime:.2f} % up, down 10m 00s, MTTR 10m 00s"
        )
        text = block_text(reply)
        assert "*Uptime*\n" + f"{uptime:.2f} %" in text and "*Incidents opened*\n1" in text
        lines = [line for line in text.splitlines() if "<!date^" in line]
        assert [line.split("UTC> ", 1)[1] for line in lines] == [
            "Status healthy → down: HTTP 503",
            "Incident opened critical: email-blast is down",
            "Status down → healthy: ok",
            "Resolved: down for 10m 00s",
        ]
        assert "chart of its status and key metrics is posted in #ops-outreach" in text
        week = await answer_as(h, "history chatbot 7d")
        assert week["text"] == "chatbot, last 7d: — up, down 0s, MTTR —"
        assert "No status changes or incidents in this window." in block_text(week)


async def test_status_is_block_kit_with_24h_uptime(ops: list[str]) -> None:
    async with slack_harness() as h:
        h.health.restore("email-blast", "down")
        now = h.clock.now()
        await h.store.add_probes(
            [ProbeRecord("email-blast", now - timedelta(minutes=m), "pass", 5.0) for m in (3, 2, 1)]
        )
        reply = await answer_as(h, "status")
        assert reply["response_type"] == "ephemeral" and valid(reply)
        assert reply["text"].startswith("*Fleet*: 1 down, 1 unknown")  # the fallback
        board = block_text(reply)
        assert "🔴 *email-blast* down · 100.00 % up (24 h)" in board
        assert "⚪ *chatbot* unknown · — up (24 h)" in board
        assert board.index("email-blast") < board.index("chatbot")  # failing first


async def test_help_and_refusals_are_block_kit_too(ops: list[str]) -> None:
    async with slack_harness() as h:
        _, helped = await h.command("help")
        assert valid(helped) and "`/orch ack &lt;incident&gt;`" in block_text(helped)
        _, refused = await h.command("silence chatbot 31d")
        assert valid(refused) and block_text(refused) == "⚠️ A silence lasts from 1m to 30d."


def test_empty_lists_render() -> None:
    empty = render_blocks("incidents_reply.json.j2", incidents=IncidentListView((), False))
    assert empty["text"] == "No open incidents. 🎉" and check_message(empty) == []
    none = render_blocks("projects_reply.json.j2", projects=ProjectsView(()))
    assert "None configured." in str(none) and check_message(none) == []


# -- App Home -------------------------------------------------------------------------------


async def open_home(h: Harness, user: str, event_id: str) -> None:
    event = {"type": "app_home_opened", "user": user, "channel": "D0", "tab": "home"}
    body = json.dumps(event_callback(event, event_id))
    status, _ = await h.post(body, signed_headers(SECRET, body, content_type="application/json"))
    assert status == 200
    await h.service.background.drain()


async def deliver(bus: InProcessBus, h: Harness, event: Event) -> None:
    """Publish and let the subscriber run up to its debounce sleep (time stands still)."""
    await bus.publish(event)
    await bus.drain()
    await h.clock.settle()


async def test_home_refresh_is_debounced_to_one_publish_per_remembered_user(ops: list[str]) -> None:
    async with slack_harness() as h:
        bus = InProcessBus()
        refresher = HomeRefresher(h.service.services, h.service.client, debounce_s=30)
        refresher.register(bus)
        await bus.start()
        try:
            for n, user in enumerate(("U0ONE", "U0TWO")):
                await open_home(h, user, f"EvHome{n}")
            opened = h.fake.calls_to("views.publish")
            assert [c.params["user_id"] for c in opened] == ["U0ONE", "U0TWO"]
            assert check_view(opened[0].params["view"]) == []

            h.health.restore("email-blast", "down")
            for n in range(10):  # a burst inside the window (t0 .. t0+18), of several kinds
                kind = (PROJECT_STATUS_CHANGED, INCIDENT_OPENED, SILENCE_CREATED)[n % 3]
                await deliver(bus, h, Event(kind, h.clock.now(), "test", {}, "email-blast"))
                await h.clock.advance(2)
            assert len(h.fake.calls_to("views.publish")) == 2  # nothing before the debounce
            await h.clock.advance(9)
            assert len(h.fake.calls_to("views.publish")) == 2
            await h.clock.advance(1)  # t0 + 30
            calls = await h.fake.wait_for("views.publish", 4)
            assert sorted(c.params["user_id"] for c in calls[2:]) == ["U0ONE", "U0TWO"]
            view = calls[2].params["view"]
            assert check_view(view) == [] and "🔴 1 down" in str(view)

            await h.clock.advance(600)  # no new event: no new publish
            await deliver(bus, h, Event(INCIDENT_RESOLVED, h.clock.now(), "test", {}, "p"))
            await h.clock.advance(29)
            assert len(h.fake.calls_to("views.publish")) == 4
            await h.clock.advance(1)
            await h.fake.wait_for("views.publish", 6)
            assert refresher.refreshes == 2
        finally:
            await refresher.stop()
            await bus.stop()
        assert len(h.fake.calls_to("views.publish")) == 6


async def test_home_refresh_without_anyone_looking_does_nothing(ops: list[str]) -> None:
    async with slack_harness() as h:
        refresher = HomeRefresher(h.service.services, h.service.client, debounce_s=5)
        await refresher.handle(Event(INCIDENT_OPENED, h.clock.now(), "test", {}, "chatbot"))
        assert h.clock.sleepers == 0  # nothing scheduled
        await open_home(h, "U0ONE", "EvHomeA")
        await h.clock.advance(8 * 3600 + 1)  # remembered for a working day, then forgotten
        await refresher.handle(Event(INCIDENT_OPENED, h.clock.now(), "test", {}, "chatbot"))
        assert h.clock.sleepers == 0
        await refresher.stop()
        assert len(h.fake.calls_to("views.publish")) == 1  # the opening only
