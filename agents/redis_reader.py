"""One agent role's consumer of the Redis event stream, in one process.

Every replica runs a ``RoleReader`` per role; all of them share the role's consumer group,
so Redis hands each entry to one of them.  The reader acknowledges an entry only after the
handler's effects and the role's claim (``store.claim_events``, one transaction per read
batch) are stored; a failed entry
stays pending and is retried only when it has been idle ``claim_idle_ms`` (XAUTOCLAIM, by
whichever replica gets there first), so a failing handler is never retried in a hot loop.
After ``max_deliveries`` deliveries without success it goes to the dead-letter stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from agents.bus import Handler
from agents.clock import Clock
from agents.events import Event
from agents.redis_pending import dead_letter, delivery_counts, own_pending, refund
from agents.redis_support import (
    UNAVAILABLE,
    Backoff,
    DeadLetterHook,
    Entry,
    RecentIds,
    StreamSettings,
    is_busygroup,
    is_nogroup,
    parse_entries,
)
from storage.base import Store

log = logging.getLogger(__name__)


class StoreUnavailable(Exception):
    """The store failed during bookkeeping (not the handler): back off, refund delivery."""


class RoleReader:
    def __init__(
        self,
        redis: aioredis.Redis,
        settings: StreamSettings,
        store: Store,
        clock: Clock,
        role: str,
        handler: Handler,
        types: frozenset[str] | None,
        *,
        on_dead_letter: DeadLetterHook | None,
        on_group_lost: Callable[[str, datetime | None], None],
        on_reconnected: Callable[[str], None] = lambda _role: None,
    ) -> None:
        self.redis = redis
        self.cfg = settings
        self.store = store
        self.clock = clock
        self.role = role
        self.handler = handler
        self.types = types
        self.on_dead_letter = on_dead_letter
        self.on_group_lost = on_group_lost
        self.on_reconnected = on_reconnected
        # "$" the first time: a role sees what is published once its group exists, not
        # the stream's history.  "0" after Redis lost the group: the stream then holds only
        # entries written since the loss, all of which this role must see.
        self.create_at = "$"
        # When this reader last had everything there was (a read returned less than a
        # full batch).  What Redis can lose is newer, or pending: at most max_deliveries
        # * claim_idle_ms old.  The margin also covers an event's ts preceding its publish.
        self.caught_up_at: datetime | None = None
        self.lookback = timedelta(
            seconds=settings.max_deliveries * settings.claim_idle_ms / 1000 + 60
        )
        self.group_ready = False
        # When this reader created its group at "$" (the role is new): events from before
        # were never this role's, so recovery never looks back past it.
        self.born_at: datetime | None = None
        # After losing Redis, and when starting (this process cannot know how Redis came
        # back before), every entry is checked against the store's claims until a read
        # finds the reader caught up: a Redis restarted from an older snapshot hands out
        # again, as new, entries that were handled after that snapshot.
        self.suspicious = True
        self.seen = RecentIds()  # claimed here recently: skips a store round trip
        self.stopping = False  # set by the bus on stop(), checked on every turn
        self._acks: list[str] = []
        names = "delivered duplicates failures skipped dead_letters reclaimed reclaim_cycles"
        self.counts = dict.fromkeys(names.split(), 0)
        self.queued = 0

    def stats(self) -> dict[str, int]:
        return {**self.counts, "queued": self.queued}

    async def ensure_group(self) -> None:
        try:
            at = self.clock.now()
            await self.redis.xgroup_create(
                self.cfg.stream, self.role, id=self.create_at, mkstream=True
            )
            if self.create_at == "$" and self.born_at is None:
                self.born_at = at
            if self.create_at == "0":
                log.warning("bus: recreated consumer group %s (Redis had lost it)", self.role)
        except ResponseError as exc:
            if not is_busygroup(exc):  # another replica made it first: fine
                raise
        self.group_ready = True

    async def run(self) -> None:
        backoff = Backoff(self.cfg.backoff_base, self.cfg.backoff_cap)
        reclaim_every = max(self.cfg.claim_idle_ms / 2000, 0.01)
        next_reclaim = self.clock.monotonic()  # at once: pick up a crashed predecessor's
        down_since: float | None = None
        while not self.stopping:
            try:
                if not self.group_ready:
                    await self.ensure_group()
                if down_since is not None:
                    await self.reread_own()
                if self.clock.monotonic() >= next_reclaim:
                    await self.reclaim()
                    next_reclaim = self.clock.monotonic() + reclaim_every
                await self._read_new()
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:
                if not is_nogroup(exc):
                    log.exception("bus: role %s: unexpected Redis error", self.role)
                else:
                    log.warning("bus: consumer group %s is gone (Redis restarted?)", self.role)
                    self.group_ready, self.create_at, self.suspicious = False, "0", True
                    at = self.caught_up_at
                    self.on_group_lost(self.role, at - self.lookback if at else None)
                await self.clock.sleep(backoff.next_delay())
                continue
            except UNAVAILABLE as exc:
                self.suspicious = True
                if down_since is None:
                    down_since = self.clock.monotonic()
                    log.warning("bus: role %s lost Redis (%s); reconnecting", self.role, exc)
                await self.clock.sleep(backoff.next_delay())
                continue
            except Exception:  # the store is away, or a bug: never spin
                log.exception("bus: role %s reader failed; backing off", self.role)
                await self.clock.sleep(backoff.next_delay())
                continue
            if down_since is not None:
                gone = self.clock.monotonic() - down_since
                log.info("bus: role %s reconnected to Redis after %.1f s", self.role, gone)
                down_since = None
                self.on_reconnected(self.role)  # the bus checks whether Redis restarted
            backoff.reset()

    async def reread_own(self) -> None:
        """After losing Redis, take back at once what was delivered to this consumer and
        not acknowledged: a hung Redis runs the read it was sent once it wakes, and hands
        out entries whose reply nobody receives any more; one restored from a snapshot
        brings back entries delivered then.  A reclaim would wait ``claim_idle_ms``."""
        after = "0-0"
        for _ in range(100):  # bounded; reclaim finds the rest
            entries = await own_pending(self.redis, self.cfg, self.role, after)
            if not entries:
                return
            await self.handle(
                entries, await delivery_counts(self.redis, self.cfg, self.role, entries)
            )
            after = entries[-1].stream_id

    async def _read_new(self) -> None:
        # Acknowledgements of the last batch ride in one round trip with the next read:
        # at 1,000 events/s per role that halves the reader's Redis round trips.
        acks, self._acks = self._acks, []
        asked_at = self.clock.now()
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                if acks:
                    pipe.xack(self.cfg.stream, self.role, *acks)
                pipe.xreadgroup(
                    self.role,
                    self.cfg.consumer,
                    {self.cfg.stream: ">"},
                    count=self.cfg.read_count,
                    block=self.cfg.block_ms,
                )
                reply = (await pipe.execute())[-1]
        except BaseException:
            self._acks[:0] = acks  # unsent: try again (if lost, reclaim finds them claimed)
            raise
        # RESP2 shape: [[stream, [(id, fields), ...]]]; one stream here.
        replies: list[Any] = list(reply or ())
        caught_up = sum(len(raw or ()) for _stream, raw in replies) < self.cfg.read_count
        if caught_up:
            self.caught_up_at = asked_at
        for _stream, raw in replies:
            entries = parse_entries(raw)
            await self.handle(entries, dict.fromkeys((e.stream_id for e in entries), 1))
        if caught_up:
            self.suspicious = False  # what follows was published since: first deliveries

    async def reclaim(self) -> None:
        """Take over entries idle longer than ``claim_idle_ms``: a crashed or stopped
        replica's, or ones whose handler failed (which is how failures are retried)."""
        self.counts["reclaim_cycles"] += 1
        start = "0-0"
        for _ in range(100):  # bounded work per cycle; the cursor resumes next cycle anyway
            next_start, raw, deleted = await self.redis.xautoclaim(
                self.cfg.stream,
                self.role,
                self.cfg.consumer,
                self.cfg.claim_idle_ms,
                start,
                count=self.cfg.read_count,
            )
            if deleted:  # MAXLEN is below the backlog: only reconcile() brings them back
                log.error(
                    "bus: %d pending entries of %s were trimmed before being handled; raise"
                    " maxlen and run reconcile() to republish them", len(deleted), self.role,
                )  # fmt: skip
            entries = parse_entries(raw)
            if entries:
                self.counts["reclaimed"] += len(entries)
                await self.handle(
                    entries, await delivery_counts(self.redis, self.cfg, self.role, entries)
                )
            if next_start in ("0-0", "0"):
                return
            start = next_start

    def _addressed(self, entry: Entry) -> bool:
        if entry.to is not None and self.role not in entry.to:
            return False  # a reconciler copy meant for other roles
        return self.types is None or entry.type in self.types

    async def handle(self, entries: list[Entry], deliveries: dict[str, int]) -> None:
        """Run the handler on each entry of a batch in order, then claim the successes in
        one store transaction, then acknowledge them (with the next read)."""
        mine = [e for e in entries if self._addressed(e)]
        self._acks.extend(e.stream_id for e in entries if not self._addressed(e))
        # Ask the store only about entries that may have been handled already: delivered
        # before (a reclaim), republished by the reconciler, or read since Redis came back
        # (``suspicious``).  Other first deliveries are not duplicates: publishing is
        # idempotent per event id (``redis_support.PUBLISH_ONCE``), so this keeps the
        # store off the hot path.
        suspects = [
            e.event_id
            for e in mine
            if (deliveries[e.stream_id] > 1 or e.to is not None or self.suspicious)
            and e.event_id not in self.seen
        ]
        try:
            done_before = await self.store.claimed_ids(self.role, suspects) if suspects else set()
        except Exception as exc:
            await self._refund(mine, deliveries)
            raise StoreUnavailable(f"claimed_ids failed: {exc!r}") from exc
        tried: set[str] = set()  # a second copy in one batch is never run (nor retried)
        done: list[Entry] = []
        self.queued = len(mine)  # read, not finished (stats)
        try:
            for entry in mine:
                eid = entry.event_id
                if eid in self.seen or eid in done_before or eid in tried:
                    self.counts["skipped"] += 1  # a redelivery or a copy: done already
                    self._ack(entry)
                elif await self._one(entry, deliveries[entry.stream_id]):
                    done.append(entry)
                tried.add(eid)
                self.queued -= 1
        except asyncio.CancelledError:
            # Stopping: keep the work of the handlers that finished (bounded wait).
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._claim(done, deliveries), 2.0)
            raise
        finally:
            self.queued = 0
        await self._claim(done, deliveries)

    async def _one(self, entry: Entry, deliveries: int) -> bool:
        """Run the handler; True when it succeeded (the entry then needs its claim)."""
        try:
            event = entry.event()
        except Exception as exc:
            await self._dead_letter(entry, None, f"undecodable entry: {exc!r}")
            return False
        if deliveries > self.cfg.max_deliveries:
            # Delivered that often without an ack: consumers died on it (a poison entry).
            await self._dead_letter(entry, event, f"delivered {deliveries} times without ack")
            return False
        try:
            await self.handler(event)
        except asyncio.CancelledError:
            raise  # stopped mid-handler: stays pending, another replica reclaims it
        except Exception as exc:
            self.counts["failures"] += 1
            log.warning(
                "bus: %s failed on %s %s (delivery %d/%d)",
                self.role, event.type, event.id, deliveries, self.cfg.max_deliveries,
                exc_info=True,
            )  # fmt: skip
            if deliveries >= self.cfg.max_deliveries:
                await self._dead_letter(entry, event, repr(exc))
            return False  # left pending: retried by reclaim once idle, never at once
        return True

    async def _claim(self, done: list[Entry], deliveries: dict[str, int]) -> None:
        """One transaction for the batch's successes, then their acks (never before)."""
        if not done:
            return
        try:
            fresh = await self.store.claim_events(self.role, [e.event_id for e in done])
        except Exception as exc:
            await self._refund(done, deliveries)
            raise StoreUnavailable(f"claim_events failed: {exc!r}") from exc
        for entry in done:
            self.seen.add(entry.event_id)
            self.counts["delivered" if entry.event_id in fresh else "duplicates"] += 1
            self._ack(entry)

    def _ack(self, entry: Entry) -> None:
        """Queue the XACK; it goes out with the next read (``_read_new``) or at stop.
        Everything the ack stands for (effects, claim) is stored already."""
        self._acks.append(entry.stream_id)

    async def flush_acks(self) -> None:
        acks, self._acks = self._acks, []
        if acks:
            await self.redis.xack(self.cfg.stream, self.role, *acks)

    async def _refund(self, entries: list[Entry], deliveries: dict[str, int]) -> None:
        await refund(self.redis, self.cfg, self.role, entries, deliveries)

    async def _dead_letter(self, entry: Entry, event: Event | None, error: str) -> None:
        moved = await dead_letter(
            self.redis, self.cfg, self.store, self.clock, self.role, entry, event, error,
            self.on_dead_letter,
        )  # fmt: skip
        if moved:
            self.counts["dead_letters"] += 1
            self.seen.add(entry.event_id)
