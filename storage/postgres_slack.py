"""The PostgreSQL side of ``storage.slack_store``: the Slack outbox shared by replicas.

A mixin of ``PostgresStore`` (it needs ``_acquire`` and ``transaction``).  Every deadline
is the server's ``now()``.  No event rows are written here, so ``insert_events`` and its
lock are not involved.

Two replicas never send one message: ``slack_claim`` locks the due ``slack_channels`` rows
``FOR UPDATE SKIP LOCKED`` (concurrent claimers take disjoint channels, and a row changed
meanwhile is re-checked on its newest version) and marks them held before it commits; the
held channel is skipped by everyone else until it is released or its hold expires (a
replica that died mid-send: then, and only then, a message may go out twice).  Queueing
locks the channel rows it writes to (in name order, so two writers never wait on each
other in a cycle): the storm count and the insert it decides are then one atomic step.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from storage.postgres_sql import TIME, aware, opt_utc
from storage.rows import check_limit, slack_row_from_row, slack_storm_from_rows
from storage.slack_store import (
    READY_SQL,
    STORM_AFTER,
    STORM_WINDOW_S,
    NewSlackMessage,
    SlackCard,
    SlackOutboxRow,
    SlackStorm,
    check_done_state,
    check_enqueue,
    head_order,
    storm_folds,
)

_COLUMNS = (
    "o.id, o.channel, o.kind, o.dedupe_key, o.payload, o.incident_id, o.storm_id, o.state,"
    " o.attempts, o.order_at, o.not_before, o.created, o.sent_at, o.ts, o.last_error"
)
_SECONDS = "* interval '1 second'"
_NEW_TOP_LEVEL = """(o.kind = 'storm' AND NOT EXISTS (
        SELECT 1 FROM slack_storms s WHERE s.id = o.storm_id AND s.ts IS NOT NULL))
    OR (o.kind = 'post_card'
    AND NOT (o.payload::jsonb ? 'thread_of')
    AND NOT coalesce(o.payload::jsonb -> 'message' ? 'thread_ts', false))"""
_DUE_ROW = f"o.state = 'pending' AND o.not_before <= now() AND {READY_SQL}"
_CLAIM_CHANNELS = f"""
    WITH due AS (
        SELECT c.channel FROM slack_channels c
        WHERE c.not_before <= now() AND (c.held_by IS NULL OR c.held_until < now())
          AND EXISTS (SELECT 1 FROM slack_outbox o WHERE o.channel = c.channel AND {_DUE_ROW})
        ORDER BY c.not_before, c.channel LIMIT $2
        FOR UPDATE OF c SKIP LOCKED)
    UPDATE slack_channels c SET held_by = $1, held_until = now() + $3::float8 {_SECONDS}
    FROM due WHERE c.channel = due.channel RETURNING c.channel"""
_HEADS = f"""
    SELECT h.* FROM unnest($1::text[]) AS ch(name) CROSS JOIN LATERAL (
        SELECT {_COLUMNS} FROM slack_outbox o WHERE o.channel = ch.name AND {_DUE_ROW}
        ORDER BY {head_order(_NEW_TOP_LEVEL, "order_at")} LIMIT 1) h"""
_INSERT = """
    INSERT INTO slack_outbox (channel, kind, incident_id, storm_id, dedupe_key, payload, state,
                              order_at, not_before, created)
    VALUES ($1, $2, $3, $4, $5, $6, $7, coalesce($8, now()), now(), now())
    ON CONFLICT (dedupe_key) DO NOTHING RETURNING id"""
_RELEASE = f"""UPDATE slack_channels SET held_by = NULL, held_until = NULL,
    not_before = greatest(not_before, now() + $3::float8 {_SECONDS}), last_error = $4
    WHERE channel = $1 AND held_by = $2"""


class PostgresSlack:
    if TYPE_CHECKING:  # provided by PostgresStore

        def _acquire(self) -> AbstractAsyncContextManager[asyncpg.Connection]: ...

        def transaction(self) -> AbstractAsyncContextManager[asyncpg.Connection]: ...

    async def slack_enqueue(
        self,
        messages: Sequence[NewSlackMessage],
        *,
        storm_after: int = STORM_AFTER,
        storm_window_s: float = STORM_WINDOW_S,
    ) -> int:
        check_enqueue(messages)
        if not messages:
            return 0
        channels = sorted({m.channel for m in messages})
        added = 0
        async with self.transaction() as conn:
            await conn.execute(
                "INSERT INTO slack_channels (channel, not_before)"
                " SELECT unnest($1::text[]), now() ORDER BY 1 ON CONFLICT DO NOTHING",
                channels,
            )
            await conn.execute(
                "SELECT 1 FROM slack_channels WHERE channel = ANY($1::text[])"
                " ORDER BY channel FOR UPDATE",
                channels,
            )
            for m in messages:
                args = [
                    m.channel, m.kind, m.incident_id, None, m.dedupe_key,
                    json.dumps(m.payload, separators=(",", ":"), ensure_ascii=False),
                    "pending", None if m.order_at is None else aware(m.order_at),
                ]  # fmt: skip
                if m.kind in ("post_card", "message"):  # a message of its own never folds
                    after = storm_after if m.kind == "post_card" else 0
                    added += await _queue_card(conn, args, after, storm_window_s)
                elif await conn.fetchval(_INSERT, *args) is not None:
                    added += 1
        return added

    async def slack_claim(
        self, owner: str, *, limit: int = 10, hold_s: float = 60.0
    ) -> list[SlackOutboxRow]:
        async with self.transaction() as conn:
            held = [r[0] for r in await conn.fetch(_CLAIM_CHANNELS, owner, limit, float(hold_s))]
            if not held:
                return []
            heads = [slack_row_from_row(r, TIME) for r in await conn.fetch(_HEADS, held)]
            idle = sorted(set(held) - {h.channel for h in heads})
            if idle:  # nothing due after all (raced with a defer): do not keep them
                await conn.execute(
                    "UPDATE slack_channels SET held_by = NULL, held_until = NULL"
                    " WHERE channel = ANY($1::text[]) AND held_by = $2",
                    idle,
                    owner,
                )
        return heads

    async def slack_mark_sent(
        self,
        row_id: int,
        owner: str,
        *,
        ts: str | None,
        posted_channel: str | None = None,
        pace_s: float = 0.0,
    ) -> None:
        async with self.transaction() as conn:
            row = await conn.fetchrow(
                "UPDATE slack_outbox SET state = 'sent', sent_at = now(), ts = $2,"
                " last_error = NULL WHERE id = $1 AND state = 'pending'"
                " RETURNING channel, kind, incident_id, storm_id",
                row_id,
                ts,
            )
            if row is None:
                return
            channel, kind, incident_id, storm_id = row
            if kind in ("post_card", "message") and ts is not None:
                await conn.execute(
                    "UPDATE slack_messages SET ts = $2, thread_ts = $2,"
                    " channel = coalesce($3, channel) WHERE incident_id = $1",
                    incident_id,
                    ts,
                    posted_channel,
                )
            elif kind == "storm" and ts is not None:
                await conn.execute(
                    "UPDATE slack_storms SET ts = coalesce(ts, $2),"
                    " posted_channel = coalesce(posted_channel, $3) WHERE id = $1",
                    storm_id,
                    ts,
                    posted_channel,
                )
            await conn.execute(_RELEASE, channel, owner, float(pace_s), None)

    async def slack_mark_done(
        self, row_id: int, owner: str, *, state: str, error: str | None = None
    ) -> None:
        check_done_state(state)
        async with self.transaction() as conn:
            channel = await conn.fetchval(
                "UPDATE slack_outbox SET state = $2, last_error = $3, attempts = attempts + 1"
                " WHERE id = $1 AND state = 'pending' RETURNING channel",
                row_id,
                state,
                error,
            )
            if channel is not None:
                await conn.execute(_RELEASE, channel, owner, 0.0, None)

    async def slack_defer(self, row_id: int, owner: str, delay_s: float, error: str) -> None:
        async with self.transaction() as conn:
            channel = await conn.fetchval(
                "UPDATE slack_outbox SET attempts = attempts + 1, last_error = $2,"
                f" not_before = now() + $3::float8 {_SECONDS}"
                " WHERE id = $1 AND state = 'pending' RETURNING channel",
                row_id,
                error,
                float(delay_s),
            )
            if channel is not None:
                await conn.execute(_RELEASE, channel, owner, float(delay_s), error)

    async def slack_release(self, owner: str) -> None:
        async with self._acquire() as conn:
            await conn.execute(
                "UPDATE slack_channels SET held_by = NULL, held_until = NULL WHERE held_by = $1",
                owner,
            )

    async def slack_card(self, incident_id: str) -> SlackCard | None:
        async with self._acquire() as conn:
            row = await conn.fetchrow(
                "SELECT m.incident_id, coalesce(s.posted_channel, m.channel),"
                " coalesce(m.ts, s.ts), coalesce(m.thread_ts, s.ts), m.storm_id"
                " FROM slack_messages m LEFT JOIN slack_storms s ON s.id = m.storm_id"
                " WHERE m.incident_id = $1",
                incident_id,
            )
        return None if row is None else SlackCard(*row)

    async def slack_storm(self, storm_id: int) -> SlackStorm | None:
        async with self._acquire() as conn:
            storm = await conn.fetchrow(
                "SELECT id, channel, posted_channel, ts FROM slack_storms WHERE id = $1", storm_id
            )
            members = await conn.fetch(
                "SELECT payload FROM slack_outbox WHERE storm_id = $1 AND kind = 'post_card'"
                " ORDER BY order_at, id",
                storm_id,
            )
        if storm is None:
            return None
        return slack_storm_from_rows(storm, members)

    async def slack_thread_count(self, incident_id: str) -> int:
        async with self._acquire() as conn:
            count: int = await conn.fetchval(
                "SELECT count(*) FROM slack_outbox WHERE incident_id = $1"
                " AND kind = 'thread_reply' AND state <> 'failed'",
                incident_id,
            )
        return count

    async def slack_next_due(self) -> datetime | None:
        async with self._acquire() as conn:
            due = await conn.fetchval(
                "SELECT min(greatest(o.not_before, c.not_before)) FROM slack_outbox o"
                " JOIN slack_channels c ON c.channel = o.channel WHERE o.state = 'pending'"
            )
        return opt_utc(due)

    async def slack_rows(
        self, *, channel: str | None = None, state: str | None = None, limit: int = 1000
    ) -> list[SlackOutboxRow]:
        check_limit(limit)
        async with self._acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM slack_outbox o"
                " WHERE ($1::text IS NULL OR channel = $1) AND ($2::text IS NULL OR state = $2)"
                " ORDER BY channel, order_at, id LIMIT $3",
                channel,
                state,
                limit,
            )
        return [slack_row_from_row(r, TIME) for r in rows]


async def _queue_card(conn: asyncpg.Connection, args: list[Any], after: int, window: float) -> int:
    """A new card: folded into the channel's storm when it storms (storage.slack_store).
    The caller holds the channel's row lock, so the count cannot change under us."""
    channel, key = args[0], args[4]
    if await conn.fetchval("SELECT 1 FROM slack_outbox WHERE dedupe_key = $1", key):
        return 0
    since = f"now() - $2::float8 {_SECONDS}"
    recent = await conn.fetchval(
        "SELECT count(*) FROM slack_outbox WHERE channel = $1 AND kind = 'post_card'"
        f" AND created >= {since}",
        channel,
        float(window),
    )
    storm_id = None
    if storm_folds(int(recent), after):
        storm_id = await conn.fetchval(
            f"SELECT id FROM slack_storms WHERE channel = $1 AND last_joined >= {since}"
            " ORDER BY id DESC LIMIT 1",
            channel,
            float(window),
        )
        if storm_id is None:
            storm_id = await conn.fetchval(
                "INSERT INTO slack_storms (channel, started, last_joined)"
                " VALUES ($1, now(), now()) RETURNING id",
                channel,
            )
        await conn.execute("UPDATE slack_storms SET last_joined = now() WHERE id = $1", storm_id)
        args = [*args[:3], storm_id, key, args[5], "folded", args[7]]
    row_id = await conn.fetchval(_INSERT, *args)
    if row_id is None:  # a concurrent transaction inserted the key first
        return 0
    await conn.execute(
        "INSERT INTO slack_messages (incident_id, channel, storm_id, created)"
        " VALUES ($1, $2, $3, now()) ON CONFLICT DO NOTHING",
        args[2],
        channel,
        storm_id,
    )
    if storm_id is not None:
        # One pending storm row per storm: it renders every member when it is sent.
        waiting = await conn.fetchval(
            "SELECT 1 FROM slack_outbox WHERE storm_id = $1 AND kind = 'storm'"
            " AND state = 'pending'",
            storm_id,
        )
        if waiting is None:
            storm_args = [channel, "storm", None, storm_id, f"storm:{storm_id}:{row_id}", "{}"]
            await conn.fetchval(_INSERT, *storm_args, "pending", args[7])
    return 1
