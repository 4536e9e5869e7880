"""Approvals end to end: ``/orch restart`` -> the approval and its card in the incident's
thread -> a signed click on Approve / Deny -> the store's compare-and-set -> the card
edited, the decision in the thread; refusals audited; user groups through the fake Slack's
``usergroups.users.list``; expiry on the FakeClock.

Everything is real but Slack: the SQLite store (and PostgreSQL for two replicas), the
outbox relay and bus, the notifier and the Slack outbox, bolt over signed HTTP.  Time
moves only with ``FakeClock.advance``; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from agents.bus import InProcessBus
from agents.clock import FakeClock
from agents.events import (
    APPROVAL_DENIED,
    APPROVAL_EXPIRED,
    APPROVAL_GRANTED,
    APPROVAL_REQUESTED,
    INCIDENT_OPENED,
    Event,
)
from agents.outbox import OutboxRelay
from bot.config import Config
from bot.jobs import ApprovalExpiry
from bot.notifier import SlackNotifier, approval_card_id
from bot.slack.approvals import APPROVE, DENY
from bot.slack.approvers import Approvers
from bot.slack_outbox import SlackOutbox
from storage.autonomy_store import Approval, AuditRecord
from storage.base import Incident, Store
from storage.postgres import PostgresStore
from tests.fake_slack import Call, FakeSlack, form_body, signed_headers, slash_command
from tests.slack_harness import SECRET, Harness, slack_harness

APPROVER, SECOND, MEMBER, ASKER = "U0BOSS", "U0BOSS2", "U0MEMBER", "U0ASKER"
GROUP = "S0OPS"
DOWN_ID = "1a2b3c4d5e6f708192a3b4c5d6e7f809"


def approval_config(*, four_eyes: bool = False, allowed: list[str] | None = None) -> Config:
    actions = allowed if allowed is not None else ["restart", "clear_cache", "pause", "resume"]
    return Config.model_validate(
        {
            "orchestrators": {
                "outreach": {"channel": "#ops-outreach", "approvers": [APPROVER, SECOND, GROUP],
                             "projects": ["email-blast"]},
                "support": {"channel": "#ops-support", "projects": ["chatbot"]},
            },
            "projects": [
                {"name": "email-blast", "url": "http://127.0.0.1:9",
                 "control_secret_env": "EMAIL_BLAST_CONTROL_SECRET",
                 "allowed_actions": actions, "needs_approval": ["pause"],
                 "remediation": {"four_eyes": four_eyes, "approval_ttl": "30m"}},
                {"name": "chatbot", "url": "http://127.0.0.1:9", "allowed_actions": ["restart"],
                 "control_secret_env": "CHATBOT_CONTROL_SECRET"},
            ],
        }
    )  # fmt: skip


@dataclass
class World:
    """The Slack app (``h``) and, on the same store and clock, the relay, the bus, the
    notifier and the Slack outbox that turn stored events into Slack calls."""

    h: Harness
    config: list[Config]  # [current]: tests swap it to "reload"
    relay: OutboxRelay
    bus: InProcessBus
    outbox: SlackOutbox

    @property
    def fake(self) -> FakeSlack:
        return self.h.fake

    @property
    def store(self) -> Store:
        return self.h.store

    async def settle(self) -> None:
        """Publish every stored event, let the notifier queue its Slack writes and the
        outbox send them (one second of FakeClock per paced write)."""
        for _ in range(50):
            while await self.relay.flush():
                await self.bus.drain()
            await self.outbox.settle()
            if not await self.store.slack_rows(state="pending"):
                return
            await self.h.clock.advance(1)
        raise AssertionError("the Slack outbox never drained")

    async def command(self, text: str, user: str) -> dict[str, Any]:
        """``/orch <text>`` from ``user``; what came back through the response_url."""
        before = len(self.fake.calls_to("response_url"))
        body = form_body(slash_command(text, self.fake.response_url("cmd"), user_id=user))
        status, ack = await self.h.post(body, signed_headers(SECRET, body))
        assert status == 200 and ack == {}, (status, ack)
        calls = await self.fake.wait_for("response_url", before + 1)
        await self.h.service.background.drain()
        return calls[before].params

    async def click(self, action_id: str, value: str, user: str, **options: Any) -> dict[str, Any]:
        """A click; the ephemeral answer the clicker got."""
        before = len(self.fake.calls_to("response_url"))
        status, ack = await self.h.click(action_id, value, user, **options)
        assert status == 200 and ack == {}, (status, ack)  # bolt acked at once, empty
        calls = await self.fake.wait_for("response_url", before + 1)
        await self.h.service.background.drain()
        return calls[before].params

    async def open_incident(self) -> Incident:
        now = self.h.clock.now()

        def announce(incident: Incident) -> Event:
            payload = {"fingerprint": incident.fingerprint, "severity": "critical",
                       "summary": incident.summary}  # fmt: skip
            return Event(INCIDENT_OPENED, now, "test", payload, incident.project, incident.id)

        row = Incident(DOWN_ID, "email-blast:down", "email-blast", "down", "critical",
                       "email-blast is down <!channel>", now)  # fmt: skip
        opened = await self.store.open_incident(row, announce)
        assert opened is not None
        await self.settle()
        return opened

    async def requested(self, user: str = ASKER, text: str = "restart email-blast") -> Approval:
        """``/orch <text>`` by a non-approver: its approval, with the card posted."""
        reply = await self.command(text, user)
        (approval,) = await self.store.pending_approvals()
        assert approval.id[:8] in json.dumps(reply)
        await self.settle()
        return approval

    def posts(self) -> list[Call]:
        return self.fake.calls_to("chat.postMessage")

    def card_post(self, approval: Approval) -> Call:
        (post,) = [c for c in self.posts() if approval.id in json.dumps(c.params)]
        return post

    async def audit(self) -> list[AuditRecord]:
        return list(reversed(await self.store.list_audit()))  # oldest first


@asynccontextmanager
async def world(
    *, config: Config | None = None, store: Store | None = None, clock: FakeClock | None = None
) -> AsyncIterator[World]:
    current = [config or approval_config()]
    async with slack_harness(store=store, clock=clock, config=lambda: current[0]) as h:
        bus = InProcessBus()
        relay = OutboxRelay(h.store, bus, clock=h.clock)
        async with aiohttp.ClientSession() as session:
            client = AsyncWebClient(token="xoxb-test", base_url=h.fake.api_url, session=session)
            outbox = SlackOutbox(h.store, client, h.clock)
            SlackNotifier(h.store, lambda: current[0], wake=outbox.wake).register(bus)
            await bus.start()
            await outbox.start()
            try:
                yield World(h, current, relay, bus, outbox)
            finally:
                await outbox.stop()
                await bus.stop()


def buttons(blocks: Any) -> list[tuple[str, str]]:
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    return [
        (e["action_id"], e["value"])
        for b in blocks if b["type"] == "actions" for e in b["elements"]
    ]  # fmt: skip


def shown(params: dict[str, Any]) -> str:
    return json.dumps(params, ensure_ascii=False)


async def events_of(store: Store, kind: str) -> list[Event]:
    return await store.list_events(types=[kind])


# -- the card ---------------------------------------------------------------------------


async def test_the_card_lands_in_the_incident_thread_with_buttons_carrying_only_the_id() -> None:
    async with world() as w:
        incident = await w.open_incident()
        assert len(w.posts()) == 1  # the incident's card
        incident_card = await w.store.slack_card(incident.id)
        assert incident_card is not None and incident_card.ts is not None

        reply = await w.command("restart email-blast", ASKER)
        (approval,) = await w.store.pending_approvals()
        assert reply["response_type"] == "in_channel"
        assert "the requester is not an approver of outreach" in shown(reply)
        assert f"Approval `{approval.id[:8]}` waits for an approver" in shown(reply)
        action = await w.store.get_action(approval.action_id)
        assert action is not None and action.state == "awaiting_approval"
        assert action.incident_id == incident.id and action.origin == "user"
        (requested,) = await events_of(w.store, APPROVAL_REQUESTED)
        assert requested.incident_id == incident.id and requested.source == "slack"

        await w.settle()
        card = w.card_post(approval)
        assert card.params["thread_ts"] == incident_card.ts  # in the incident's thread
        assert buttons(card.params["blocks"]) == [(APPROVE, approval.id), (DENY, approval.id)]
        text = shown(card.params)
        assert "restart" in text and "email-blast is down &lt;!channel&gt;" in text  # inert
        assert "<!channel>" not in text
        stored = await w.store.slack_card(approval_card_id(approval.id))
        assert stored is not None and stored.ts is not None  # any replica can edit it

        await w.relay.flush()  # a redelivered approval.requested posts nothing twice
        await w.bus.publish(requested)
        await w.settle()
        assert len([c for c in w.posts() if approval.id in shown(c.params)]) == 1


async def test_the_card_joins_the_incident_thread_even_while_the_incident_card_is_queued() -> None:
    async with world() as w:
        now = w.h.clock.now()
        row = Incident(DOWN_ID, "email-blast:down", "email-blast", "down", "critical",
                       "email-blast is down", now)  # fmt: skip
        payload = {"fingerprint": row.fingerprint, "severity": "critical", "summary": row.summary}
        await w.store.open_incident(
            row, lambda i: Event(INCIDENT_OPENED, now, "test", payload, i.project, i.id)
        )
        # Asked before anything reached Slack: both wait in the outbox.
        await w.command("restart email-blast", ASKER)
        (approval,) = await w.store.pending_approvals()
        await w.settle()
        incident_card = await w.store.slack_card(DOWN_ID)
        assert incident_card is not None and incident_card.ts is not None
        assert w.card_post(approval).params["thread_ts"] == incident_card.ts


async def test_approve_grants_once_edits_the_card_and_tells_the_thread() -> None:
    async with world() as w:
        incident = await w.open_incident()
        approval = await w.requested()
        reply = await w.click(APPROVE, approval.id, APPROVER)
        assert reply["response_type"] == "ephemeral"
        assert reply["text"] == "✅ Approved; running restart on email-blast."

        (granted,) = await events_of(w.store, APPROVAL_GRANTED)
        assert granted.payload["by"] == APPROVER and granted.incident_id == incident.id
        action = await w.store.get_action(approval.action_id)
        assert action is not None and action.state == "approved"
        (audit,) = [r.entry for r in await w.audit() if r.entry.approval_id == approval.id]
        assert (audit.actor, audit.actor_kind, audit.decision, audit.outcome) == (
            APPROVER, "user", "granted", "won")  # fmt: skip

        await w.settle()
        (update,) = w.fake.calls_to("chat.update")
        stored = await w.store.slack_card(approval_card_id(approval.id))
        assert stored is not None and update.params["ts"] == stored.ts
        assert buttons(update.params["blocks"]) == []  # no buttons once decided
        assert f"Approved by <@{APPROVER}> at <!date^" in shown(update.params)
        line = w.posts()[-1]
        assert line.params["thread_ts"] == (await w.store.slack_card(incident.id)).thread_ts  # type: ignore[union-attr]
        assert "restart approved" in shown(line.params)
        assert f"Decided by <@{APPROVER}>" in shown(line.params)


async def test_a_double_click_decides_once_and_the_second_hears_who_decided() -> None:
    async with world() as w:
        await w.open_incident()
        approval = await w.requested()
        first = await w.click(APPROVE, approval.id, APPROVER)
        second = await w.click(APPROVE, approval.id, APPROVER)
        assert first["text"].startswith("✅ Approved")
        decided_at = (await w.store.get_approval(approval.id)).decided_at  # type: ignore[union-attr]
        assert decided_at is not None
        assert second["text"] == (
            f"ℹ️ Already approved by <@{APPROVER}> at {decided_at:%H:%M} UTC; nothing changed."
        )
        assert f"<@{APPROVER}>" in shown(second["blocks"])  # a mention in the blocks too
        assert len(await events_of(w.store, APPROVAL_GRANTED)) == 1
        outcomes = [r.entry.outcome for r in await w.audit() if r.entry.approval_id]
        assert outcomes == ["won", "already_decided"]  # every click is an audit row


async def test_two_approvers_clicking_at_once_make_exactly_one_decision() -> None:
    async with world() as w:
        await w.open_incident()
        approval = await w.requested()
        before = len(w.fake.calls_to("response_url"))
        results = await asyncio.gather(
            w.h.click(APPROVE, approval.id, APPROVER, reply_to="a"),
            w.h.click(DENY, approval.id, SECOND, reply_to="b"),
        )
        assert all(status == 200 for status, _ in results)
        await w.fake.wait_for("response_url", before + 2)
        await w.h.service.background.drain()
        decided = await events_of(w.store, APPROVAL_GRANTED) + await events_of(
            w.store, APPROVAL_DENIED
        )
        assert len(decided) == 1
        answers = [c.params["text"] for c in w.fake.calls_to("response_url")[before:]]
        assert sum(a.startswith(("✅", "👎")) for a in answers) == 1
        assert sum(a.startswith("ℹ️ Already") for a in answers) == 1
        row = await w.store.get_approval(approval.id)
        action = await w.store.get_action(approval.action_id)
        assert row is not None and action is not None
        assert action.state == {"granted": "approved", "denied": "denied"}[row.state]


@pytest.mark.postgres
async def test_clicks_on_two_replicas_on_postgres_make_exactly_one_decision(
    database_url: str,
) -> None:
    schema = f"orch_test_{uuid.uuid4().hex[:12]}"
    clock = FakeClock()
    try:
        async with (
            world(store=PostgresStore(database_url, schema=schema), clock=clock) as one,
            world(store=PostgresStore(database_url, schema=schema), clock=clock) as two,
        ):
            await one.command("restart email-blast", ASKER)
            (approval,) = await two.store.pending_approvals()
            b1 = len(one.fake.calls_to("response_url"))
            b2 = len(two.fake.calls_to("response_url"))
            for _ in range(3):  # a few rounds of simultaneous clicks, one per replica
                await asyncio.gather(
                    one.h.click(APPROVE, approval.id, APPROVER),
                    two.h.click(APPROVE, approval.id, SECOND),
                )
            await one.fake.wait_for("response_url", b1 + 3)
            await two.fake.wait_for("response_url", b2 + 3)
            await one.h.service.background.drain()
            await two.h.service.background.drain()
            assert len(await events_of(one.store, APPROVAL_GRANTED)) == 1
            won = [r for r in await one.audit() if r.entry.outcome == "won"]
            assert len(won) == 1 and len(
                [r for r in await one.audit() if r.entry.approval_id == approval.id]
            ) == 6  # fmt: skip
            action = await two.store.get_action(approval.action_id)
            assert action is not None and action.state == "approved"
    finally:
        admin = await asyncpg.connect(database_url)
        try:
            await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await admin.close()


# -- refusals -----------------------------------------------------------------------------


async def test_a_non_approver_is_refused_audited_and_nothing_is_decided() -> None:
    async with world() as w:
        await w.open_incident()
        approval = await w.requested()
        reply = await w.click(APPROVE, approval.id, "U0STRANGER")
        assert reply["text"] == "⛔ You are not an approver of outreach."
        row = await w.store.get_approval(approval.id)
        assert row is not None and row.state == "pending"
        assert await events_of(w.store, APPROVAL_GRANTED) == []
        (refused,) = [r.entry for r in await w.audit() if r.entry.decision == "refused"]
        assert (refused.actor, refused.outcome, refused.approval_id) == (
            "U0STRANGER", "not_approver", approval.id)  # fmt: skip
        assert refused.details == {"click": "granted"}
        assert len(w.fake.calls_to("usergroups.users.list")) == 1  # the group was looked in

        # chatbot's group lists no approvers: nobody, not even outreach's approver.
        asked = await w.command("restart chatbot", APPROVER)
        assert "the requester is not an approver of support" in shown(asked)
        (other,) = await w.store.pending_approvals(project="chatbot")
        reply = await w.click(APPROVE, other.id, APPROVER)
        assert reply["text"] == "⛔ You are not an approver of support."
        assert (await w.store.get_approval(other.id)).state == "pending"  # type: ignore[union-attr]


async def test_a_tampered_or_unknown_value_is_refused_and_audited() -> None:
    async with world() as w:
        await w.open_incident()
        approval = await w.requested()
        for value in ("0" * 32, 'x", "url": "https://evil.example', ""):
            reply = await w.click(APPROVE, value, APPROVER)
            assert reply["text"] == "That approval does not exist."
        refused = [r.entry for r in await w.audit() if r.entry.decision == "refused"]
        assert [r.outcome for r in refused] == ["not_found"] * 3
        assert refused[0].approval_id == "0" * 32 and refused[0].actor == APPROVER
        assert refused[1].details["value"].startswith('x", "url"')
        assert (await w.store.get_approval(approval.id)).state == "pending"  # type: ignore[union-attr]


async def test_a_project_gone_or_an_action_no_longer_allowed_is_refused() -> None:
    async with world() as w:
        approval = await w.requested()
        w.config[0] = approval_config(allowed=["pause"])  # a reload took restart away
        reply = await w.click(APPROVE, approval.id, APPROVER)
        assert reply["text"] == "⛔ email-blast no longer allows restart; it cannot be approved."
        w.config[0] = Config.model_validate({"projects": []})  # and then the project
        reply = await w.click(DENY, approval.id, APPROVER)
        assert reply["text"].startswith("⛔ email-blast is no longer configured")
        outcomes = [r.entry.outcome for r in await w.audit() if r.entry.decision == "refused"]
        assert outcomes == ["action_not_allowed", "project_gone"]
        assert (await w.store.get_approval(approval.id)).state == "pending"  # type: ignore[union-attr]


async def test_four_eyes_keeps_the_requester_from_approving() -> None:
    async with world(config=approval_config(four_eyes=True)) as w:
        await w.open_incident()
        # pause always needs approval, even asked by an approver
        approval = await w.requested(APPROVER, "pause email-blast")
        reply = await w.click(APPROVE, approval.id, APPROVER)
        assert reply["text"] == "✋ You requested it; another approver must approve."
        assert (await w.store.get_approval(approval.id)).state == "pending"  # type: ignore[union-attr]
        reply = await w.click(APPROVE, approval.id, SECOND)
        assert reply["text"] == "✅ Approved; running pause on email-blast."
        outcomes = [r.entry.outcome for r in await w.audit() if r.entry.approval_id]
        assert outcomes == ["four_eyes", "won"]


# -- user groups ----------------------------------------------------------------------------


async def test_a_user_group_member_approves_and_the_lookup_is_cached_five_minutes() -> None:
    async with world() as w:
        w.fake.usergroups[GROUP] = [MEMBER, "U0SOMEONE"]
        first = await w.requested()
        assert (await w.click(APPROVE, first.id, MEMBER))["text"].startswith("✅ Approved")
        second = await w.requested(text="clear-cache email-blast")
        assert (await w.click(DENY, second.id, MEMBER))["text"].startswith("👎 Denied")
        # Two checks of ASKER (their requests) and two clicks: one lookup.
        calls = w.fake.calls_to("usergroups.users.list")
        assert len(calls) == 1 and calls[0].params["usergroup"] == GROUP
        await w.h.clock.advance(301)
        third = await w.requested(text="resume email-blast")
        assert (await w.click(APPROVE, third.id, MEMBER))["text"].startswith("✅ Approved")
        assert len(w.fake.calls_to("usergroups.users.list")) == 2  # looked up again


async def test_a_failed_group_lookup_denies_is_audited_and_is_not_cached() -> None:
    async with world() as w:
        w.fake.usergroups[GROUP] = [MEMBER]
        w.fake.fail("usergroups.users.list", error="missing_scope", times=2)
        approval = await w.requested()  # ASKER's check fails too: still an approval
        reply = await w.click(APPROVE, approval.id, MEMBER)
        assert reply["text"].startswith("⛔ You could not be checked as an approver of outreach")
        (refused,) = [r.entry for r in await w.audit() if r.entry.decision == "refused"]
        assert refused.outcome == "lookup_failed" and GROUP in refused.reason
        assert (await w.store.get_approval(approval.id)).state == "pending"  # type: ignore[union-attr]
        # Slack answers again: the failure was not remembered.
        assert (await w.click(APPROVE, approval.id, MEMBER))["text"].startswith("✅ Approved")


async def test_a_lookup_that_hangs_times_out_and_denies(clock: FakeClock) -> None:
    fake = FakeSlack(usergroups={GROUP: [MEMBER]})
    await fake.start()
    try:
        async with aiohttp.ClientSession() as session:
            client = AsyncWebClient(token="xoxb-test", base_url=fake.api_url, session=session)
            approvers = Approvers(client, clock, timeout_s=0.2)
            config = approval_config()
            project = config.project("email-blast")
            fake.stall("usergroups.users.list")
            verdict = await approvers.check(config, project, MEMBER)
            assert (verdict.allowed, verdict.why, verdict.failed) == (False, "lookup_failed",
                                                                      (GROUP,))  # fmt: skip
            fake.unstall("usergroups.users.list")
            assert (await approvers.check(config, project, MEMBER)).allowed
            assert (await approvers.check(config, project, APPROVER)).via is None  # listed
            empty = Config.model_validate({**config.model_dump(mode="json"), "orchestrators": {
                "outreach": {"channel": "#o", "approvers": [], "projects": ["email-blast"]},
                "support": {"channel": "#s", "projects": ["chatbot"]}}})  # fmt: skip
            nobody = await approvers.check(empty, empty.project("email-blast"), APPROVER)
            assert (nobody.allowed, nobody.why) == (False, "not_approver")  # empty = nobody
            assert approvers.lookups == 2
    finally:
        await fake.stop()


# -- expiry, deny -----------------------------------------------------------------------------


async def test_expiry_edits_the_card_and_a_later_click_finds_it_expired() -> None:
    async with world() as w:
        incident = await w.open_incident()
        approval = await w.requested()
        expiry = ApprovalExpiry(w.store)
        assert await expiry.run() == []  # remembers the pending one's incident
        await w.h.clock.advance(30 * 60)
        (expired,) = await expiry.run()
        assert expired.id == approval.id and expired.state == "expired"
        (event,) = await events_of(w.store, APPROVAL_EXPIRED)
        assert event.incident_id == incident.id  # threaded, though decided by a sweep
        assert await expiry.run() == []  # once

        await w.settle()
        (update,) = w.fake.calls_to("chat.update")
        assert buttons(update.params["blocks"]) == []
        assert "Expired at <!date^" in shown(update.params) and "nothing ran" in shown(
            update.params
        )
        reply = await w.click(APPROVE, approval.id, APPROVER)
        assert reply["text"] == f"⌛ Expired at {approval.expires_at:%H:%M} UTC, nothing ran."
        action = await w.store.get_action(approval.action_id)
        assert action is not None and action.state == "expired"
        assert await events_of(w.store, APPROVAL_GRANTED) == []


async def test_a_click_after_the_deadline_expires_it_even_before_the_sweep() -> None:
    async with world() as w:
        incident = await w.open_incident()
        approval = await w.requested()
        await w.h.clock.advance(30 * 60 + 1)
        reply = await w.click(APPROVE, approval.id, APPROVER)
        assert reply["text"].startswith("⌛ Expired at")
        (event,) = await events_of(w.store, APPROVAL_EXPIRED)
        assert event.incident_id == incident.id
        await w.settle()
        assert "Expired at" in shown(w.fake.calls_to("chat.update")[-1].params)


async def test_deny_leaves_the_action_denied_and_says_so_on_the_card() -> None:
    async with world() as w:
        await w.open_incident()
        approval = await w.requested()
        reply = await w.click(DENY, approval.id, SECOND)
        assert reply["text"] == "👎 Denied; restart on email-blast will not run."
        action = await w.store.get_action(approval.action_id)
        assert action is not None and action.state == "denied"
        (denied,) = await events_of(w.store, APPROVAL_DENIED)
        assert denied.payload["by"] == SECOND
        await w.settle()
        assert f"Denied by <@{SECOND}>" in shown(w.fake.calls_to("chat.update")[-1].params)


# -- the slash command, the App Home, no incident -------------------------------------------


async def test_restart_by_an_approver_runs_at_once_and_by_anyone_else_asks() -> None:
    async with world() as w:
        w.fake.usergroups[GROUP] = [MEMBER]
        by_approver = await w.command("restart email-blast", APPROVER)
        by_member = await w.command("clear-cache email-blast", MEMBER)
        assert "No approval needed: requested by an approver of outreach." in shown(by_approver)
        assert "Running now" in shown(by_member)
        assert await w.store.pending_approvals() == []
        runnable = await w.store.list_actions()
        assert [(a.action, a.needs_approval, a.state) for a in runnable] == [
            ("clear_cache", False, "requested"), ("restart", False, "requested")]  # fmt: skip
        allowed = [r.entry for r in await w.audit() if r.entry.decision == "allowed"]
        assert [(e.actor, e.action, e.outcome) for e in allowed] == [
            (APPROVER, "restart", "approver"), (MEMBER, "clear_cache", "approver")]  # fmt: skip

        asked = await w.command("restart email-blast", ASKER)
        (approval,) = await w.store.pending_approvals()
        assert "Needs approval: the requester is not an approver of outreach." in shown(asked)
        assert approval.id[:8] in shown(asked) and approval.requested_by == ASKER
        paused = await w.command("pause email-blast", APPROVER)  # in needs_approval
        assert "pause on email-blast always needs an approver" in shown(paused)
        assert len(await w.store.pending_approvals()) == 2


async def test_app_home_buttons_decide_and_republish_the_board_with_the_answer() -> None:
    async with world() as w:
        approval = await w.requested()
        before = len(w.fake.calls_to("views.publish"))
        status, ack = await w.h.click(APPROVE, approval.id, APPROVER, container="view")
        assert status == 200 and ack == {}
        (publish,) = (await w.fake.wait_for("views.publish", before + 1))[before:]
        await w.h.service.background.drain()
        assert publish.params["user_id"] == APPROVER
        view = publish.params["view"]
        view = json.loads(view) if isinstance(view, str) else view
        assert "Approved; running restart on email-blast" in json.dumps(view, ensure_ascii=False)
        assert approval.id not in json.dumps(view)  # no longer pending: no buttons
        assert (await w.store.get_approval(approval.id)).state == "granted"  # type: ignore[union-attr]
        refused = await w.store.pending_approvals()
        assert refused == []


async def test_without_an_incident_the_card_goes_to_the_channel_and_decisions_under_it() -> None:
    async with world() as w:
        approval = await w.requested()
        card = w.card_post(approval)
        assert "thread_ts" not in card.params and card.params["channel"] == "#ops-outreach"
        await w.click(APPROVE, approval.id, APPROVER)
        await w.settle()
        stored = await w.store.slack_card(approval_card_id(approval.id))
        assert stored is not None
        line = w.posts()[-1]
        assert line.params["thread_ts"] == stored.ts  # under the approval card itself
        assert "restart approved" in shown(line.params)
