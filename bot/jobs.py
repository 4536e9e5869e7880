"""Scheduled jobs (APScheduler 3.x on the running loop).

Every replica schedules the same jobs; each job then claims its period in the store
(``Runtime.run_once``), so it runs once fleet-wide per period whatever the number of
replicas and across restarts.  The schedule only decides how soon after a period starts
somebody notices; the claim decides who runs it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = logging.getLogger(__name__)

# Look every few minutes so an hour's roll-up happens soon after the hour ends.
RETENTION_EVERY = timedelta(minutes=5)
FIRST_RUN_AFTER = timedelta(seconds=30)


class _Retention(Protocol):
    async def run_once(self) -> object: ...


class _Runtime(Protocol):
    @property
    def retention(self) -> _Retention: ...

    async def run_once(
        self, job: str, run: Callable[[], Awaitable[object]], period: str = "hour"
    ) -> bool: ...


class JobScheduler:
    def __init__(self, runtime: _Runtime) -> None:
        self._runtime = runtime
        self._scheduler: AsyncIOScheduler | None = None

    def start(self) -> None:
        # Created here, not in __init__: APScheduler binds to the loop that is running.
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._scheduler.add_job(
            self.retention,
            "interval",
            seconds=RETENTION_EVERY.total_seconds(),
            id="retention",
            coalesce=True,
            max_instances=1,
            next_run_time=datetime.now(UTC) + FIRST_RUN_AFTER,
        )
        self._scheduler.start()

    async def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    async def retention(self) -> None:
        """Roll up finished hours and apply retention, once per hour fleet-wide."""
        try:
            await self._runtime.run_once("retention", self._runtime.retention.run_once, "hour")
        except Exception:  # a failed run must not kill the scheduler; next hour catches up
            log.exception("the retention job failed")
