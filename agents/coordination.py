"""Sharing the fleet between replicas: the lease keeper and once-only jobs.

Each replica runs one ``LeaseKeeper``.  Every ``ttl/3`` it beats:

1. heartbeat: its replica row lives for one ``ttl``; the store returns the live count;
2. fair share: ``ceil(names / live)``;
3. renew what it holds (a lease that expired meanwhile is lost, not renewed): every
   lease the replica owns, its projects and the locks its agents took for work in flight
   (the executor's ``act:<project>`` and slots, the Auto-Fixer's decision leases), so
   those live exactly as long as the replica beats (``ActionExecutor.renewed_by_heartbeat``);
4. hand back what exceeds the share by more than a small slack (so a replica that just
   joined gets its part at its next beat), *after* ``on_change`` has stopped the work;
5. take free or expired leases up to the share;
6. ``on_change(held)`` whenever the set changed (the runtime polls exactly those).

A replica that dies stops renewing: its leases and its replica row expire after one
``ttl``, the next beat of each survivor counts one replica fewer, raises its share and
takes the orphans, so they are held again within ``ttl + ttl/3`` of the last renewal.
Expiry is always judged by the database clock (``storage.coordination``); this process's
clock only paces the beats and, as a local safety net, stops the work when leases could
not be renewed for a whole ``ttl`` (another replica may hold them by then).

With the single-process SQLite store the live count is 1 and the keeper simply holds
everything, through the same calls.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime

from agents.clock import Clock, SystemClock
from agents.lifecycle import cancel_and_wait
from storage.coordination import CoordinationStore

log = logging.getLogger(__name__)

OnChange = Callable[[frozenset[str]], Awaitable[None]]


def default_replica_id() -> str:
    """Unique per process start, readable in dashboards: ``host-pid-random``."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def fair_share(names: int, live: int) -> int:
    return math.ceil(names / max(1, live))


def slack(share: int, fraction: float = 0.03) -> int:
    """How far above its share a replica may stay before it hands leases back: enough
    that a one-name change of the fleet does not move leases around, small enough that
    every replica stays within a few per cent of its share."""
    return max(1, math.ceil(share * fraction))


def hour_key(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H")


def day_key(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d")


_PERIOD_KEYS = {"hour": hour_key, "day": day_key}


class LeaseKeeper:
    def __init__(
        self,
        store: CoordinationStore,
        replica_id: str,
        *,
        names: Iterable[str] = (),
        ttl_s: float = 15.0,
        clock: Clock | None = None,
        on_change: OnChange | None = None,
        prefix: str = "",
        pool: str = "",
    ) -> None:
        """``names`` are what the fleet shares (project names); in the store each lease is
        called ``prefix + name``, so other kinds of lease can live beside them.  ``pool``:
        the fair share counts only live replicas whose id starts with it (the processes
        of one orchestrator group; "" counts every replica)."""
        self._store = store
        self.replica_id = replica_id
        self._names = frozenset(names)
        self._ttl = ttl_s
        self._interval = ttl_s / 3
        self._clock = clock or SystemClock()
        self._on_change = on_change
        self._prefix = prefix
        self._pool = pool
        self._lock = asyncio.Lock()  # one beat at a time, and never during stop
        self._task: asyncio.Task[None] | None = None
        self._valid_until: float | None = None  # local monotonic bound of held leases
        self._abandoned = False
        self._kept_alone = False  # logged that it keeps its work through an outage
        self.held: frozenset[str] = frozenset()
        self.live = 0
        self.beats = 0

    def set_names(self, names: Iterable[str]) -> None:
        """A config reload: the next beat hands back names no longer listed."""
        self._names = frozenset(names)

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Beat once now (the caller has its share when this returns), then keep beating."""
        await self.beat()
        self._task = asyncio.create_task(self._run(), name=f"leases:{self.replica_id}")

    async def halt(self) -> None:
        """Stop beating; leases are kept until ``retire`` (or until they expire)."""
        await cancel_and_wait(self._task)
        self._task = None

    async def retire(self) -> None:
        """Release every lease and leave the live count at once (graceful stop: call it
        after the work on the held names has stopped and been flushed)."""
        await self.halt()
        async with self._lock:
            if not self._abandoned:
                await self._store.retire_replica(self.replica_id)
            self.held = frozenset()

    async def abandon(self) -> None:
        """Stop beating and never release: how a crashed replica looks to the others."""
        self._abandoned = True
        await self.halt()

    # -- once-only jobs --------------------------------------------------------------------
    async def once(self, job: str, period_key: str) -> bool:
        """True on exactly one replica per (job, period_key): run the job only then."""
        return await self._store.claim_job_run(job, period_key, self.replica_id)

    async def once_per(self, job: str, period: str = "hour") -> bool:
        """``once`` for the current UTC hour or day of the *database* clock, so replicas
        with skewed clocks still agree on the period."""
        if period not in _PERIOD_KEYS:
            raise ValueError(f"period must be one of {sorted(_PERIOD_KEYS)}, got {period!r}")
        return await self.once(job, _PERIOD_KEYS[period](await self._store.db_now()))

    # -- the beat --------------------------------------------------------------------------
    async def beat(self) -> frozenset[str]:
        async with self._lock:
            if self._abandoned:
                return self.held
            await self._beat()
            self._kept_alone = False
            self.beats += 1
            return self.held

    async def _beat(self) -> None:
        store, me, ttl = self._store, self.replica_id, self._ttl
        sent = self._clock.monotonic()
        live = await store.replica_heartbeat(me, ttl, self._pool)
        renewed = self._strip(await store.renew_leases(me, ttl))
        # Renewed at db time >= ``sent``: locally they are safe for at least one ttl.
        self._valid_until = sent + ttl
        self.live = live
        share = fair_share(len(self._names), live)
        held = renewed & self._names
        give_back = renewed - self._names
        if len(held) > share + slack(share):
            excess = sorted(held)[share:]
            held -= set(excess)
            give_back |= set(excess)
        if give_back:
            # Stop the work first: a lease handed back while still polled would let two
            # replicas report the same project.
            await self._publish(held)
            await store.release_leases(me, self._wrap(give_back))
        if len(held) < share:
            wanted = self._wrap(self._names - held)
            held |= self._strip(await store.acquire_leases(me, wanted, ttl, share - len(held)))
        await self._publish(held)

    async def _run(self) -> None:
        due = self._clock.monotonic()
        while True:
            due += self._interval
            now = self._clock.monotonic()
            due = max(due, now)  # fell behind (a stalled loop): no burst of catch-up beats
            await self._clock.sleep(due - now)
            try:
                await self.beat()
            except Exception:
                log.exception("lease beat of %s failed", self.replica_id)
                await self._expire_locally()

    async def _expire_locally(self) -> None:
        """The store is away: once our leases may have expired, stop the work on them,
        unless this replica was the only live one at its last beat.  Then nobody can take
        them over, and dropping them would leave the whole fleet unwatched for as long as
        the database is down (issue 10.1): it keeps polling, its probe rows and status
        events held in memory until the database answers (agents.write_buffer).  A
        replica started meanwhile where the database is reachable may poll the same
        projects too; its cards and actions still go through the database, once."""
        if not self.held or self._valid_until is None:
            return
        if self._clock.monotonic() >= self._valid_until:
            if self.live <= 1:
                if not self._kept_alone:
                    log.warning(
                        "%s could not renew its leases for %ss; it was the only live"
                        " replica, so it keeps watching its %d projects until the database"
                        " answers", self.replica_id, self._ttl, len(self.held),
                    )  # fmt: skip
                    self._kept_alone = True
                return
            log.warning(
                "%s could not renew its leases for %ss; dropping them", self.replica_id, self._ttl
            )
            try:
                async with self._lock:
                    await self._publish(frozenset())
            except Exception:
                log.exception("stopping the work of %s failed", self.replica_id)

    async def _publish(self, held: frozenset[str] | set[str]) -> None:
        new = frozenset(held)
        if new != self.held:
            if self._on_change is not None:
                await self._on_change(new)
            self.held = new  # only once the work really follows the new set

    def _wrap(self, names: Iterable[str]) -> list[str]:
        return [self._prefix + n for n in sorted(names)]

    def _strip(self, leases: Iterable[str]) -> set[str]:
        p = self._prefix
        return {n[len(p) :] for n in leases if n.startswith(p)}
