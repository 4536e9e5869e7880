"""The daily digest, once per group and local day, fleet-wide (``bot.jobs`` schedules it).

Every replica has the same APScheduler cron job per group (the group's ``digest.time`` in
its ``digest.timezone``) and a sweep every ``SWEEP_EVERY``.  Either one calls
``run_group``, which posts only when it is the group's digest time or up to ``CATCH_UP``
after it, and only for the replica whose ``claim_digest`` wins the (group, local day) row
(``storage.report_store``).  So:

- two replicas at 09:00: one claims and posts, the other's claim is refused;
- a restart across 09:00 (orch down at 09:00, back at 09:02): the sweep at start-up finds
  the day unclaimed and posts it, late; a restart right after posting finds it queued;
- a replica that dies between claiming and queueing: its claim goes stale after
  ``DIGEST_STALE_S`` and the next sweep (any replica) takes it over.  Queueing is keyed by
  (group, day) in the outbox, so even a slow first claimant and its successor together
  queue one digest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

from agents.clock import Clock
from bot.config import Config
from bot.config_digest import DigestConfig
from bot.digest_post import daily_key, post_digest
from storage.base import Store
from storage.report_store import DIGEST_STALE_S

log = logging.getLogger(__name__)

# A digest missed at its time (orch was down) is still posted this long after it.
CATCH_UP: Final = timedelta(hours=3)
SWEEP_EVERY: Final = timedelta(minutes=5)


def due_day(settings: DigestConfig, now: datetime) -> str | None:
    """The local date whose digest is due at ``now``, or None outside [time, time +
    ``CATCH_UP``) of the group's local day."""
    zone = settings.zone
    local = now.astimezone(zone)
    scheduled = datetime.combine(local.date(), settings.at, tzinfo=zone)
    if scheduled <= local < scheduled + CATCH_UP:
        return local.date().isoformat()
    return None


class DigestJob:
    def __init__(
        self,
        store: Store,
        config: Callable[[], Config],
        clock: Clock,
        replica_id: str,
        *,
        wake: Callable[[], None] = lambda: None,
        stale_s: float = DIGEST_STALE_S,
        groups: Callable[[], list[str]] | None = None,
    ) -> None:
        """``wake``: the Slack outbox's, so the digest leaves at once; ``groups``: the
        groups this process posts for (default: every group of the config)."""
        self._store = store
        self._config = config
        self._clock = clock
        self._replica = replica_id
        self._wake = wake
        self._stale_s = stale_s
        self._groups = groups or (lambda: sorted(config().orchestrators))

    async def run_group(self, group: str) -> bool:
        """Post ``group``'s digest if it is due and this replica wins it; True if so."""
        config = self._config()
        orchestrator = config.orchestrators.get(group)
        if orchestrator is None or not orchestrator.digest.enabled:
            return False
        now = self._clock.now()
        day = due_day(orchestrator.digest, now)
        if day is None or await self._store.digest_state(group, day) == "queued":
            return False  # (a read: the sweep asks every few minutes for hours)
        if not await self._store.claim_digest(group, day, self._replica, self._stale_s):
            return False
        await post_digest(self._store, config, group, now, key=daily_key(group, day), day=day,
                          source=self._replica)  # fmt: skip
        if not await self._store.finish_digest(group, day, self._replica):
            log.warning("digest of %s for %s: the claim was taken over meanwhile", group, day)
        self._wake()
        return True

    async def sweep(self) -> list[str]:
        """Every group's ``run_group`` (a missed time, a stale claim); the groups posted."""
        posted = []
        for group in self._groups():
            try:
                if await self.run_group(group):
                    posted.append(group)
            except Exception:  # one group's failure must not stop the others
                log.exception("the digest of %s failed", group)
        return posted
