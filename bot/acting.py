"""Everything in the process that decides and acts, built and run as one part of the
Runtime: the dependency folder (which outages are folded into a dependency's, so that
only the root is restarted, paged and analysed), the Auto-Fixer (decides, for the
projects this replica polls), the Escalator,
the Action Executor (runs what was decided or approved), and the Decision agent (explains
escalations: Claude as a read-only advisor when a key is set, the rule engine otherwise).

Started after polling, stopped before it (``bot.runtime``), in the order below.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection

import aiohttp

from agents import rules_engine
from agents.autofixer import AutoFixer
from agents.bus import EventBus
from agents.claude_advisor import ClaudeAdvisor
from agents.clock import Clock
from agents.decision import DecisionAgent
from agents.dependencies import DependencyFolder
from agents.escalation import Escalator
from agents.executor import ActionExecutor
from agents.probe_result import ProbeResult
from bot.config import Config, Project
from bot.secrets import control_secret
from bot.settings import Settings
from storage.base import Store


class Acting:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        config: Callable[[], Config],
        session: Callable[[], aiohttp.ClientSession | None],
        probe: Callable[[Project], Awaitable[ProbeResult]],
        *,
        replica_id: str,
        clock: Clock,
        wake: Callable[[], None],
        polled: Callable[[], Collection[str]],
        is_flapping: Callable[[str], bool],
    ) -> None:
        self.folder = DependencyFolder(store, config, clock=clock, wake=wake)
        self.escalator = Escalator(store, config, session, clock=clock, wake=wake)
        self.autofixer = AutoFixer(
            store, config, self.escalator, clock=clock, wake=wake, replica_id=replica_id,
            held=polled, is_flapping=is_flapping,
        )  # fmt: skip
        # Signed /control calls or configured commands (with none of orch's secrets in
        # their environment), verified by probing again.
        self.executor = ActionExecutor(
            store, config, session, probe,
            lambda project: control_secret(project, config(), settings.env),
            replica_id, clock=clock, wake=wake, command_env=settings.command_env(),
        )  # fmt: skip
        # Its module cannot reach the executor (a test says so).
        self.advisor = (
            ClaudeAdvisor(settings.anthropic_api_key, settings.anthropic_base_url,
                          settings.claude_model, clock,
                          calls_per_minute=lambda: config().defaults.analysis_calls_per_minute)
            if settings.anthropic_api_key else None
        )  # fmt: skip
        self.decision = DecisionAgent(
            store, config, session, advisor=self.advisor, rules=rules_engine.analyze,
            wake=wake,
        )  # fmt: skip

    def register(self, bus: EventBus) -> None:
        self.folder.register(bus)
        self.autofixer.register(bus)
        self.executor.register(bus)
        self.decision.register(bus)

    async def start(self) -> None:
        await self.folder.start()
        await self.executor.start()
        await self.autofixer.start()

    async def stop(self) -> None:
        """The Auto-Fixer first (no new decisions), then the executor (it finishes or
        hands back what runs), then Claude's connections."""
        try:
            await self.autofixer.stop()
            await self.executor.stop()
            await self.folder.stop()
        finally:
            if self.advisor is not None:
                await self.advisor.aclose()
