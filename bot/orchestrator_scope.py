"""Which part of ``projects.yml`` one orch process runs: the whole file, or one
orchestrator group's projects (``orch run --orchestrator NAME``, DESIGN §7).

A group's process keeps the whole configuration (a card, an approval or a dependency may
name any project), but polls, leases and acts only on its group's projects.  Several
processes, one per group, can then share one database and one Redis:

- leases keep their fleet-wide names (``project:<name>``): a project is polled by at
  most one process whatever runs beside it;
- replica ids start with ``<group>/`` and the fair share counts only the group's own
  live processes (``LeaseKeeper(pool=...)``), so a second group does not halve the first;
- every bus role is ``<role>@<group>`` (its own Redis consumer group), and a role skips
  events about projects outside the group, so each group's events are handled once, by
  that group's processes;
- the daily digest is scheduled for the group only (its (group, day) claim is per group).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from agents.bus import EventBus, Handler
from agents.events import Event
from bot.config import Config, Project

log = logging.getLogger(__name__)


class UnknownGroup(ValueError):
    """``--orchestrator NAME`` names no group of the file."""


class Scope:
    def __init__(self, group: str | None = None) -> None:
        self.group = group

    def check(self, config: Config) -> None:
        """Raise UnknownGroup (listing the groups) unless the group is in ``config``."""
        if self.group is not None and self.group not in config.orchestrators:
            groups = ", ".join(sorted(config.orchestrators)) or "none are defined"
            raise UnknownGroup(
                f"no orchestrator group {self.group!r} in the config (groups: {groups})"
            )

    def projects(self, config: Config) -> list[Project]:
        if self.group is None:
            return list(config.projects)
        group = config.orchestrators.get(self.group)
        members = set(group.projects) if group is not None else set()
        return [p for p in config.projects if p.name in members]

    def names(self, config: Config) -> list[str]:
        return [p.name for p in self.projects(config)]

    def groups(self, config: Config) -> list[str]:
        """The groups whose digest and messages this process owns."""
        if self.group is None:
            return sorted(config.orchestrators)
        return [self.group] if self.group in config.orchestrators else []

    def replica_id(self, base: str) -> str:
        return f"{self.pool}{base}"

    @property
    def pool(self) -> str:
        return f"{self.group}/" if self.group is not None else ""

    def role(self, role: str) -> str:
        return f"{role}@{self.group}" if self.group is not None else role


class ScopedBus:
    """The bus as one group's process subscribes to it (see the module docstring);
    publishing and the lifecycle go straight to the real bus."""

    def __init__(self, bus: EventBus, scope: Scope, config: Callable[[], Config]) -> None:
        self._bus = bus
        self._scope = scope
        self._config = config

    async def start(self) -> None:
        await self._bus.start()

    async def stop(self) -> None:
        await self._bus.stop()

    async def publish(self, event: Event) -> None:
        await self._bus.publish(event)

    def subscribe(self, role: str, handler: Handler, types: Iterable[str] | None = None) -> None:
        scope, config = self._scope, self._config

        async def ours_only(event: Event) -> None:
            # Events without a project (a reload, a dead letter) concern every group.
            if event.project is None or event.project in scope.names(config()):
                await handler(event)

        self._bus.subscribe(scope.role(role), ours_only, types)


def scoped(bus: EventBus, scope: Scope, config: Callable[[], Config]) -> EventBus:
    """``bus`` itself when the process runs the whole file, else a ScopedBus."""
    return bus if scope.group is None else ScopedBus(bus, scope, config)
