"""The SQLite side of ``storage.slack_store``: the Slack outbox of the embedded store.

A mixin of ``SQLiteStore``.  Every write runs in one ``_transaction`` (BEGIN IMMEDIATE:
SQLite's single writer), so the storm count and the insert it decides, or choosing a
channel and holding it, cannot interleave with another writer, even another process on
the same file.  "Now" is the store's injected clock (tests move it with a FakeClock).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aiosqlite

from agents.clock import Clock
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
from storage.sqlite_codec import TIME, opt_from_us, to_us

_COLUMNS = (
    "id, channel, kind, dedupe_key, payload, incident_id, storm_id, state, attempts,"
    " order_us, not_before_us, created_us, sent_at_us, ts, last_error"
)
_NEW_TOP_LEVEL = """(o.kind = 'storm' AND NOT EXISTS (
        SELECT 1 FROM slack_storms s WHERE s.id = o.storm_id AND s.ts IS NOT NULL))
    OR (o.kind = 'post_card'
    AND json_extract(o.payload, '$.thread_of') IS NULL
    AND json_extract(o.payload, '$.message.thread_ts') IS NULL)"""
_DUE_ROW = f"o.state = 'pending' AND o.not_before_us <= :now AND {READY_SQL}"
_DUE_CHANNELS = f"""
    SELECT c.channel FROM slack_channels c
    WHERE c.not_before_us <= :now AND (c.held_by IS NULL OR c.held_until_us < :now)
      AND EXISTS (SELECT 1 FROM slack_outbox o WHERE o.channel = c.channel AND {_DUE_ROW})
    ORDER BY c.not_before_us, c.channel LIMIT :limit"""
_HEAD = f"""SELECT {_COLUMNS} FROM slack_outbox o WHERE o.channel = :channel AND {_DUE_ROW}
    ORDER BY {head_order(_NEW_TOP_LEVEL, "order_us")} LIMIT 1"""
_INSERT = """
    INSERT INTO slack_outbox (channel, kind, incident_id, storm_id, dedupe_key, payload, state,
                              order_us, not_before_us, created_us)
    VALUES (:channel, :kind, :incident_id, :storm_id, :key, :payload, :state,
            :order, :now, :now)
    ON CONFLICT (dedupe_key) DO NOTHING RETURNING id"""
_RELEASE = """UPDATE slack_channels SET held_by = NULL, held_until_us = NULL,
    not_before_us = max(not_before_us, :until), last_error = :error
    WHERE channel = :channel AND held_by = :owner"""


class SQLiteSlack:
    if TYPE_CHECKING:  # provided by SQLiteStore
        _clock: Clock

        def _locked(self) -> AbstractAsyncContextManager[aiosqlite.Connection]: ...

        def _transaction(self) -> AbstractAsyncContextManager[aiosqlite.Connection]: ...

    async def slack_enqueue(
        self,
        messages: Sequence[NewSlackMessage],
        *,
        storm_after: int = STORM_AFTER,
        storm_window_s: float = STORM_WINDOW_S,
    ) -> int:
        check_enqueue(messages)
        now = self._slack_now()
        added = 0
        async with self._transaction() as tx:
            for m in messages:
                params: dict[str, Any] = {
                    "channel": m.channel, "kind": m.kind, "incident_id": m.incident_id,
                    "storm_id": None, "key": m.dedupe_key, "state": "pending", "now": now,
                    "payload": json.dumps(m.payload, separators=(",", ":"), ensure_ascii=False),
                    "order": now if m.order_at is None else to_us(m.order_at),
                }  # fmt: skip
                await tx.execute(
                    "INSERT INTO slack_channels (channel, not_before_us) VALUES (?, ?)"
                    " ON CONFLICT DO NOTHING",
                    (m.channel, now),
                )
                if m.kind in ("post_card", "message"):  # a message of its own never folds
                    after = storm_after if m.kind == "post_card" else 0
                    added += await self._queue_card(tx, params, after, storm_window_s)
                else:
                    added += len(list(await tx.execute_fetchall(_INSERT, params)))
        return added

    async def _queue_card(
        self, tx: aiosqlite.Connection, params: dict[str, Any], after: int, window_s: float
    ) -> int:
        if await _one(tx, "SELECT 1 FROM slack_outbox WHERE dedupe_key = :key", params):
            return 0
        since = params["now"] - _us(window_s)
        recent = await _one(
            tx,
            "SELECT count(*) FROM slack_outbox WHERE channel = :channel"
            " AND kind = 'post_card' AND created_us >= :since",
            {**params, "since": since},
        )
        if storm_folds(int(recent[0]) if recent else 0, after):
            storm = await _one(
                tx,
                "SELECT id FROM slack_storms WHERE channel = :channel AND last_joined_us >= :since"
                " ORDER BY id DESC LIMIT 1",
                {**params, "since": since},
            )
            if storm is None:
                storm = await _one(
                    tx,
                    "INSERT INTO slack_storms (channel, started_us, last_joined_us)"
                    " VALUES (:channel, :now, :now) RETURNING id",
                    params,
                )
            assert storm is not None
            params = {**params, "storm_id": storm[0], "state": "folded"}
            await tx.execute(
                "UPDATE slack_storms SET last_joined_us = :now WHERE id = :storm_id", params
            )
        row = await _one(tx, _INSERT, params)
        assert row is not None  # the key was checked above, under the write lock
        await tx.execute(
            "INSERT INTO slack_messages (incident_id, channel, storm_id, created_us)"
            " VALUES (:incident_id, :channel, :storm_id, :now) ON CONFLICT DO NOTHING",
            params,
        )
        if params["storm_id"] is not None:
            # One pending storm row per storm: it renders every member when it is sent.
            waiting = await _one(
                tx,
                "SELECT 1 FROM slack_outbox WHERE storm_id = :storm_id AND kind = 'storm'"
                " AND state = 'pending'",
                params,
            )
            if waiting is None:
                storm_row = {**params, "kind": "storm", "incident_id": None, "payload": "{}"}
                storm_row |= {"state": "pending", "key": f"storm:{params['storm_id']}:{row[0]}"}
                await tx.execute_fetchall(_INSERT, storm_row)  # RETURNING: read it out
        return 1

    async def slack_claim(
        self, owner: str, *, limit: int = 10, hold_s: float = 60.0
    ) -> list[SlackOutboxRow]:
        now = self._slack_now()
        claimed: list[SlackOutboxRow] = []
        async with self._transaction() as tx:
            channels = await tx.execute_fetchall(_DUE_CHANNELS, {"now": now, "limit": limit})
            for (channel,) in channels:
                head = await _one(tx, _HEAD, {"channel": channel, "now": now})
                if head is None:
                    continue
                await tx.execute(
                    "UPDATE slack_channels SET held_by = ?, held_until_us = ? WHERE channel = ?",
                    (owner, now + _us(hold_s), channel),
                )
                claimed.append(slack_row_from_row(head, TIME))
        return claimed

    async def slack_mark_sent(
        self,
        row_id: int,
        owner: str,
        *,
        ts: str | None,
        posted_channel: str | None = None,
        pace_s: float = 0.0,
    ) -> None:
        now = self._slack_now()
        async with self._transaction() as tx:
            row = await _one(tx, f"SELECT {_COLUMNS} FROM slack_outbox WHERE id = ?", (row_id,))
            if row is None:
                return
            sent = slack_row_from_row(row, TIME)
            p = {"id": row_id, "ts": ts, "now": now, "posted": posted_channel}
            await tx.execute(
                "UPDATE slack_outbox SET state = 'sent', sent_at_us = :now, ts = :ts,"
                " last_error = NULL WHERE id = :id AND state = 'pending'",
                p,
            )
            if sent.kind in ("post_card", "message") and ts is not None:
                await tx.execute(
                    "UPDATE slack_messages SET ts = :ts, thread_ts = :ts,"
                    " channel = coalesce(:posted, channel) WHERE incident_id = :incident",
                    {**p, "incident": sent.incident_id},
                )
            elif sent.kind == "storm" and ts is not None:
                await tx.execute(
                    "UPDATE slack_storms SET ts = coalesce(ts, :ts),"
                    " posted_channel = coalesce(posted_channel, :posted) WHERE id = :storm",
                    {**p, "storm": sent.storm_id},
                )
            until = now + _us(pace_s)
            params = {"channel": sent.channel, "owner": owner, "until": until, "error": None}
            await tx.execute(_RELEASE, params)

    async def slack_mark_done(
        self, row_id: int, owner: str, *, state: str, error: str | None = None
    ) -> None:
        check_done_state(state)
        now = self._slack_now()
        async with self._transaction() as tx:
            row = await _one(
                tx,
                "UPDATE slack_outbox SET state = ?, last_error = ?, attempts = attempts + 1"
                " WHERE id = ? AND state = 'pending' RETURNING channel",
                (state, error, row_id),
            )
            if row is not None:
                params = {"channel": row[0], "owner": owner, "until": now, "error": None}
                await tx.execute(_RELEASE, params)

    async def slack_defer(self, row_id: int, owner: str, delay_s: float, error: str) -> None:
        until = self._slack_now() + _us(delay_s)
        async with self._transaction() as tx:
            row = await _one(
                tx,
                "UPDATE slack_outbox SET attempts = attempts + 1, last_error = ?,"
                " not_before_us = ? WHERE id = ? AND state = 'pending' RETURNING channel",
                (error, until, row_id),
            )
            if row is not None:
                params = {"channel": row[0], "owner": owner, "until": until, "error": error}
                await tx.execute(_RELEASE, params)

    async def slack_release(self, owner: str) -> None:
        async with self._transaction() as tx:
            await tx.execute(
                "UPDATE slack_channels SET held_by = NULL, held_until_us = NULL WHERE held_by = ?",
                (owner,),
            )

    async def slack_card(self, incident_id: str) -> SlackCard | None:
        rows = await self._slack_read(
            "SELECT m.incident_id, coalesce(s.posted_channel, m.channel),"
            " coalesce(m.ts, s.ts), coalesce(m.thread_ts, s.ts), m.storm_id"
            " FROM slack_messages m LEFT JOIN slack_storms s ON s.id = m.storm_id"
            " WHERE m.incident_id = ?",
            (incident_id,),
        )
        return next((SlackCard(*r) for r in rows), None)

    async def slack_storm(self, storm_id: int) -> SlackStorm | None:
        storms = list(
            await self._slack_read(
                "SELECT id, channel, posted_channel, ts FROM slack_storms WHERE id = ?",
                (storm_id,),
            )
        )
        if not storms:
            return None
        members = await self._slack_read(
            "SELECT payload FROM slack_outbox WHERE storm_id = ? AND kind = 'post_card'"
            " ORDER BY order_us, id",
            (storm_id,),
        )
        return slack_storm_from_rows(storms[0], members)

    async def slack_thread_count(self, incident_id: str) -> int:
        rows = await self._slack_read(
            "SELECT count(*) FROM slack_outbox WHERE incident_id = ?"
            " AND kind = 'thread_reply' AND state <> 'failed'",
            (incident_id,),
        )
        return int(next(iter(rows))[0])

    async def slack_next_due(self) -> datetime | None:
        rows = await self._slack_read(
            "SELECT min(max(o.not_before_us, c.not_before_us)) FROM slack_outbox o"
            " JOIN slack_channels c ON c.channel = o.channel WHERE o.state = 'pending'",
            (),
        )
        return opt_from_us(next(iter(rows))[0])

    async def slack_rows(
        self, *, channel: str | None = None, state: str | None = None, limit: int = 1000
    ) -> list[SlackOutboxRow]:
        check_limit(limit)
        rows = await self._slack_read(
            f"SELECT {_COLUMNS} FROM slack_outbox WHERE (:channel IS NULL OR channel = :channel)"
            " AND (:state IS NULL OR state = :state) ORDER BY channel, order_us, id LIMIT :limit",
            {"channel": channel, "state": state, "limit": limit},
        )
        return [slack_row_from_row(r, TIME) for r in rows]

    async def _slack_read(self, sql: str, params: Any) -> Iterable[sqlite3.Row]:
        async with self._locked() as db:
            return await db.execute_fetchall(sql, params)

    def _slack_now(self) -> int:
        return to_us(self._clock.now())


async def _one(tx: aiosqlite.Connection, sql: str, params: Any) -> sqlite3.Row | None:
    return next(iter(await tx.execute_fetchall(sql, params)), None)


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)
