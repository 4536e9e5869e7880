"""Pending entries: their delivery counts, refunding a delivery, the dead letters.

Apart from the reader so each module stays one job: the reader's loop decides *when*;
these functions decide *how*, in the order that keeps the store and Redis consistent.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from agents.clock import Clock
from agents.events import Event
from agents.redis_support import (
    UNAVAILABLE,
    DeadLetterHook,
    Entry,
    StreamSettings,
    parse_entries,
)
from storage.base import Store

log = logging.getLogger(__name__)


async def delivery_counts(
    redis: aioredis.Redis, cfg: StreamSettings, role: str, entries: list[Entry]
) -> dict[str, int]:
    """How often each (just reclaimed) entry has been delivered, this time included."""
    async with redis.pipeline(transaction=False) as pipe:
        for e in entries:
            pipe.xpending_range(cfg.stream, role, e.stream_id, e.stream_id, 1)
        replies = await pipe.execute()
    return {
        e.stream_id: int(rows[0]["times_delivered"]) if rows else 1
        for e, rows in zip(entries, replies, strict=True)
    }


async def own_pending(
    redis: aioredis.Redis, cfg: StreamSettings, role: str, after: str
) -> list[Entry]:
    """This consumer's own pending entries after stream id ``after`` (XREADGROUP with an
    id instead of ">": its history, not new entries)."""
    reply = await redis.xreadgroup(role, cfg.consumer, {cfg.stream: after}, count=cfg.read_count)
    streams: list[Any] = list(reply or ())  # RESP2: [[stream, [(id, fields), ...]]]
    return [e for _stream, raw in streams for e in parse_entries(raw)]


async def refund(
    redis: aioredis.Redis,
    cfg: StreamSettings,
    role: str,
    entries: list[Entry],
    deliveries: dict[str, int],
) -> None:
    """A store outage is not the entries' fault: give back the delivery each one cost,
    so a long store outage does not dead-letter good events.  XCLAIM also resets the idle
    time, so an entry waits a full ``claim_idle_ms`` before it is tried again."""
    try:
        for e in entries:
            await redis.xclaim(
                cfg.stream,
                role,
                cfg.consumer,
                0,
                [e.stream_id],
                retrycount=max(deliveries[e.stream_id] - 1, 0),
                justid=True,
            )
    except UNAVAILABLE:
        pass  # Redis is away too; the count stays, which is only conservative


async def dead_letter(
    redis: aioredis.Redis,
    cfg: StreamSettings,
    store: Store,
    clock: Clock,
    role: str,
    entry: Entry,
    event: Event | None,
    error: str,
    hook: DeadLetterHook | None,
) -> bool:
    """Tell users (``hook``; not for an undecodable entry, which has no event), move the
    entry (XADD to the dead-letter stream + XACK, atomically), then record the role as
    done with it (a claim, so the reconciler never replays a poison event).

    Returns False when the hook or the move failed: the entry stays pending and the next
    reclaim cycle retries the dead-lettering (the hook may then run again, so it should
    be idempotent on ``(role, event.id)``), never the handler.
    """
    eid = entry.event_id
    log.error("bus: dead-lettering %s %s for %s: %s", entry.type, eid, role, error)
    fields: dict[FieldT, EncodableT] = {
        "id": eid, "type": entry.type, "event": entry.body, "role": role,
        "error": error[:2000], "stream_id": entry.stream_id, "ts": clock.now().isoformat(),
    }  # fmt: skip
    try:
        if event is not None and hook is not None:
            await hook(role, event, error)
        async with redis.pipeline(transaction=True) as pipe:
            pipe.xadd(cfg.dead_stream, fields, maxlen=cfg.dead_maxlen, approximate=True)
            pipe.xack(cfg.stream, role, entry.stream_id)
            await pipe.execute()
    except Exception:
        log.exception("bus: dead-lettering %s for %s failed; retried next cycle", eid, role)
        return False
    if eid:
        try:
            await store.claim_event(role, eid)
        except Exception:  # rare: the reconciler may then replay it once more
            log.exception("bus: could not record dead-lettered %s for %s", eid, role)
    return True
