"""Interaction burst (issue 10, point 6): 200 slash commands and button clicks in a few
seconds, spread round-robin over three orch replicas sharing one PostgreSQL schema and
one Redis.

Each replica is a whole ``Runtime`` (web app, Slack app, outbox, notifier, executor) in
this process.  Requests are signed like Slack's (``SignatureVerifier``) and posted over
HTTP to the replicas' ``/slack/events``: 40 ``/orch restart`` from someone who is not an
approver (40 approvals), then, as soon as each approval card reaches the fake Slack,
three clicks on that card at once on the three replicas (double clicks, approvers
racing, Approve against Deny) and an ``/orch status``.  Asserted is what people and
services see: every ack under Slack's 3 s, one answer per request, one decision per
approval (approvals table and audit log), one ``/control`` call per approved action at
the project, one card edit per approval, "Already approved by <@winner>" for the losers.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.notifier import approval_card_id
from bot.runtime import Runtime, RuntimeOptions
from bot.settings import Settings
from storage.autonomy_store import Approval
from storage.postgres import PostgresStore
from tests.burst_harness import (
    ALICE,
    ASKER,
    BOB,
    BOSS,
    ENV,
    SIGNING,
    Burst,
    Project,
    Sent,
    TimedSlack,
    approval_cards,
    burst_config,
    summary,
)
from tests.fake_slack import BOT_USER_ID
from tests.redis_database import own_redis_database
from tests.slack_harness import Harness, slack_harness
from tests.support import eventually

pytestmark = [pytest.mark.timeout(150), pytest.mark.postgres, pytest.mark.redis]

PROJECTS = [f"svc-{i:02d}" for i in range(20)]
APPROVE, DENY = "approval_approve", "approval_deny"
# The three clicks on one card, sent at once to three replicas, by pattern (card k % 4).
CLICKS = [
    [(APPROVE, BOSS), (APPROVE, BOSS), (APPROVE, ALICE)],  # a double click and a rival
    [(APPROVE, ALICE), (APPROVE, BOB), (APPROVE, BOSS)],  # three approvers racing
    [(APPROVE, ALICE), (DENY, BOB), (APPROVE, BOSS)],  # Approve against Deny
    [(DENY, BOB), (DENY, BOB), (DENY, BOSS)],
]
ACK_LIMIT_S = 3.0  # Slack shows the user an error when the ack takes longer


async def timed_ack(h: Harness, text: str) -> tuple[int, dict[str, Any], float]:
    """``/orch <text>``: (HTTP status, body, seconds); fails past Slack's 3 s."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(ACK_LIMIT_S):
        status, body = await h.command(text)
    return status, body, loop.time() - started


async def test_the_ack_never_waits_for_slacks_web_api() -> None:
    """Found by the burst: bolt's default authorization called auth.test on the request
    path, before the listener could ack, once per request until the first answer came
    (43 calls for a burst of 40 on three fresh replicas).  With Slack's API slow the acks
    waited for it; with it failing, bolt answered the user with an error instead."""
    async with slack_harness() as h:
        assert len(h.fake.calls_to("auth.test")) == 1  # the service's own, at start
        assert h.service.identity.user_id == BOT_USER_ID  # what bolt's self-event filter uses
        h.fake.stall("auth.test")  # Slack's Web API hangs from now on
        acks = await asyncio.gather(*(timed_ack(h, "status") for _ in range(20)))
        assert [(status, body) for status, body, _ in acks] == [(200, {})] * 20
        await h.fake.wait_for("response_url", 20)  # and each was answered
        h.fake.unstall("auth.test")
        h.fake.fail("auth.test", status=429, retry_after=30, times=100)
        status, body, _ = await timed_ack(h, "incidents")
        assert (status, body) == (200, {})
        await h.fake.wait_for("response_url", 21)
        assert len(h.fake.calls_to("auth.test")) == 1


@pytest.fixture
async def redis_db(redis_url: str) -> AsyncIterator[str]:
    async with own_redis_database(redis_url) as url:
        yield url


@pytest.fixture
async def replicas(
    pg_schema: tuple[str, str], redis_db: str, tmp_path: Path
) -> AsyncIterator[tuple[list[Runtime], TimedSlack, dict[str, Project], PostgresStore]]:
    """Three replicas on one schema and one Redis, Slack at the fake, 20 projects."""
    url, schema = pg_schema
    slack = TimedSlack()
    projects = {name: Project(name) for name in PROJECTS}
    store = PostgresStore(url.split("?")[0], schema=schema)
    runtimes: list[Runtime] = []
    await slack.start()
    settings = Settings(
        database_url=url, redis_url=redis_db, sqlite_path=tmp_path / "unused.db", port=0,
        env=ENV, slack_bot_token="xoxb-burst", slack_signing_secret=SIGNING,
        slack_api_url=slack.api_url,
    )  # fmt: skip
    try:
        for p in projects.values():
            await p.listener.start()
        for i in range(3):
            options = RuntimeOptions(replica_id=f"r{i}", lease_ttl_s=5)
            runtimes.append(Runtime(settings, burst_config(projects), options=options))
            await runtimes[-1].start()
        await store.open()
        yield runtimes, slack, projects, store
    finally:
        for runtime in reversed(runtimes):
            await runtime.stop()
        await store.close()
        for p in projects.values():
            await p.listener.stop()
        await slack.stop()


async def run_burst(burst: Burst) -> list[Sent]:
    """40 restarts at once; each approval card's clicks and a status as it appears."""
    requests = [asyncio.ensure_future(burst.command(f"restart {name}")) for name in PROJECTS * 2]
    seen, cards = 0, 0
    while cards < 2 * len(PROJECTS):
        await burst.slack.wait_for("chat.postMessage", seen + 1, timeout=30)
        seen, new = approval_cards(burst.slack, seen)
        for approval, channel in new:
            status = "status" if cards % 2 else f"status {PROJECTS[cards % len(PROJECTS)]}"
            clicks = burst.clicks(approval, channel, CLICKS[cards % len(CLICKS)], status)
            requests += [asyncio.ensure_future(r) for r in clicks]
            cards += 1
    return list(await asyncio.gather(*requests))


async def test_200_requests_on_three_replicas_ack_fast_and_decide_each_approval_once(
    replicas: tuple[list[Runtime], TimedSlack, dict[str, Project], PostgresStore],
) -> None:
    runtimes, slack, projects, store = replicas
    connector = aiohttp.TCPConnector(limit=0)  # the client never queues a request
    async with aiohttp.ClientSession(connector=connector) as http:
        burst = Burst(slack, runtimes, http)
        began = asyncio.get_running_loop().time()
        sent = await run_burst(burst)
        span_s = asyncio.get_running_loop().time() - began

    # Every request acknowledged, round-robin over the replicas, each under 3 s.
    acks = [s.ack_s for s in sent]
    figures = f"{len(sent)} requests in {span_s:.1f} s over 3 replicas; ack {summary(acks)}"
    print(figures)
    assert Counter(s.kind for s in sent) == {"click": 120, "restart": 40, "status": 40}
    assert Counter(s.replica for s in sent) == {0: 67, 1: 67, 2: 66}
    assert [(s.status, s.body) for s in sent] == [(200, "")] * 200
    assert max(acks) < ACK_LIMIT_S, figures
    assert len(slack.calls_to("auth.test")) == 3  # each replica's at start, none per request

    # Each request answered exactly once, through its own response_url.
    await eventually(lambda: len(slack.arrived) >= len(sent), "every answer", timeout=60)
    await settle(runtimes, store)
    answers = {c.params["_name"]: c.params for c in slack.calls_to("response_url")}
    assert len(slack.calls_to("response_url")) == len(answers) == 200
    for s in sent:  # a click's answer is the clicker's alone; an action request the channel's
        expected = "in_channel" if s.kind == "restart" else "ephemeral"
        assert answers[s.reply_to]["response_type"] == expected, answers[s.reply_to]

    approvals = [await store.get_approval(a) for a in {s.approval for s in sent} - {""}]
    assert len(approvals) == 40
    for approval in approvals:
        assert approval is not None
        await check_one_decision(approval, store, slack, projects, sent, answers)
    granted = sum(a is not None and a.state == "granted" for a in approvals)
    # No /control call beyond the approved ones, on any project.
    assert sum(p.control_requests for p in projects.values()) == granted
    print(f"{figures}; answered {summary(burst.answer_s())}; {granted} approved,"
          f" {40 - granted} denied; duplicate decisions 0, duplicate /control calls 0")  # fmt: skip


async def settle(runtimes: list[Runtime], store: PostgresStore) -> None:
    """Wait until every decision's consequences are done: the approved restarts verified,
    every event handled by every role, and nothing left in the Slack outbox."""

    async def actions_done() -> bool:
        return all(a.state not in ("approved", "running", "verifying")
                   for a in await store.list_actions(limit=1000))  # fmt: skip

    await eventually(actions_done, "the approved restarts verified", timeout=60)
    for runtime in runtimes:
        await runtime.relay.flush()
        await runtime.bus.drain()  # type: ignore[attr-defined]

    async def outbox_empty() -> bool:
        return await store.slack_next_due() is None

    await eventually(outbox_empty, "the Slack outbox sent everything", timeout=60)


async def check_one_decision(
    approval: Approval,
    store: PostgresStore,
    slack: TimedSlack,
    projects: dict[str, Project],
    sent: list[Sent],
    answers: dict[str, dict[str, Any]],
) -> None:
    """One approval after its three racing clicks: one decision in the store and audit
    log, one answer per click (the winner's, the losers' "Already … by <@winner>"), one
    card edit showing the outcome, and the action run exactly once if approved."""
    assert approval.state in ("granted", "denied") and approval.decided_by in (BOSS, ALICE, BOB)
    winner, word = approval.decided_by, "approved" if approval.state == "granted" else "denied"
    audit = [r.entry for r in await store.list_audit(project=approval.project, limit=1000)]
    clicks = [e for e in audit if e.approval_id == approval.id and e.actor != ASKER
              and e.decision in ("granted", "denied")]  # fmt: skip
    assert sorted(e.outcome for e in clicks) == ["already_decided", "already_decided", "won"]
    [won] = [e for e in clicks if e.outcome == "won"]
    assert (won.actor, won.decision) == (winner, approval.state)

    mine = [s for s in sent if s.approval == approval.id]
    winning = "Approved; running restart" if approval.state == "granted" else "Denied; restart"
    [first] = [s for s in mine if winning in json.dumps(answers[s.reply_to])]
    assert first.click == (APPROVE if approval.state == "granted" else DENY, winner)
    losers = [json.dumps(answers[s.reply_to]) for s in mine if s is not first]
    assert all(f"Already {word} by <@{winner}>" in text for text in losers), losers

    card = await store.slack_card(approval_card_id(approval.id))
    assert card is not None and card.ts is not None
    where = (card.channel, card.ts)
    edits = [c.params for c in slack.calls_to("chat.update")
             if (c.params.get("channel"), c.params.get("ts")) == where]  # fmt: skip
    assert len(edits) == 1, edits
    assert str(edits[0]["text"]).startswith(word.capitalize())
    assert APPROVE not in json.dumps(edits[0]) and f"<@{winner}>" in json.dumps(edits[0])

    keys = projects[approval.project].keys
    action = await store.get_action(approval.action_id)
    assert action is not None
    if approval.state == "granted":
        assert keys.count(approval.action_id) == 1
        assert action.state == "verified"
    else:
        assert approval.action_id not in keys
        assert action.state == "denied"
