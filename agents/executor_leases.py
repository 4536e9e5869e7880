"""The Action Executor's leases: one lock per project (``act:<project>``: one action at a
time on a project, fleet-wide) and ``max_concurrent_remediations`` fleet-wide slots
(``remediation-slot:<i>``).  Held in the store, so they count across replicas; a replica
that dies stops renewing them and they expire (``lease_ttl``)."""

from __future__ import annotations

import logging
from typing import Final

from agents.executor_calls import probe_timeout
from bot.config import Project
from storage.base import Store

log = logging.getLogger(__name__)

LOCK_PREFIX: Final = "act:"
SLOT_PREFIX: Final = "remediation-slot:"
LEASE_MARGIN_S: Final = 30.0


def lock_name(project: str) -> str:
    return f"{LOCK_PREFIX}{project}"


def slot_names(slots: int) -> list[str]:
    return [f"{SLOT_PREFIX}{i}" for i in range(slots)]


def lease_ttl(project: Project) -> float:
    """Long enough for the call, the check after an unknown outcome, the verification and
    its last probe, with a margin."""
    policy = project.policy
    calls = policy.control_timeout + 3 * probe_timeout(project)
    return calls + policy.verify_timeout + LEASE_MARGIN_S


class ExecutorLeases:
    def __init__(self, store: Store, replica_id: str) -> None:
        self._store = store
        self._replica = replica_id
        self.heartbeat_ttl: float | None = None  # see ``ActionExecutor.renewed_by_heartbeat``

    def ttl(self, project: Project | None) -> float:
        """How long a lock is taken for: the whole call-and-verify budget, or one
        heartbeat ttl when this replica's beat renews it (a crash then frees it sooner)."""
        budget = lease_ttl(project) if project is not None else LEASE_MARGIN_S
        return budget if self.heartbeat_ttl is None else min(budget, self.heartbeat_ttl)

    async def take_lock(self, project: str, ttl: float) -> bool:
        """Only the project lock (taking over an action another executor left)."""
        return bool(await self._store.acquire_leases(self._replica, [lock_name(project)], ttl, 1))

    async def take_for_action(self, project: Project, slots: int) -> list[str] | None:
        """The project lock and one remediation slot, or None (nothing held) if busy."""
        ttl, lock = self.ttl(project), lock_name(project.name)
        if not await self.take_lock(project.name, ttl):
            return None
        try:
            slot = await self._store.acquire_leases(self._replica, slot_names(slots), ttl, 1)
        except BaseException:
            await self.release([lock])
            raise
        if not slot:
            await self.release([lock])
            return None
        return [lock, *slot]

    async def release(self, names: list[str]) -> None:
        try:
            await self._store.release_leases(self._replica, names)
        except Exception:  # they expire on their own (TTL)
            log.exception("releasing %s failed", names)
