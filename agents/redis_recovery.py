"""Recovering the events Redis lost, without handing a role copies of events it is about
to get anyway (``Recoverer``, the Redis bus's maintenance task).

Redis loses events in two ways: it comes back empty (a reader finds its consumer group
gone), or it comes back from an older snapshot (its groups exist; only its run id, from
``INFO server``, tells it is another run).  Either way every affected role is recovered.

When Redis comes back empty the outbox relays publish their backlog (everything stored
during the outage) into the new stream, and the readers recreate their groups at "0", so
those events arrive by themselves.  What is really lost is what the old stream held and
the role had not claimed.  Republishing "everything unclaimed" at once would copy the
backlog too, and two replicas could then run one event's original and its copy at the
same moment, each before the other's claim is stored.  So, for one role at a time
fleet-wide (a short Redis lock), recovery

1. waits until the group has worked through the stream as it is now (its originals are
   then claimed),
2. asks the store for the events the role has still not claimed,
3. leaves out those that sit in the stream beyond that point (published meanwhile: the
   group will read them),

and republishes the rest.  No clock is compared: a replica whose clock is off cannot make
recovery skip a lost event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import redis.asyncio as aioredis

from agents.clock import Clock
from agents.redis_reader import RoleReader
from agents.redis_support import (
    UNAVAILABLE,
    Backoff,
    StreamSettings,
    last_stream_id,
    stream_id_key,
)

log = logging.getLogger(__name__)

# Take the lock when free or already ours (a release lost to a dropped connection must
# not lock our own retry out until it expires).
_ACQUIRE = """
local holder = redis.call('get', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
# Delete the lock only while it is still ours (it may have expired and been retaken).
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class RoleLock:
    """One replica at a time recovers a role; the others wait, then find nothing left.
    ``holder`` names the replica (its consumer name); the lock expires after ``ttl_s``
    should that replica die."""

    def __init__(
        self,
        redis: aioredis.Redis,
        key: str,
        holder: str,
        ttl_s: float,
        clock: Clock,
        poll: float = 0.05,
    ) -> None:
        self._redis = redis
        self._key = key
        self._token = holder
        self._ttl_ms = max(int(ttl_s * 1000), 1)
        self._clock = clock
        self._poll = poll

    async def __aenter__(self) -> None:
        while not await self._redis.eval(_ACQUIRE, 1, self._key, self._token, self._ttl_ms):
            await self._clock.sleep(self._poll)

    async def __aexit__(self, *_exc: object) -> None:
        await self._redis.eval(_RELEASE, 1, self._key, self._token)


async def stream_ahead(
    redis: aioredis.Redis, stream: str, group: str, clock: Clock, timeout: float, poll: float
) -> set[str]:
    """Wait (up to ``timeout``) until ``group`` has worked through the stream as it is
    now; return the event ids published beyond that point since (the group reads them)."""
    target = await last_stream_id(redis, stream)
    if target is not None and not await wait_caught_up(
        redis, stream, group, target, clock, timeout=timeout, poll=poll
    ):
        log.warning("bus: %s has not caught up in %.0f s; reconciling anyway", group, timeout)
    return await event_ids_after(redis, stream, target)


async def caught_up(redis: aioredis.Redis, stream: str, group: str, target: str) -> bool:
    """The group has delivered every entry up to ``target`` and has none of them pending
    (each was handled and claimed, skipped or dead-lettered)."""
    groups = {g["name"]: g for g in await redis.xinfo_groups(stream)}
    found = groups.get(group)
    if found is None:
        return False
    if stream_id_key(str(found["last-delivered-id"])) < stream_id_key(target):
        return False
    return not await redis.xpending_range(stream, group, min="-", max=target, count=1)


async def wait_caught_up(
    redis: aioredis.Redis,
    stream: str,
    group: str,
    target: str,
    clock: Clock,
    *,
    timeout: float,
    poll: float,
) -> bool:
    """Poll ``caught_up`` until true (True) or ``timeout`` has passed (False)."""
    deadline = clock.monotonic() + timeout
    while not await caught_up(redis, stream, group, target):
        if clock.monotonic() >= deadline:
            return False
        await clock.sleep(poll)
    return True


async def event_ids_after(
    redis: aioredis.Redis, stream: str, after: str | None, page: int = 1_000
) -> set[str]:
    """The event ids of the entries after stream id ``after`` (all when None)."""
    ids: set[str] = set()
    start = f"({after}" if after is not None else "-"
    while True:
        entries: list[Any] = list(await redis.xrange(stream, min=start, max="+", count=page) or ())
        for stream_id, fields in entries:
            if fields and fields.get("id"):
                ids.add(str(fields["id"]))
            start = f"({stream_id!s}"
        if len(entries) < page:
            return ids


Reconcile = Callable[..., Awaitable[int]]  # RedisStreamsBus.reconcile


class Recoverer:
    """The bus's maintenance task: asks whether Redis restarted when a reader got it
    back, and recovers the roles whose events it may have lost (a reader found its group
    gone, or the server is another run); on error it retries with backoff (the first
    commands after a restart may meet pooled connections the old server closed)."""

    def __init__(
        self,
        redis: Callable[[], aioredis.Redis | None],
        settings: StreamSettings,
        readers: Mapping[str, RoleReader],
        reconcile: Reconcile,
        clock: Clock,
        *,
        window: timedelta,
    ) -> None:
        self._redis = redis
        self._cfg = settings
        self._readers = readers
        self._reconcile = reconcile
        self._clock = clock
        self._window = window
        self._lost: dict[str, datetime] = {}  # role -> reconcile from
        self._run_id: str | None = None  # the Redis server run we know (INFO server)
        self._check_run = False
        self._wake = asyncio.Event()

    # -- what readers report -------------------------------------------------------------
    def group_lost(self, role: str, since: datetime | None) -> None:
        """A reader found its group gone: Redis lost what it had not yet delivered."""
        since = since or self._clock.now() - self._window
        self._lost[role] = min(since, self._lost.get(role, since))
        self._wake.set()

    def reconnected(self, _role: str) -> None:
        self._check_run = True
        self._wake.set()

    # -- the task ----------------------------------------------------------------------
    async def remember_server(self) -> bool:
        """Note the server's run id; True when it is another run than the one known."""
        redis = self._redis()
        assert redis is not None
        run_id = str((await redis.info("server"))["run_id"])
        before, self._run_id = self._run_id, run_id
        return before is not None and before != run_id

    async def run(self) -> None:
        backoff = Backoff(self._cfg.backoff_base, self._cfg.backoff_cap)
        while True:
            await self._wake.wait()
            self._wake.clear()
            lost: dict[str, datetime] = {}
            try:
                if self._check_run:
                    if await self.remember_server():
                        self._restarted()
                    self._check_run = False
                lost, self._lost = self._lost, {}
                for role, since in sorted(lost.items()):
                    await self.recover(role, since)
                    del lost[role]
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "bus: recovery after a Redis outage failed (%s); retrying", exc,
                    exc_info=not isinstance(exc, UNAVAILABLE),  # a bug, not Redis away
                )  # fmt: skip
                for role, since in lost.items():
                    self.group_lost(role, since)
                self._wake.set()
                await self._clock.sleep(backoff.next_delay())

    def _restarted(self) -> None:
        """Another server run, perhaps from an older snapshot that lacks entries we
        published (its groups exist, so no reader finds its group gone): every role."""
        log.warning("bus: Redis restarted; checking every role for events it lost")
        for role, reader in self._readers.items():
            at = reader.caught_up_at
            self.group_lost(role, at - reader.lookback if at else None)

    async def recover(self, role: str, since: datetime) -> None:
        """Republish what Redis really lost of ``role``'s events: once the group has worked
        through the stream, the unclaimed events not in it (module docstring)."""
        redis, stream = self._redis(), self._cfg.stream
        assert redis is not None
        # Long enough for a failing entry to be retried to the dead letters.
        wait_s = self._cfg.max_deliveries * self._cfg.claim_idle_ms / 1000 + 5.0
        poll = max(min(self._cfg.block_ms / 1000, 0.05), 0.005)
        reader = self._readers[role]
        if reader.born_at is not None and since < reader.born_at:
            since = reader.born_at  # a new role: what came before was never its own
        key, holder = f"{stream}:recovering:{role}", self._cfg.consumer
        async with RoleLock(redis, key, holder, wait_s + 60.0, self._clock, poll):
            await reader.ensure_group()  # at "0": it reads all the stream holds
            ahead = await stream_ahead(redis, stream, role, self._clock, wait_s, poll)
            await self._reconcile(since, roles=[role], in_stream=ahead)
