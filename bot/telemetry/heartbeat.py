"""The heartbeat to an external dead-man switch (``ORCH_HEARTBEAT_URL``): a GET each
interval while orch is healthy, so the switch alerts someone when orch dies, hangs or
loses its store, which orch cannot report about itself.

Beats follow a fixed schedule (start + n × interval), so a slow answer does not drift
them.  A beat never raises: an unhealthy orch skips it (the switch's silence is the
alarm), a failed one is counted and logged.  Dead-man switch services put their token in
the URL (healthchecks.io: ``https://hc-ping.com/<uuid>``), so logs show only the scheme
and host (``safe_url``).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp

from agents.clock import Clock
from agents.lifecycle import cancel_and_wait
from bot.web import ReadyCheck, run_check

log = logging.getLogger(__name__)

# None when orch is healthy, else a short reason (bot.web's ReadyCheck shape).
HealthCheck = Callable[[], Awaitable[str | None]]
MAX_TIMEOUT_S = 10.0


class Count(Protocol):
    def inc(self, amount: float = 1) -> None: ...


def safe_url(url: str) -> str:
    """``https://hc-ping.com/…``: where beats go, without the secret path or query."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    rest = "/…" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{host}{port}{rest}"


class Heartbeat:
    def __init__(
        self,
        url: str,
        interval_s: float,
        healthy: HealthCheck,
        clock: Clock,
        counts: Mapping[str, Count],
        *,
        timeout_s: float | None = None,
    ) -> None:
        """``counts``: the ``sent``, ``failed`` and ``skipped`` counters to increment."""
        self._url = url
        self._interval = interval_s
        self._healthy = healthy
        self._clock = clock
        self._counts = counts
        self._timeout = min(interval_s, MAX_TIMEOUT_S) if timeout_s is None else timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self.where = safe_url(url)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
        self._task = asyncio.create_task(self._run(), name="heartbeat")
        log.info("heartbeat: to %s every %gs", self.where, self._interval)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        started = self._clock.monotonic()
        while True:
            await self.beat()
            # The next slot of the schedule; slots a slow beat overran are skipped, not
            # made up in a burst.
            slots = math.floor((self._clock.monotonic() - started) / self._interval) + 1
            await self._clock.sleep(started + slots * self._interval - self._clock.monotonic())

    async def beat(self) -> str:
        """One beat, unless orch is unhealthy; returns what happened (sent, failed,
        skipped).  Never raises (except CancelledError)."""
        try:
            async with asyncio.timeout(self._timeout):
                problem = await self._healthy()
        except Exception as exc:
            problem = f"health check raised {type(exc).__name__}"
        if problem is not None:
            return self._count("skipped", logging.WARNING, "heartbeat: skipped (%s)", problem)
        assert self._session is not None, "beat before start"
        try:
            async with self._session.get(self._url, allow_redirects=False) as answer:
                await answer.read()
                status = answer.status
        except Exception as exc:  # refused, timed out, reset…: a beat never raises
            # str(exc) of aiohttp errors can carry the URL: only the type is logged.
            return self._count("failed", logging.WARNING, "heartbeat to %s failed: %s",
                               self.where, type(exc).__name__)  # fmt: skip
        if status >= 400:
            return self._count("failed", logging.WARNING, "heartbeat to %s answered HTTP %d",
                               self.where, status)  # fmt: skip
        return self._count("sent", logging.DEBUG, "heartbeat to %s sent", self.where)

    def _count(self, result: str, level: int, message: str, *args: object) -> str:
        self._counts[result].inc()
        log.log(level, message, *args)
        return result


def when_ready(checks: Mapping[str, ReadyCheck]) -> HealthCheck:
    """Healthy when every readiness check passes (what ``/readyz`` says): an orch that
    cannot reach its store, its bus or Slack cannot warn anyone, so its silence should."""

    async def check() -> str | None:
        for name, ready in checks.items():
            problem = await run_check(ready)
            if problem is not None:
                return f"{name}: {problem}"
        return None

    return check
