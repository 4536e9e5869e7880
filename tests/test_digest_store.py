"""The report store (``storage.report_store``) and the outbox's message/upload kinds, on
every backend of the contract suite (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest

from storage.base import Store
from storage.migrate import load_migrations
from storage.report_store import ProjectCounts
from storage.slack_store import NewSlackMessage, card_key
from storage.sqlite import SQLiteStore
from storage.sqlite_codec import split_statements
from tests.digest_history import PROJECTS, H, M, seed
from tests.test_store_contract import BACKENDS, MakeStore

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=sorted(BACKENDS))
async def make(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeStore]:
    async with BACKENDS[request.param](tmp_path) as make:
        yield make


@pytest.fixture
async def stores(make: MakeStore) -> AsyncIterator[list[Store]]:
    """Three stores on one database: three replicas."""
    opened = [make() for _ in range(3)]
    for s in opened:
        await s.open()
    try:
        yield opened
    finally:
        for s in opened:
            await s.close()


async def test_report_facts_of_a_known_day(stores: list[Store]) -> None:
    store = stores[0]
    day = await seed(store)
    facts = await store.report_facts(PROJECTS, day.since, day.end)
    assert (facts.since, facts.until) == (day.since, day.end)
    found = {(i.project, i.condition, i.opened_at): i for i in facts.incidents}
    lo = day.end - 10 * H
    assert sorted(found) == sorted([
        ("alpha", "down", day.end - 30 * H),  # overlaps the window's start
        ("alpha", "down", lo),
        ("alpha", "metric:error_rate", day.end - 5 * H),
        ("alpha", "down", day.end - 2 * H),
        ("beta", "down", day.silence.starts_at + 30 * M / 60),
    ])  # fmt: skip
    assert [i.opened_at for i in facts.incidents] == sorted(i.opened_at for i in facts.incidents)
    i1 = found[("alpha", "down", lo)]
    assert (i1.acked_at, i1.resolved_at, i1.first_action_at) == (lo + 2 * M, lo + 10 * M, None)
    i2 = found[("alpha", "metric:error_rate", day.end - 5 * H)]
    assert i2.first_action_at == day.fix_at and i2.acked_at is None
    assert found[("alpha", "down", day.end - 2 * H)].resolved_at is None
    [silence] = facts.silences
    assert (silence.project, silence.starts_at, silence.ends_at) == (
        "beta", day.silence.starts_at, day.silence.ends_at,
    )  # fmt: skip
    signals = [(s.project, s.type, s.payload.get("metric")) for s in facts.signals]
    assert signals == [
        ("alpha", "project.flapping", None),
        ("alpha", "project.flapping", None),
        ("alpha", "metric.anomaly", "error_rate"),
        ("alpha", "metric.anomaly", "error_rate"),
        ("alpha", "metric.anomaly", "latency_p95_ms"),
        ("beta", "metric.anomaly", "cpu_percent"),
    ]  # yesterday's anomaly and status events are left out
    assert not facts.signals_cut
    assert facts.counts == {
        "alpha": ProjectCounts(fixes_run=2, fixes_verified=1, approvals_granted=1,
                               approvals_denied=1, approvals_expired=1, analyses=3,
                               claude_analyses=2, claude_tokens=2000,
                               claude_cost_usd=pytest.approx(0.03)),  # type: ignore[arg-type]
    }  # fmt: skip


async def test_report_facts_filters_by_project_and_cuts_signals(stores: list[Store]) -> None:
    store = stores[0]
    day = await seed(store)
    only = await store.report_facts(["delta", "other"], day.since, day.end)
    assert [i.project for i in only.incidents] == ["other"]
    assert only.silences == () and only.signals == () and only.counts == {}
    cut = await store.report_facts(PROJECTS, day.since, day.end, signal_limit=2)
    assert cut.signals_cut and [s.payload.get("metric") for s in cut.signals] == [
        "latency_p95_ms",
        "cpu_percent",
    ]  # the newest two, oldest first
    empty = await store.report_facts([], day.since, day.end)
    assert (empty.incidents, empty.signals, empty.counts) == ((), (), {})
    with pytest.raises(ValueError):
        await store.report_facts(PROJECTS, day.end, day.since)


async def test_digest_claimed_once_across_replicas(stores: list[Store]) -> None:
    claims = await asyncio.gather(
        *(s.claim_digest("outreach", "2026-03-02", f"r{i}", 600) for i, s in enumerate(stores))
    )
    assert sorted(claims) == [False, False, True]
    winner = f"r{claims.index(True)}"
    assert await stores[0].digest_state("outreach", "2026-03-02") == "claimed"
    assert not await stores[1].finish_digest("outreach", "2026-03-02", "nobody")
    assert await stores[2].finish_digest("outreach", "2026-03-02", winner)
    assert await stores[0].digest_state("outreach", "2026-03-02") == "queued"
    # Queued: never again, not even once "stale".
    assert not await stores[1].claim_digest("outreach", "2026-03-02", "r9", 1e-6)
    # Another group, another day: their own rows.
    assert await stores[1].claim_digest("support", "2026-03-02", "r1", 600)
    assert await stores[1].claim_digest("outreach", "2026-03-03", "r1", 600)
    assert await stores[0].digest_state("ops", "2026-03-02") is None


async def test_a_stale_claim_is_taken_over_once(stores: list[Store]) -> None:
    assert await stores[0].claim_digest("outreach", "2026-03-02", "dead", 600)
    assert not await stores[1].claim_digest("outreach", "2026-03-02", "r1", 600)  # fresh
    takeovers = await asyncio.gather(
        *(s.claim_digest("outreach", "2026-03-02", f"r{i}", 1e-6) for i, s in enumerate(stores))
    )
    assert takeovers.count(True) >= 1
    assert not await stores[0].finish_digest("outreach", "2026-03-02", "dead")  # taken over
    with pytest.raises(ValueError):
        await stores[0].claim_digest("outreach", "2026-03-02", "r0", 0)


async def test_message_and_upload_kinds(stores: list[Store]) -> None:
    store = stores[0]
    key = "digest:outreach:2026-03-02"
    # Five cards: the channel storms, yet a message of its own is never folded.
    cards = [NewSlackMessage("#ops", "post_card", card_key(f"i{n}"), {"line": {}},
                             incident_id=f"i{n}") for n in range(6)]  # fmt: skip
    rows = [
        NewSlackMessage("#ops", "message", card_key(key), {"message": {"text": "d"}},
                        incident_id=key),
        NewSlackMessage("#ops", "upload", f"upload:{key}", {"file": {"png": "x"}},
                        incident_id=key),
    ]  # fmt: skip
    assert await store.slack_enqueue([*cards, *rows]) == 8
    assert await store.slack_enqueue(rows) == 0  # the keys: once
    queued = {r.kind: r for r in await store.slack_rows(channel="#ops")}
    assert queued["message"].state == "pending" and queued["upload"].state == "pending"
    card = await store.slack_card(key)
    assert card is not None and card.ts is None and not card.folded
    # Cards first (their order); the upload waits for its message's ts.
    sent: list[str] = []
    for _ in range(12):
        claimed = await store.slack_claim("me")
        if not claimed:
            break
        [row] = claimed
        sent.append(row.kind)
        await store.slack_mark_sent(row.id, "me", ts=f"1.{row.id}", posted_channel="C0OPS")
    assert sent[-2:] == ["message", "upload"] and sent.count("storm") == 1
    card = await store.slack_card(key)
    assert card is not None and (card.channel, card.ts) == ("C0OPS", f"1.{queued['message'].id}")


async def test_upload_of_a_failed_message_is_ready_to_fail(stores: list[Store]) -> None:
    store = stores[0]
    key = "history:alpha:1"
    await store.slack_enqueue([
        NewSlackMessage("#ops", "message", card_key(key), {}, incident_id=key),
        NewSlackMessage("#ops", "upload", f"upload:{key}", {}, incident_id=key),
    ])  # fmt: skip
    [message] = await store.slack_claim("me")
    await store.slack_mark_done(message.id, "me", state="failed", error="invalid_blocks")
    [upload] = await store.slack_claim("me")
    assert upload.kind == "upload"  # claimable: the sender fails it rather than wait forever


async def test_sqlite_upgrade_keeps_the_outbox_rows_and_ids(tmp_path: Path) -> None:
    """0011 rebuilds slack_outbox (SQLite cannot change a CHECK): rows, ids and the id
    sequence survive; foreign keys and integrity hold."""
    path = tmp_path / "orch.db"
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
                   " name TEXT NOT NULL, applied_at TEXT NOT NULL)")  # fmt: skip
        for m in load_migrations("sqlite"):
            if m.version < 11:
                for statement in split_statements(m.sql):
                    db.execute(statement)
                db.execute("INSERT INTO schema_migrations VALUES (?, ?, '')", (m.version, m.name))
        db.commit()
    store = SQLiteStore(path, auto_migrate=False)
    await store.open()
    try:
        cards = [
            NewSlackMessage("#a", "post_card", card_key(f"i{n}"), {"n": n}, incident_id=f"i{n}")
            for n in range(3)
        ]
        assert await store.slack_enqueue(cards) == 3
        before = await store.slack_rows()
        later = [m.version for m in load_migrations("sqlite") if m.version >= 11]
        assert await store.migrate() == later  # 0011, then any newer
        assert await store.slack_rows() == before
        message = NewSlackMessage("#a", "message", card_key("k"), {}, incident_id="k")
        assert await store.slack_enqueue([message]) == 1
        assert [r.id for r in await store.slack_rows()] == [1, 2, 3, 4]
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
