"""The production event bus: Redis Streams behind the ``EventBus`` protocol (DESIGN §1, §4).

One stream carries every event.  Each agent role is a consumer group; every replica runs
one reader per role in that group, so each event is handled once per role fleet-wide
(``agents.redis_reader``).  The store stays the record of truth:

* ``publish`` raises while Redis is away, so the outbox relay keeps the row unpublished
  and retries; nothing is lost while Redis is down.  It is idempotent per event id
  (``redis_support.PUBLISH_ONCE``): every replica's relay sweeps the same outbox, and
  after an outage they find the same backlog.
* Redis may come back from an older snapshot (its run id changed): entries handled since
  are handed out again as new, so a reader checks every entry against the store's
  claims until it has caught up after losing Redis; and what was published since the
  snapshot is gone, so every role is recovered as below.
* Redis may lose entries (it runs without persistence here).  ``reconcile`` republishes
  events the store says were published but a role never claimed, addressed to that role
  only; consumers skip ids they already claimed.  It runs by itself when a reader finds
  its group gone (Redis restarted empty while we ran), looking back from the last time
  that reader had caught up, once the recreated group has read what the new stream
  holds, and leaving out what is in it (``agents.redis_recovery``): the outbox backlog
  published after the restart is not copied, so no event reaches a role twice.  It is
  deliberately not periodic over a fixed window: events from before a role existed are
  "unclaimed" too, and replaying hours of history to a newly added role (old incident
  cards posted again) would be worse than the loss.  After Redis lost its data while orch
  was down, run ``reconcile(since)`` by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Iterable
from datetime import datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from agents.bus import Handler
from agents.clock import Clock, SystemClock
from agents.events import Event
from agents.lifecycle import cancel_all
from agents.redis_reader import RoleReader
from agents.redis_recovery import Recoverer
from agents.redis_support import (
    PUBLISH_ONCE,
    UNAVAILABLE,
    UNAVAILABLE_OR_GONE,
    Backoff,
    BusUnavailable,
    DeadLetterHook,
    StreamSettings,
    entry_fields,
    flat_fields,
    last_stream_id,
    make_client,
    new_consumer_name,
    published_key,
    stream_id_key,
)
from storage.base import Store

log = logging.getLogger(__name__)


class RedisStreamsBus:
    def __init__(
        self,
        url: str,
        store: Store,
        *,
        consumer_name: str | None = None,
        stream: str = "orch:events",
        maxlen: int = 100_000,
        claim_idle_ms: int = 30_000,
        max_deliveries: int = 5,
        block_ms: int = 1_000,
        read_count: int = 100,
        backoff_base: float = 0.1,
        backoff_cap: float = 5.0,
        dead_maxlen: int = 10_000,
        on_dead_letter: DeadLetterHook | None = None,
        reconcile_window: float = 3600.0,
        publish_dedupe_s: float = 300.0,
        clock: Clock | None = None,
    ) -> None:
        """``claim_idle_ms`` must exceed the slowest handler: an entry idle that long is
        taken over by another replica.  ``maxlen`` must exceed any backlog: trimmed
        pending entries are only recovered by ``reconcile``.  ``reconcile_window`` is how
        far back the automatic reconcile looks for a reader that lost its group before it
        had ever caught up.  ``publish_dedupe_s`` is how long a published event id is
        remembered, so that two relays (or a retry) publish it once: it must exceed the
        time between a relay reading a row and marking it published."""
        self._url = url
        self._store = store
        self._clock = clock or SystemClock()
        self._maxlen = maxlen
        self._on_dead_letter = on_dead_letter
        self._dedupe_ms = max(int(publish_dedupe_s * 1000), 1)
        self.settings = StreamSettings(
            stream=stream,
            dead_stream=f"{stream}:dead",
            consumer=consumer_name or new_consumer_name(),
            claim_idle_ms=claim_idle_ms,
            max_deliveries=max_deliveries,
            block_ms=block_ms,
            read_count=read_count,
            dead_maxlen=dead_maxlen,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
        )
        self._subs: dict[str, tuple[Handler, frozenset[str] | None]] = {}
        self._readers: dict[str, RoleReader] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._redis: aioredis.Redis | None = None
        self._publish_once: AsyncScript | None = None
        self._maintainer: asyncio.Task[None] | None = None
        self._recoverer = Recoverer(
            lambda: self._redis, self.settings, self._readers, self.reconcile, self._clock,
            window=timedelta(seconds=reconcile_window),
        )  # fmt: skip
        self._publish_backoff = Backoff(backoff_base, backoff_cap)
        self._publish_retry_at = 0.0
        self.published = 0
        self.publish_failures = 0
        self.publish_duplicates = 0
        self.republished = 0

    # -- EventBus ----------------------------------------------------------------------
    def subscribe(self, role: str, handler: Handler, types: Iterable[str] | None = None) -> None:
        # One group per role: a second handler under the same role in one process would
        # split that role's events with the first instead of seeing them all.
        if role in self._subs:
            raise ValueError(f"role {role!r} is already subscribed on this bus")
        self._subs[role] = (handler, frozenset(types) if types is not None else None)
        if self._redis is not None:
            self._spawn(role)  # its reader creates the group before reading

    async def start(self) -> None:
        if self._redis is not None:
            return
        self._redis = make_client(self._url, block_ms=self.settings.block_ms)
        self._publish_once = self._redis.register_script(PUBLISH_ONCE)
        for role in self._subs:
            reader = self._reader(role)
            try:  # groups exist before start returns, so the relay cannot outrun them
                await reader.ensure_group()
            except UNAVAILABLE as exc:
                log.warning("bus: Redis unavailable at start (%s); readers will retry", exc)
            self._spawn(role)
        with contextlib.suppress(*UNAVAILABLE):
            await self._recoverer.remember_server()
        self._maintainer = asyncio.create_task(self._recoverer.run(), name="bus:recovery")

    async def stop(self) -> None:
        """Stop reading and close the client.  An entry whose handler was interrupted
        stays pending and is reclaimed by another replica (or this one, restarted)."""
        # cancel_all: it polls Redis, and redis-py may swallow one cancellation.
        await cancel_all([self._maintainer] if self._maintainer else [])
        self._maintainer = None
        for reader in self._readers.values():
            reader.stopping = True  # a reader that lost its cancellation ends its loop
        await cancel_all(list(self._tasks.values()))
        self._tasks.clear()  # readers stay for stats(); start() makes fresh ones
        # Send queued acks, or another replica redoes their entries after claim_idle_ms
        # (finding them claimed).  Bounded: Redis may be the reason we are stopping.
        flushes = [r.flush_acks() for r in self._readers.values()]
        with contextlib.suppress(*UNAVAILABLE):
            await asyncio.wait_for(asyncio.gather(*flushes), 2.0)
        redis, self._redis = self._redis, None
        if redis is not None:
            await redis.aclose()

    async def publish(self, event: Event) -> None:
        """XADD with ``MAXLEN ~``.  Raises ``BusUnavailable`` while Redis is away; after a
        failure further calls fail at once until the backoff has passed, so a relay
        sweeping a large backlog does not hammer a server that is down."""
        publish_once = self._publish_once
        if self._redis is None or publish_once is None:
            raise BusUnavailable("the Redis bus is not started")
        now = self._clock.monotonic()
        if now < self._publish_retry_at:
            raise BusUnavailable(
                f"Redis unavailable; retrying in {self._publish_retry_at - now:.1f} s"
            )
        stream = self.settings.stream
        try:
            added = await publish_once(
                keys=[stream, published_key(stream, event.id)],
                args=[self._dedupe_ms, self._maxlen, *flat_fields(entry_fields(event))],
            )
        except UNAVAILABLE as exc:
            self.publish_failures += 1
            self._publish_retry_at = now + self._publish_backoff.next_delay()
            raise BusUnavailable(f"Redis unavailable: {exc}") from exc
        self._publish_backoff.reset()
        self._publish_retry_at = 0.0
        if added is None:
            self.publish_duplicates += 1  # another relay (or our lost reply) was first
        else:
            self.published += 1

    async def drain(self, poll: float = 0.005) -> None:
        """Wait until every entry in the stream now has been handled (or skipped, or
        dead-lettered) and acknowledged in every local role's group, by any replica."""
        if self._redis is None or not self._subs:
            return
        target: str | None = None
        while True:
            try:
                if target is None:
                    target = await last_stream_id(self._redis, self.settings.stream)
                    if target is None:
                        return
                groups = await self._groups()
                if all(_caught_up(groups.get(role), target) for role in self._subs):
                    return
            except UNAVAILABLE_OR_GONE:
                pass  # Redis away or the stream being recreated: keep waiting
            await asyncio.sleep(poll)

    async def ping(self) -> None:
        """Raise unless Redis answers (readiness)."""
        if self._redis is None:
            raise ConnectionError("the Redis bus is not started")
        await self._redis.ping()

    def stats(self) -> dict[str, dict[str, int]]:
        return {role: r.stats() for role, r in self._readers.items()}

    def subscriptions(self) -> dict[str, frozenset[str] | None]:
        """Each local role and the event types it takes (None: all): what a role is
        expected to claim (``store.unclaimed_events``)."""
        return {role: types for role, (_handler, types) in self._subs.items()}

    async def backlog(self) -> tuple[dict[str, dict[str, int]], int]:
        """What Redis holds, across all replicas (telemetry): per local role, ``lag``
        (entries not yet delivered to its group; Redis 7+) and ``pending`` (delivered, not
        acknowledged); and how many entries the dead-letter stream keeps."""
        if self._redis is None:
            raise BusUnavailable("the Redis bus is not started")
        groups = await self._groups()
        roles = {
            role: {"lag": int(g.get("lag") or 0), "pending": int(g.get("pending") or 0)}
            for role, g in groups.items()
            if role in self._subs
        }
        return roles, int(await self._redis.xlen(self.settings.dead_stream))

    # -- reconciliation ----------------------------------------------------------------
    async def reconcile(
        self,
        since: datetime,
        *,
        published_before: datetime | None = None,
        roles: Iterable[str] | None = None,
        limit: int = 10_000,
        in_stream: Collection[str] = (),
    ) -> int:
        """Republish events (ts >= ``since``) that a local role has not claimed though the
        relay published them (before ``published_before``), each once, addressed to the
        roles that lack it, except those whose id is in ``in_stream`` (still on their way
        to the role).  Returns how many were republished."""
        if self._redis is None:
            raise BusUnavailable("the Redis bus is not started")
        wanted: dict[str, tuple[Event, set[str]]] = {}
        for role in roles if roles is not None else list(self._subs):
            types = self._subs[role][1]
            events = await self._store.unclaimed_events(
                role,
                since,
                types=sorted(types) if types is not None else None,
                published_before=published_before,
                limit=limit,
            )
            for event in events:
                if event.id not in in_stream:
                    wanted.setdefault(event.id, (event, set()))[1].add(role)
        if not wanted:
            return 0
        ordered = sorted(wanted.values(), key=lambda item: item[0].ts)
        async with self._redis.pipeline(transaction=False) as pipe:
            for event, to in ordered:
                fields = entry_fields(event, to)
                pipe.xadd(self.settings.stream, fields, maxlen=self._maxlen, approximate=True)
            await pipe.execute()
        self.republished += len(ordered)
        log.warning("bus: republished %d events Redis had lost", len(ordered))
        return len(ordered)

    # -- plumbing ----------------------------------------------------------------------
    async def _groups(self) -> dict[str, dict[str, Any]]:
        assert self._redis is not None
        return {g["name"]: g for g in await self._redis.xinfo_groups(self.settings.stream)}

    def _reader(self, role: str) -> RoleReader:
        assert self._redis is not None
        handler, types = self._subs[role]
        reader = RoleReader(
            self._redis,
            self.settings,
            self._store,
            self._clock,
            role,
            handler,
            types,
            on_dead_letter=self._on_dead_letter,
            on_group_lost=self._recoverer.group_lost,
            on_reconnected=self._recoverer.reconnected,
        )
        self._readers[role] = reader
        return reader

    def _spawn(self, role: str) -> None:
        reader = self._readers.get(role) or self._reader(role)
        reader.stopping = False  # readers outlive a stop(); a new start() runs them again
        self._tasks[role] = asyncio.create_task(reader.run(), name=f"bus:{role}")


def _caught_up(group: dict[str, Any] | None, target: str) -> bool:
    return (
        group is not None
        and int(group["pending"]) == 0
        and stream_id_key(str(group["last-delivered-id"])) >= stream_id_key(target)
    )
