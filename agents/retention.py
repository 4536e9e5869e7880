"""The retention job: roll up the hours that ended, then delete what is past retention.

Raw probes and samples are kept ``raw_days`` (default 7), hourly roll-ups ``rollup_days``
(default 400); events and incidents are never deleted here.  Bookkeeping rows (markers
of events a role handled, claims of scheduled job runs) go after 30 days.  Roll-up runs
first because retention only deletes raw rows of hours already rolled up: the other order
would let a late row's hour slip past the horizon unrolled.  Both steps are idempotent,
so a run that crashed half way is finished by the next one.  The runtime schedules
``run_once`` hourly, once fleet-wide (a lease will pick the replica); definitions live in
``storage.rollups``.

``roll_up_buckets`` runs every minute on every replica (the store lets one at a time do
the work): it keeps the current hour's 5-minute buckets up to date, so that uptime up to
"now" does not read the hour's raw probes (``storage.postgres_buckets``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from agents.clock import Clock
from storage.base import Store
from storage.rollups import check_retention

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetentionReport:
    at: datetime
    rolled_up: int  # (project, hour) pairs (re)computed
    deleted: dict[str, int] = field(default_factory=dict)  # rows per table


class RetentionJob:
    def __init__(
        self, store: Store, clock: Clock, *, raw_days: float = 7, rollup_days: float = 400
    ) -> None:
        check_retention(raw_days, rollup_days)  # a bad setting fails at start, not in an hour
        self._store = store
        self._clock = clock
        self._raw_days = raw_days
        self._rollup_days = rollup_days

    async def run_once(self) -> RetentionReport:
        now = self._clock.now()
        rolled = await self._store.rollup_hours(now)
        deleted = await self._store.apply_retention(
            now, raw_days=self._raw_days, rollup_days=self._rollup_days
        )
        log.info("retention at %s: rolled up %d project-hours, deleted %s", now, rolled, deleted)
        return RetentionReport(now, rolled, deleted)

    async def roll_up_buckets(self) -> int:
        """The buckets that ended by now; how many (project, bucket) pairs were computed."""
        return await self._store.rollup_buckets(self._clock.now())
