"""Deciding approvals through the API: the same compare-and-set and audit as a Slack
click (``agents.approving``), exactly once across concurrent POSTs, a racing Slack click
and two replicas on PostgreSQL; who may decide in token and local mode; every attempt
audited; the relay woken so the approved action runs at once.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from agents.approving import decide
from agents.bus import InProcessBus
from agents.clock import FakeClock
from agents.events import APPROVAL_DENIED, APPROVAL_GRANTED, Event
from agents.outbox import OutboxRelay
from bot.config import Config
from bot.settings import Settings
from storage.autonomy_store import AuditRecord
from storage.base import Store
from storage.postgres import PostgresStore
from storage.sqlite import SQLiteStore
from tests.api_harness import (
    APPROVER,
    ASKER,
    GROUP,
    MEMBER,
    OUTSIDER,
    SECOND,
    ApiWorld,
    api_config,
    api_world,
    ask,
    open_incident,
)
from tests.fake_slack import FakeSlack


async def decisions(store: Store) -> list[Event]:
    return await store.list_events(types=[APPROVAL_GRANTED, APPROVAL_DENIED])


async def audit_of(store: Store, approval_id: str) -> list[AuditRecord]:
    rows = await store.list_audit(limit=1000)
    return [r for r in reversed(rows) if r.entry.approval_id == approval_id]  # oldest first


async def pending(w: ApiWorld, **kwargs: object) -> str:
    asked = await ask(w.store, **kwargs)  # type: ignore[arg-type]
    assert asked.approval is not None
    return asked.approval.id


async def test_approve_decides_once_and_the_second_post_hears_who_decided_and_when() -> None:
    async with api_world() as w:
        incident = await open_incident(w.store, w.clock)
        approval_id = await pending(w, incident_id=incident.id)
        first = await w.decide(approval_id)
        assert first.status == 200
        assert first.body["outcome"] == "won" and first.body["decision"] == "granted"
        assert first.body["approval"]["state"] == "granted"
        assert first.body["approval"]["decided_by"] == APPROVER  # the Slack user alice maps to
        assert w.wakes[0] >= 1  # the relay was woken: the approved action runs at once
        await w.clock.advance(90)
        second = await w.decide(approval_id, token="bob")
        assert second.status == 409 and second.error["code"] == "already_decided"
        assert second.error["message"] == (
            f"already approved by {APPROVER} at 2026-01-01T00:00:00Z; nothing changed"
        )
        assert second.error["details"]["approval"]["decided_at"] == "2026-01-01T00:00:00Z"
        deny = await w.decide(approval_id, "deny")
        assert deny.status == 409
        (event,) = await decisions(w.store)
        assert event.type == APPROVAL_GRANTED and event.source == "api"
        assert event.incident_id == incident.id and event.payload["by"] == APPROVER
        action = await w.store.get_action(first.body["approval"]["action_id"])
        assert action is not None and action.state == "approved"
        rows = await audit_of(w.store, approval_id)
        assert [(r.entry.actor, r.entry.decision, r.entry.outcome) for r in rows] == [
            (APPROVER, "granted", "won"), (SECOND, "granted", "already_decided"),
            (APPROVER, "denied", "already_decided"),
        ]  # fmt: skip
        assert {r.entry.actor_kind for r in rows} == {"user"}


async def test_deny_with_a_reason_writes_it_as_an_audit_comment() -> None:
    async with api_world() as w:
        approval_id = await pending(w)
        answer = await w.decide(approval_id, "deny", json={"reason": "  not during the sale "})
        assert answer.status == 200 and answer.body["approval"]["state"] == "denied"
        rows = await audit_of(w.store, approval_id)
        assert [(r.entry.decision, r.entry.reason) for r in rows][-1] == (
            "comment", "not during the sale"
        )  # fmt: skip
        assert rows[-1].entry.details == {"decision": "denied", "via": "api", "api_user": "alice"}
        action = await w.store.get_action(answer.body["approval"]["action_id"])
        assert action is not None and action.state == "denied"
        empty = await w.decide(await pending(w), json={})  # an empty object is fine too
        assert empty.status == 200


async def test_concurrent_posts_make_exactly_one_decision() -> None:
    async with api_world() as w:
        for _ in range(3):
            approval_id = await pending(w)
            answers = await asyncio.gather(
                *(w.decide(approval_id, verb, token=who)
                  for who in ("alice", "bob") for verb in ("approve", "deny", "approve"))
            )  # fmt: skip
            statuses = Counter(a.status for a in answers)
            assert statuses == {200: 1, 409: 5}
            (winner,) = [a for a in answers if a.status == 200]
            decided_by = winner.body["approval"]["decided_by"]
            for loser in (a for a in answers if a.status == 409):
                assert loser.error["details"]["approval"]["decided_by"] == decided_by
            assert len(await audit_of(w.store, approval_id)) == 6  # every attempt
        assert len(await decisions(w.store)) == 3


async def test_an_api_approve_racing_a_slack_click_makes_exactly_one_decision() -> None:
    async with api_world() as w:
        outcomes: Counter[str] = Counter()
        for _ in range(5):
            approval_id = await pending(w)
            row = await w.store.get_approval(approval_id)
            assert row is not None
            # The Slack click's own path: the same shared decide, as bot.slack.approvals does.
            api, slack = await asyncio.gather(
                w.decide(approval_id),
                decide(w.store, row, "denied", SECOND, four_eyes=False, actor_kind="user",
                       source="slack"),
            )  # fmt: skip
            assert (api.status == 200) != slack.won
            outcomes["api" if api.status == 200 else "slack"] += 1
            state = (await w.store.get_approval(approval_id)).state  # type: ignore[union-attr]
            assert state == ("granted" if api.status == 200 else "denied")
        assert sum(outcomes.values()) == 5
        assert len(await decisions(w.store)) == 5


@pytest.mark.postgres
async def test_posts_to_two_replicas_on_postgres_make_exactly_one_decision(
    pg_schema: tuple[str, str],
) -> None:
    url, _schema = pg_schema
    async with (
        api_world(store=PostgresStore(url)) as one,
        api_world(store=PostgresStore(url)) as two,
    ):
        for _ in range(3):
            approval_id = await pending(one)
            row = await two.store.get_approval(approval_id)
            assert row is not None
            answers = await asyncio.gather(
                one.decide(approval_id), two.decide(approval_id, token="bob"),
                one.decide(approval_id, "deny", token="bob"), two.decide(approval_id),
            )  # fmt: skip
            results = [a.status for a in answers]
            slack = await decide(two.store, row, "granted", APPROVER, four_eyes=False,
                                 actor_kind="user", source="slack")  # fmt: skip
            assert sorted(results) == [200, 409, 409, 409] and not slack.won
            rows = await audit_of(one.store, approval_id)
            assert len(rows) == 5 and [r.entry.outcome for r in rows].count("won") == 1
        assert len(await decisions(two.store)) == 3


async def test_readers_and_non_approvers_get_403_and_every_refusal_is_audited() -> None:
    async with api_world() as w:
        approval_id = await pending(w)
        reader = await w.decide(approval_id, token="dave")
        assert reader.status == 403 and reader.error["code"] == "not_an_approver"
        assert "dave is not mapped to a Slack user" in reader.error["message"]
        outsider = await w.decide(approval_id, token="carol")
        assert outsider.status == 403
        assert outsider.error["message"] == f"carol ({OUTSIDER}) is not an approver of outreach"
        chatbot = await w.store.list_audit(limit=5)
        assert [r.entry.outcome for r in reversed(chatbot)] == ["not_mapped", "not_approver"]
        assert [r.entry.actor for r in reversed(chatbot)] == ["api:dave", OUTSIDER]
        assert chatbot[0].entry.details == {"click": "granted", "via": "api", "api_user": "carol"}
        row = await w.store.get_approval(approval_id)
        assert row is not None and row.state == "pending"
        missing = await w.decide("f" * 32)
        assert missing.status == 404
        (last,) = await w.store.list_audit(limit=1)
        assert (last.entry.outcome, last.entry.approval_id) == ("not_found", "f" * 32)


async def test_a_member_of_an_approvers_user_group_approves() -> None:
    fake = FakeSlack(usergroups={GROUP: [MEMBER]})
    await fake.start()
    try:
        async with aiohttp.ClientSession() as session:
            client = AsyncWebClient(token="xoxb-test", base_url=fake.api_url, session=session)
            async with api_world(config=api_config(group=True), slack_client=client) as w:
                answer = await w.decide(await pending(w), token="mia")
                assert answer.status == 200 and answer.body["approval"]["decided_by"] == MEMBER
                refused = await w.decide(await pending(w), token="carol")
                assert refused.status == 403
        assert len(fake.calls_to("usergroups.users.list")) == 1  # cached between checks
    finally:
        await fake.stop()


async def test_four_eyes_keeps_the_requester_from_approving_but_not_from_withdrawing() -> None:
    async with api_world(config=api_config(four_eyes=True)) as w:
        approval_id = await pending(w, by=ASKER)
        own = await w.decide(approval_id, token="asker")
        assert own.status == 403 and own.error["code"] == "four_eyes"
        withdraw = await w.decide(approval_id, "deny", token="asker")
        assert withdraw.status == 200


async def test_an_expired_approval_is_a_409_and_nothing_runs() -> None:
    async with api_world() as w:
        approval_id = await pending(w)
        await w.clock.advance(31 * 60)
        answer = await w.decide(approval_id)
        assert answer.status == 409 and answer.error["code"] == "expired"
        assert answer.error["message"] == "it expired at 2026-01-01T00:30:00Z; nothing runs"
        assert await decisions(w.store) == []


async def test_a_config_change_refuses_what_it_no_longer_allows() -> None:
    async with api_world() as w:
        approval_id = await pending(w)
        w.configs[0] = api_config(allowed=["restart"])  # pause is no longer allowed
        answer = await w.decide(approval_id)
        assert answer.status == 409 and answer.error["code"] == "action_not_allowed"
        assert answer.error["message"] == (
            "email-blast no longer allows pause; nothing was decided"
        )
        assert (await w.decide(approval_id, "deny")).status == 200  # denying stays possible
        other = await pending(w)
        w.configs[0] = Config.model_validate(
            {"projects": [{"name": "chatbot", "url": "http://127.0.0.1:9"}],
             "api_users": {"alice": APPROVER}}
        )  # fmt: skip
        gone = await w.decide(other, "deny")
        assert gone.status == 409 and gone.error["code"] == "project_gone"
        outcomes = [r.entry.outcome for r in reversed(await w.store.list_audit(limit=10))]
        assert outcomes == ["action_not_allowed", "won", "project_gone"]


async def test_the_local_operator_approves_audited_as_an_operator() -> None:
    async with api_world(settings=Settings(api_mode="local"), operator="ann") as w:
        approval_id = await pending(w)
        answer = await w.decide(approval_id, token=None, json={"reason": "checked the disk"})
        assert answer.status == 200 and answer.body["approval"]["decided_by"] == "ann"
        rows = await audit_of(w.store, approval_id)
        assert [(r.entry.actor, r.entry.actor_kind, r.entry.decision) for r in rows] == [
            ("ann", "operator", "granted"), ("ann", "operator", "comment")
        ]  # fmt: skip
        (event,) = await decisions(w.store)
        assert event.payload["by"] == "ann"


async def test_the_decision_is_published_at_once_through_the_relay() -> None:
    clock = FakeClock()
    store = SQLiteStore(":memory:", clock=clock)
    bus = InProcessBus()
    # The relay sweeps only when the FakeClock moves (never here): only a wake publishes.
    relay = OutboxRelay(store, bus, clock=clock)
    got: asyncio.Queue[Event] = asyncio.Queue()

    async def on_event(event: Event) -> None:
        await got.put(event)

    bus.subscribe("test", on_event, types=[APPROVAL_GRANTED])
    async with api_world(store=store, clock=clock, wake=relay.wake) as w:
        await bus.start()
        await relay.start()
        try:
            approval_id = await pending(w)
            answer = await w.decide(approval_id)
            assert answer.status == 200
            event = await asyncio.wait_for(got.get(), timeout=5)
            assert event.payload["approval_id"] == approval_id
        finally:
            await relay.stop()
            await bus.stop()
