"""The slow half of every Slack request: after ``ack()``, off the request path.

Listeners acknowledge at once and hand their work here, so Slack gets its answer within
3 s however slow the store is.  Each piece of work has a *request key* that a Slack retry
carries too (``event_id``, ``trigger_id``, or the body's hash).  A marker is committed
only after the work completed: a retry of a request whose first attempt crashed or failed
finds no marker and runs again; a retry of a request already done is skipped.  A retry
that arrives while the first attempt still runs in this process waits for it first.

Across replicas two deliveries of the same request can still both run when the first is
in flight elsewhere; that only happens when our ack itself was lost, and every handler is
idempotent or read-only.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from storage.base import Store
from storage.postgres_connect import unreachable

log = logging.getLogger(__name__)

Work = Callable[[], Awaitable[None]]


class RetryMarkers(Protocol):
    async def committed(self, key: str) -> bool: ...

    async def commit(self, key: str) -> None: ...


class MemoryRetryMarkers:
    """For tests and for a Slack app without a store; forgets on restart, so a retry after
    a crash runs again (the safe direction)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    async def committed(self, key: str) -> bool:
        return key in self._keys

    async def commit(self, key: str) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self._capacity:
            self._keys.popitem(last=False)


class StoreRetryMarkers:
    """Markers in the store's per-role claim table (``consumed_events``), which is exactly
    a committed "this consumer handled this id" record shared by every replica."""

    def __init__(self, store: Store, role: str = "slack-request") -> None:
        self._store = store
        self._role = role

    async def committed(self, key: str) -> bool:
        return key in await self._store.claimed_ids(self._role, [key])

    async def commit(self, key: str) -> None:
        await self._store.claim_event(self._role, key)


def request_key(body: Mapping[str, Any]) -> str:
    """A key that Slack's retries of one request share (their signatures do not)."""
    if isinstance(body.get("event_id"), str):
        return "event:" + body["event_id"]
    if isinstance(body.get("trigger_id"), str):
        return "trigger:" + body["trigger_id"]
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return "body:" + hashlib.sha256(canonical.encode()).hexdigest()


def is_retry(headers: Mapping[str, Any]) -> bool:
    """Bolt lower-cases HTTP headers, and mirrors Socket Mode's retry_attempt into them."""
    value = headers.get("x-slack-retry-num")
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    return value not in (None, "", "0")


class Background:
    """Tracked tasks (cancelled and awaited on stop) with retry de-duplication."""

    def __init__(self, markers: RetryMarkers, *, timeout: float = 120.0) -> None:
        self.markers = markers
        self._timeout = timeout
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False

    def submit(self, key: str, retry: bool, work: Work) -> None:
        if self._closed:
            log.warning("slack work refused: shutting down")
            return
        earlier = self._running.get(key)
        task = asyncio.create_task(self._run(key, retry, work, earlier), name=f"slack:{key}")
        self._running[key] = task
        self._tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._done)

    async def _run(self, key: str, retry: bool, work: Work, earlier: asyncio.Task[None] | None):
        if earlier is not None:  # the first attempt is still running here: let it finish
            await asyncio.gather(earlier, return_exceptions=True)
        try:
            if retry and await self.markers.committed(key):
                log.info("slack retry of a request already handled; skipped")
                return
            async with asyncio.timeout(self._timeout):
                await work()
            await self.markers.commit(key)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # No marker: a retry of this request will run the work again.
            if unreachable(exc):  # the reply already said so; no traceback per command
                log.warning("slack work: database unreachable (%s)", type(exc).__name__)
            else:
                log.exception("slack work failed")
        finally:
            if self._running.get(key) is asyncio.current_task():
                del self._running[key]

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()

    async def drain(self) -> None:
        """Wait until no work is in flight (tests, and a graceful stop)."""
        await self._idle.wait()

    async def stop(self, grace: float = 5.0) -> None:
        """Let in-flight replies finish for up to ``grace`` seconds, then cancel the rest."""
        self._closed = True
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
