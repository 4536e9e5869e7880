"""Scheduled jobs (APScheduler 3.x on the running loop).

Every replica schedules the same jobs.  Retention claims its period in the store
(``Runtime.run_once``), so it runs once fleet-wide per period whatever the number of
replicas and across restarts: the schedule only decides how soon after a period starts
somebody notices; the claim decides who runs it.  Approval expiry needs no claim: it is a
compare-and-set in the store, so every replica runs it every ``APPROVAL_EXPIRY_EVERY``
and each due approval is expired once, by whichever replica comes first.  Nor does the
bucket roll-up (every ``BUCKETS_EVERY``): it is idempotent and the store lets one replica
at a time do the work (``storage.postgres_buckets``).  The daily digest has a cron job per
orchestrator group (its ``digest.time`` in its ``digest.timezone``) and a sweep that
catches a missed time or a dead replica's claim; both go through ``bot.digest_job``,
whose (group, local day) claim in the store makes it once a day fleet-wide.  Without
Slack there is nowhere to post it, and nothing is claimed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from agents.actions import approval_event
from agents.clock import Clock
from agents.events import Event
from bot.config import Config
from bot.digest_job import CATCH_UP, SWEEP_EVERY, DigestJob
from storage.autonomy_store import Approval
from storage.base import Store

log = logging.getLogger(__name__)

# Look every few minutes so an hour's roll-up happens soon after the hour ends.
RETENTION_EVERY = timedelta(minutes=5)
# The 5-minute buckets of the current hour: a bucket is rolled up within a minute of its end.
BUCKETS_EVERY = timedelta(minutes=1)
FIRST_RUN_AFTER = timedelta(seconds=30)
# A card may say "pending" up to this long after its approval ran out (a click meanwhile
# is refused as expired by the store all the same).
APPROVAL_EXPIRY_EVERY = timedelta(seconds=30)


class ApprovalExpiry:
    """Expire every due approval, each with its ``approval.expired`` event and audit row
    (``Store.expire_approvals``), then wake the relay so the cards are edited soon.

    The event carries the incident the approval's action is about, so the expiry shows in
    that incident's thread.  ``event_for`` runs inside the store's transaction and cannot
    read, so the incidents are read beforehand: each run remembers the incident of every
    approval still pending, for the run that finds it due.  An approval this process never
    saw pending (created and due between two runs, or before a restart) expires without
    one; the notifier then finds the incident from the action."""

    def __init__(
        self, store: Store, *, wake: Callable[[], None] = lambda: None, source: str = "orch"
    ) -> None:
        self._store = store
        self._wake = wake
        self._source = source
        self._incidents: dict[str, str | None] = {}  # action id -> its incident id

    async def run(self) -> list[Approval]:
        pending = await self._store.pending_approvals()
        for approval in pending:
            if approval.action_id not in self._incidents:
                action = await self._store.get_action(approval.action_id)
                self._incidents[approval.action_id] = action.incident_id if action else None
        expired = await self._store.expire_approvals(self._event_for)
        live = {a.action_id for a in pending} - {a.action_id for a in expired}
        self._incidents = {k: v for k, v in self._incidents.items() if k in live}
        if expired:
            log.info("expired %d approval(s): nothing ran", len(expired))
            self._wake()
        return expired

    def _event_for(self, approval: Approval) -> Event:
        incident_id = self._incidents.get(approval.action_id)
        return approval_event(incident_id, self._source)(approval)


class _Retention(Protocol):
    async def run_once(self) -> object: ...

    async def roll_up_buckets(self) -> object: ...


class _Relay(Protocol):
    def wake(self) -> None: ...


class _Outbox(Protocol):
    def wake(self) -> None: ...


class _Runtime(Protocol):
    @property
    def retention(self) -> _Retention: ...

    @property
    def store(self) -> Store: ...

    @property
    def relay(self) -> _Relay: ...

    @property
    def config(self) -> Config: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def replica_id(self) -> str: ...

    @property
    def slack_outbox(self) -> _Outbox | None: ...

    async def run_once(
        self, job: str, run: Callable[[], Awaitable[object]], period: str = "hour"
    ) -> bool: ...


class JobScheduler:
    def __init__(self, runtime: _Runtime, groups: Callable[[], list[str]] | None = None) -> None:
        """``groups``: the orchestrator groups whose digest this process posts (one group's
        process: only its own; default: every group of the config)."""
        self._runtime = runtime
        self._groups = groups or (lambda: sorted(runtime.config.orchestrators))
        self._scheduler: AsyncIOScheduler | None = None
        self._running: set[asyncio.Task[object]] = set()  # job runs in progress
        self._stopping = False
        self.approvals = ApprovalExpiry(runtime.store, wake=runtime.relay.wake)
        self.digests = DigestJob(
            runtime.store, lambda: runtime.config, runtime.clock, runtime.replica_id,
            wake=self._wake_slack, groups=self._groups,
        )  # fmt: skip

    def start(self) -> None:
        # Created here, not in __init__: APScheduler binds to the loop that is running.
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._every(self.retention, RETENTION_EVERY, "retention")
        self._every(self.buckets, BUCKETS_EVERY, "buckets")
        self._every(self.expire_approvals, APPROVAL_EXPIRY_EVERY, "approval-expiry", soon=False)
        self.reschedule_digests()
        self._every(self.digest_sweep, SWEEP_EVERY, "digest-sweep")
        self._scheduler.start()

    def reschedule_digests(self) -> None:
        """One cron job per group's digest time, as the config says now (a reload may
        have added, removed or moved a group's digest)."""
        if self._scheduler is None:
            return
        for job in self._scheduler.get_jobs():
            if job.id.startswith("digest:"):
                job.remove()
        config = self._runtime.config
        for group in self._groups():
            settings = config.orchestrators[group].digest
            if settings.enabled:
                at = settings.at
                when = CronTrigger(hour=at.hour, minute=at.minute, timezone=settings.zone)
                self._scheduler.add_job(
                    self._tracked(self.digest), when, args=[group], id=f"digest:{group}",
                    coalesce=True, max_instances=1,
                    misfire_grace_time=int(CATCH_UP.total_seconds()),
                )  # fmt: skip

    def _every(
        self, job: Callable[[], Awaitable[None]], every: timedelta, name: str, *, soon: bool = True
    ) -> None:
        """An interval job that never overlaps itself and folds missed runs into one;
        ``soon``: its first run shortly after start, not one whole interval later."""
        assert self._scheduler is not None
        first = {"next_run_time": datetime.now(UTC) + FIRST_RUN_AFTER} if soon else {}
        self._scheduler.add_job(self._tracked(job), "interval", id=name,
                                seconds=every.total_seconds(), coalesce=True, max_instances=1,
                                **first)  # fmt: skip

    @property
    def scheduler(self) -> AsyncIOScheduler | None:
        """The running APScheduler (None before start and after stop)."""
        return self._scheduler

    def _tracked(self, job: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        """``job`` as APScheduler runs it: remembered while it runs, so ``stop`` can end it
        and wait for it.  APScheduler's own shutdown cancels running jobs without waiting
        and logs each cancellation as a failed job, a traceback on every deploy."""

        @functools.wraps(job)
        async def run(*args: object) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._running.add(task)
            try:
                await job(*args)
            except asyncio.CancelledError:
                if not self._stopping:
                    raise
                # Ended by stop(): every job is idempotent and the next start catches up.
            finally:
                self._running.discard(task)

        return run

    async def stop(self) -> None:
        """Stop scheduling, end the job runs in progress and wait until they have ended."""
        if self._scheduler is None:
            return
        self._stopping = True
        self._scheduler.shutdown(wait=False)  # no new runs; cancels the runs in progress
        self._scheduler = None
        running = list(self._running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    async def retention(self) -> None:
        """Roll up finished hours and apply retention, once per hour fleet-wide."""
        try:
            await self._runtime.run_once("retention", self._runtime.retention.run_once, "hour")
        except Exception:  # a failed run must not kill the scheduler; next hour catches up
            log.exception("the retention job failed")

    async def buckets(self) -> None:
        """Roll up the sub-hour buckets that ended.  On every replica, without a claim: it
        is idempotent, the store serialises concurrent runs, and a run with nothing to do
        costs one query (a claim per minute would cost a job_runs row each)."""
        try:
            await self._runtime.retention.roll_up_buckets()
        except Exception:  # the next minute catches up; uptime is exact meanwhile, slower
            log.exception("the bucket roll-up job failed")

    async def digest(self, group: str) -> None:
        """A group's digest time: post it, on the one replica that claims the day."""
        if self._runtime.slack_outbox is None:
            return
        try:
            await self.digests.run_group(group)
        except Exception:  # the sweep retries once the claim is stale
            log.exception("the digest of %s failed", group)

    async def digest_sweep(self) -> None:
        """Every group: a digest missed at its time, or a dead replica's stale claim."""
        if self._runtime.slack_outbox is not None:
            await self.digests.sweep()

    def _wake_slack(self) -> None:
        outbox = self._runtime.slack_outbox
        if outbox is not None:
            outbox.wake()

    async def expire_approvals(self) -> None:
        """On every replica: expiry is a compare-and-set, each approval expires once."""
        try:
            await self.approvals.run()
        except Exception:  # the store is away: the next run expires what is due then
            log.exception("the approval expiry job failed")
