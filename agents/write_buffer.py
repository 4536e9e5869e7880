"""Writes held back while the database is unreachable, written in order when it is back
(issue 10.1, "PostgreSQL down for a while").

Two kinds of rows are produced whatever the database does: probe results (the
``ProbeRecorder`` keeps them between flushes anyway, and keeps them on a failed flush)
and the events that change no other state, which ``OutboxRelay.emit`` stores: status
changes, flapping, metric anomalies, config reloads.  ``BufferedRelay`` is that relay with
a memory: when storing events fails because the database cannot be reached
(``storage.postgres_connect.unreachable``), they are held in the order they came and
``emit`` returns; later events queue behind them, so nothing overtakes, and the relay's
own sweep (every second) writes them, oldest first, before it publishes.  Any other error
(the database refused the rows) is raised as before: waiting would not fix it.

Why the events matter: the HealthMonitor commits a status only once its event is stored
(``agents.health``), so without this a crash during an outage would never show as
``down`` in orch's live state, and ``/orch status`` could not say so in degraded mode.

Bounded: ``EVENT_CAPACITY`` events (a status change is a transition, not a poll: 50,000
is hours of a 1,000-project fleet in a storm).  Beyond it the oldest are dropped, counted
(``outage.dropped``) and logged.  In memory only: a process stopped during the outage loses what
it held, and says how much.  Actions never run on held data: whatever needs a row that
must exist before it acts (an action request, its audit row, a lease) still needs the
database, and refuses without it.

``Outage`` is the bookkeeping both writers share (one warning when an outage starts, one
line when it ends, figures for tests and readiness); ``database_ready`` is the readiness
check that says the database is down and what is held.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Final, Protocol

from agents.bus import EventBus
from agents.clock import Clock, SystemClock
from agents.events import Event
from agents.outbox import OutboxRelay
from storage.base import Store
from storage.postgres_connect import unreachable, within

log = logging.getLogger(__name__)

EVENT_CAPACITY: Final = 50_000
WRITE_BATCH: Final = 500  # events per transaction when writing what was held
# A database that does not answer at all (packets dropped, no reset) is unreachable
# after this long: the HealthMonitor waits at most this once per outage.
WRITE_TIMEOUT_S: Final = 2.0
READY_TIMEOUT_S: Final = 1.5  # within bot.web's 2 s for any readiness check


class Outage:
    """One writer's view of the database: up, or unreachable since when and why; it
    logs each outage twice (when it starts, when it ends) and keeps the figures."""

    def __init__(self, writer: str, unit: str, capacity: int, clock: Clock) -> None:
        self.writer = writer  # "event outbox", "probe recorder"
        self.unit = unit  # what it holds: "events", "probe results"
        self.capacity = capacity  # its bound, in its own terms (see the writer)
        self._clock = clock
        self._since: float | None = None
        self.reason = ""
        self.outages = 0  # outages ended (a write failed, a later one succeeded)
        self.last_s = 0.0  # the last one, from the first failed write to the first good one
        self.written_late = 0  # held during outages and written after all (all outages)
        self.dropped = 0  # dropped beyond the bound (all outages)
        self._late = 0  # … of the current outage
        self._dropped = 0

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, exc: BaseException, held: int) -> None:
        if self._since is None:
            self._since = self._clock.monotonic()
            # A timeout may be a database that is only slow (a burst of writes queued on
            # the events lock at start-up, say): say so rather than call it down.  (The
            # writer's own timeout is not known here: the recorder has none of its own.)
            self.reason = (
                "no answer in time: slow or unreachable"
                if isinstance(exc, TimeoutError)
                else type(exc).__name__
            )
            log.warning(
                "%s: database unreachable (%s); holding %d %s in memory (bound %d) until "
                "it is back", self.writer, self.reason, held, self.unit, self.capacity,
            )  # fmt: skip

    def drop(self, count: int, what: str) -> None:
        self.dropped += count
        if not self._dropped:  # once per outage; the total is logged when it ends
            log.error(
                "%s: over its bound of %d while the database is unreachable; dropping the "
                "oldest %s", self.writer, self.capacity, what,
            )  # fmt: skip
        self._dropped += count

    def wrote(self, count: int) -> None:
        """A write succeeded; ``count`` of what it wrote had been held."""
        self.written_late += count
        self._late += count
        if self._since is None:
            return
        self.last_s = self._clock.monotonic() - self._since
        self.outages += 1
        log.warning(
            "%s: database reachable again after %.1f s; %d held %s written, %d dropped",
            self.writer, self.last_s, self._late, self.unit, self._dropped,
        )  # fmt: skip
        self._since = None
        self._late = self._dropped = 0


# One ``emit`` waiting for the group commit: its events, and the future it awaits.
_Emit = tuple[Sequence[Event], "asyncio.Future[None]"]


def _settle(done: asyncio.Future[None], error: Exception | None) -> None:
    if done.done():  # the emitter was cancelled; its events were written all the same
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


class BufferedRelay(OutboxRelay):
    """``OutboxRelay`` whose ``emit`` holds events while the database is unreachable."""

    def __init__(
        self,
        store: Store,
        bus: EventBus,
        *,
        clock: Clock | None = None,
        sweep_interval: float = 1.0,
        batch: int = 500,
        capacity: int = EVENT_CAPACITY,
        write_timeout: float = WRITE_TIMEOUT_S,
    ) -> None:
        clock = clock or SystemClock()
        super().__init__(store, bus, clock=clock, sweep_interval=sweep_interval, batch=batch)
        self._held: deque[Event] = deque()
        self._capacity = capacity
        self._write_lock = asyncio.Lock()  # one write-back at a time
        self._write_timeout = write_timeout
        self._abandoned: asyncio.Future[None] | None = None  # a write given up on
        self._waiting: deque[_Emit] = deque()  # emits for the next group commit
        self._writer: asyncio.Task[None] | None = None
        self.outage = Outage("event outbox", "events", capacity, clock)
        self.held_total = 0  # events that had to wait, over the process's life

    @property
    def held(self) -> int:
        return len(self._held)

    async def emit(self, events: Sequence[Event]) -> None:
        """Store ``events`` (or hold them, see the module docstring), then wake the relay.

        Group commit: emits that arrive while a write is in flight are written together
        in the next transaction, each emit's events whole and in the order they came.  At
        start-up every project announces its first status at once: 5,000 transactions
        queued one behind the other took longer than the write timeout on SQLite and
        looked like an outage; grouped, they are a handful of writes."""
        if not events:
            return
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((events, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_waiting(), name="event-writer")
        await done  # the writer's verdict: stored or held (returns), or refused (raises)

    async def _write_waiting(self) -> None:
        group: list[_Emit] = []
        try:
            while self._waiting:
                group, size = [], 0
                while self._waiting and (not group or size < WRITE_BATCH):
                    emit = self._waiting.popleft()
                    group.append(emit)
                    size += len(emit[0])
                await self._write_group(group)
        except BaseException:  # cancelled (the loop is closing): no emit waits forever
            for _events, done in (*group, *self._waiting):
                if not done.done():
                    done.cancel()
            raise

    async def _write_group(self, group: list[_Emit]) -> None:
        events = [event for emitted, _done in group for event in emitted]
        # Once anything is held, what follows queues behind it: nothing overtakes.
        if not self._held:
            try:
                await self._append(events)
            except Exception as exc:
                if not unreachable(exc):
                    if len(group) == 1:
                        _settle(group[0][1], exc)
                        return
                    # The database refused a row: write each emit alone, so only the
                    # one it belongs to fails.
                    for emit in group:
                        await self._write_group([emit])
                    return
                self.outage.failed(exc, len(events))
                self._hold(events)
            else:
                self.wake()
        else:
            self._hold(events)
        for _emitted, done in group:
            _settle(done, None)

    async def flush(self) -> int:
        """Write what was held (oldest first), then publish as the relay does."""
        await self.write_held()
        return await super().flush()

    async def write_held(self) -> int:
        """Store the held events in order; stops at the first failure (kept for the
        next sweep).  Appending is idempotent on event ids, so a batch whose commit was
        cut off is simply written again."""
        written = 0
        async with self._write_lock:
            while self._held:
                batch = [self._held[i] for i in range(min(WRITE_BATCH, len(self._held)))]
                try:
                    await self._append(batch)
                except Exception as exc:
                    if unreachable(exc):
                        self.outage.failed(exc, len(self._held))
                    raise
                for _ in batch:
                    self._held.popleft()
                written += len(batch)
            if written or self.outage.down:
                self.outage.wrote(written)
        return written

    async def _append(self, events: Sequence[Event]) -> None:
        """One write, waited for at most ``write_timeout`` and never cancelled
        (``storage.postgres_connect.within``).  While a write given up on still waits for
        the database, the next fails at once instead of queueing behind it."""
        if self._abandoned is not None and not self._abandoned.done():
            raise TimeoutError("an earlier write still waits for the database")
        write = asyncio.ensure_future(self._store.append_events(events))
        try:
            await within(self._write_timeout, write)
        except TimeoutError:
            self._abandoned = write
            raise

    async def stop(self) -> None:
        if self._writer is not None:  # emits already made are written (or held) first
            await asyncio.gather(self._writer, return_exceptions=True)
        try:
            await super().stop()
        finally:
            if self._held:
                log.error("event outbox: stopped with %d events never written (database "
                          "unreachable)", len(self._held))  # fmt: skip

    def _hold(self, events: Sequence[Event]) -> None:
        self._held.extend(events)
        self.held_total += len(events)
        overflow = len(self._held) - self._capacity
        if overflow > 0:
            for _ in range(overflow):
                self._held.popleft()
            self.outage.drop(overflow, "events")


class Held(Protocol):
    """A writer that holds rows for the database (how many, now)."""

    @property
    def held(self) -> int: ...


ReadyCheck = Callable[[], Awaitable[str | None]]


def database_ready(store: Store, writers: Mapping[str, Held]) -> ReadyCheck:
    """Readiness of the database: a cheap indexed read, given ``READY_TIMEOUT_S``.  When
    it fails, the reason says the database is unreachable and what is held in memory for
    it (``writers``: a label such as ``"probe results"`` per writer)."""

    async def check() -> str | None:
        try:
            await within(READY_TIMEOUT_S, store.list_incidents(open_only=True, limit=1))
        except Exception as exc:
            held = ", ".join(f"{w.held} {label}" for label, w in writers.items())
            why = type(exc).__name__
            if isinstance(exc, TimeoutError):
                why = f"no answer within {READY_TIMEOUT_S:g} s"
            what = "unreachable" if unreachable(exc) else "error"
            return f"database {what} ({why}); held in memory: {held}"
        return None

    return check
