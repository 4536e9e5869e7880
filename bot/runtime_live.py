"""Changing a running orch: a new ``projects.yml`` (``bot.config_reload``), pause and
resume, a restart asked for over ``/control``, and orch's own contract endpoints
(``bot.orch_contract``).  Kept beside ``bot.runtime`` so the lifecycle stays readable.

Applying a config: ``Runtime.config`` is swapped (most parts read it through a getter),
then every part that holds a copy is told: the lease keeper's names (a removed project
is handed back and stops being polled, an added one is leased), the monitor's project
settings (a changed interval, URL or threshold applies from the next probe), the Slack
approvers' user-group cache, and the digest schedule.  Stored history is never touched:
a removed project's probes, incidents and actions stay readable (``/orch history``, the
API).  Its open incidents are left open, not resolved: orch no longer knows whether the
service recovered, and if the project comes back its monitor takes them over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING

from aiohttp import web

from bot.config import Config, Project
from bot.config_reload import ConfigChange, ConfigReloader, ReloadOutcome
from bot.orch_contract import CONTROL_SECRET_ENV, EXIT_RESTART, OrchContract, OrchControls
from bot.web import ReadyCheck

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)


class LiveControls:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self.paused = False
        # Set by a /control restart; ``orch run`` then stops and exits with exit_code.
        self.exit_requested = asyncio.Event()
        self.exit_code = 0
        self.contract: OrchContract | None = None
        settings, options = runtime.settings, runtime.options
        self.reloader = ConfigReloader(
            settings.config_path, settings.env, lambda: runtime.config, self.apply_config,
            runtime.relay.emit, clock=runtime.clock, source=runtime.replica_id,
            check=runtime.scope.check, groups=runtime.scope.groups,
            poll_s=options.watch_config_s or 2.0,
        )  # fmt: skip

    async def start(self) -> None:
        await self.reloader.start(watch=self._rt.options.watch_config_s is not None)

    async def stop(self) -> None:
        await self.reloader.stop()
        if self.contract is not None:
            self.contract.stop()

    async def reload(self, trigger: str, by: str | None = None) -> ReloadOutcome:
        return await self.reloader.reload(trigger, by)

    def to_poll(self, held: Collection[str]) -> list[Project]:
        """The projects the monitor should poll: the held ones, none while paused."""
        if self.paused:
            return []
        return [p for p in self._rt.scope.projects(self._rt.config) if p.name in held]

    async def apply_config(self, new: Config, change: ConfigChange) -> None:
        rt = self._rt
        rt.config = new
        rt.keeper.set_names(rt.scope.names(new))
        if rt.monitor is not None:
            await rt.keeper.beat()  # hands back removed projects, leases added ones
            # The held set may be unchanged while a project's settings changed.
            await asyncio.gather(*rt.monitor.set_projects(self.to_poll(rt.keeper.held)))
        for name in change.removed:
            rt.health.forget(name)
            rt.analyzer.forget(name)
        self._forget_approvers()
        rt.scheduler.reschedule_digests()

    async def pause(self) -> None:
        """Stop polling (and so remediating: the Auto-Fixer acts only on polled projects);
        the leases are kept, so no other replica takes the paused projects over."""
        self.paused = True
        if self._rt.monitor is not None:
            await asyncio.gather(*self._rt.monitor.set_projects([]), return_exceptions=True)
        log.warning("paused over /control: polling and remediation stopped")

    async def resume(self) -> None:
        self.paused = False
        if self._rt.monitor is not None:
            self._rt.monitor.set_projects(self.to_poll(self._rt.keeper.held))
        log.warning("resumed over /control")

    def restart(self) -> None:
        log.warning("restart asked over /control: stopping, exit status %d", EXIT_RESTART)
        self.exit_code = EXIT_RESTART
        self.exit_requested.set()

    def clear_cache(self) -> list[str]:
        return ["approvers"] if self._forget_approvers() else []

    def mount(self, app: web.Application, ready: Mapping[str, ReadyCheck]) -> None:
        rt = self._rt
        controls = OrchControls(
            paused=lambda: self.paused, pause=self.pause, resume=self.resume,
            restart=self.restart, clear_cache=self.clear_cache,
            polled=lambda: list(rt.monitor.projects) if rt.monitor else [],
        )  # fmt: skip
        self.contract = OrchContract(
            rt.store, ready, controls, clock=rt.clock, replica_id=rt.replica_id,
            orchestrator=rt.scope.group, secret=rt.settings.env.get(CONTROL_SECRET_ENV) or None,
        )  # fmt: skip
        self.contract.mount(app)
        self.contract.start()

    def _forget_approvers(self) -> bool:
        approvers = self._rt.slack.approvers if self._rt.slack is not None else None
        if approvers is None:
            return False
        approvers.forget()
        return True
