"""The orchestrator process: builds every component from settings and config, starts them
in dependency order and stops them in reverse (symmetric lifecycle, DESIGN §8)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from agents.bus import EventBus, InProcessBus
from agents.clock import Clock, SystemClock
from agents.health import HealthMonitor
from agents.incidents import IncidentManager
from agents.metrics_analyzer import MetricsAnalyzer
from agents.monitor import ProjectMonitor
from agents.outbox import OutboxRelay
from agents.probe import ProbeClient
from agents.probe_result import ProbeResult
from agents.recorder import ProbeRecorder
from bot.config import Config
from bot.event_text import EventLogger
from bot.settings import Settings
from bot.web import WebServer, make_web_app
from storage.base import Store
from storage.factory import open_store

log = logging.getLogger(__name__)

ResultListener = Callable[[ProbeResult], None]


@dataclass
class RuntimeOptions:
    serve_web: bool = True
    max_concurrency: int = 256
    extra_result_listeners: list[ResultListener] = field(default_factory=list)


class Runtime:
    def __init__(
        self,
        settings: Settings,
        config: Config,
        *,
        clock: Clock | None = None,
        options: RuntimeOptions | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.clock = clock or SystemClock()
        self.options = options or RuntimeOptions()
        self.bus: EventBus = InProcessBus()
        self.store: Store = open_store(settings.database_url, settings.sqlite_path)
        self.relay = OutboxRelay(self.store, self.bus, clock=self.clock)
        self.health = HealthMonitor(self.relay, clock=self.clock)
        self.analyzer = MetricsAnalyzer(self.relay, clock=self.clock)
        self.incidents = IncidentManager(self.store, self.relay, clock=self.clock)
        self.incidents.register(self.bus)
        EventLogger().register(self.bus)
        self.recorder = ProbeRecorder(self.store, clock=self.clock)
        self.result_listeners: list[ResultListener] = list(self.options.extra_result_listeners)
        self._session: aiohttp.ClientSession | None = None
        self.monitor: ProjectMonitor | None = None
        self.web: WebServer | None = None
        self._started: list[str] = []

    async def start(self) -> None:
        await self.store.open()
        self._started.append("store")
        await self._restore_state()
        await self.bus.start()
        self._started.append("bus")
        await self.relay.start()
        self._started.append("relay")
        await self.recorder.start()
        self._started.append("recorder")
        # One pooled, keep-alive session for every probe: a connection per check would
        # roughly double the cost of polling (DESIGN §9).
        connector = aiohttp.TCPConnector(
            limit=self.options.max_concurrency, ttl_dns_cache=300, enable_cleanup_closed=True
        )
        self._session = aiohttp.ClientSession(connector=connector)
        self._started.append("session")
        prober = ProbeClient(self._session, self.clock)
        self.monitor = ProjectMonitor(
            prober.probe,
            self._on_result,
            needs_recheck=self.health.needs_recheck,
            clock=self.clock,
            max_concurrency=self.options.max_concurrency,
        )
        self.monitor.set_projects(self.config.projects)
        self._started.append("monitor")
        if self.options.serve_web:
            self.web = WebServer(make_web_app(self._health), self.settings.host, self.settings.port)
            await self.web.start()
            self._started.append("web")

    async def stop(self) -> None:
        """Stop in reverse order of start; each step runs even if an earlier one failed."""
        steps = {
            "web": lambda: self.web.stop() if self.web else _nothing(),
            "monitor": lambda: self.monitor.stop() if self.monitor else _nothing(),
            "session": lambda: self._session.close() if self._session else _nothing(),
            "recorder": self.recorder.stop,
            "relay": self.relay.stop,
            "bus": self.bus.stop,
            "store": self.store.close,
        }
        while self._started:
            name = self._started.pop()
            try:
                await steps[name]()
            except Exception:
                log.exception("stopping %s failed", name)

    async def _restore_state(self) -> None:
        """Seed the agents from open incidents, so a restarted orch neither re-announces a
        known outage nor resolves it on the first good probe."""
        known = set(self.config.project_names())
        for incident in await self.store.list_incidents(open_only=True, limit=100_000):
            if incident.project not in known:
                continue
            if incident.condition == "down":
                self.health.restore(incident.project, "down")
            elif incident.condition.startswith("metric:"):
                level = "crit" if incident.severity == "critical" else "warn"
                self.analyzer.restore(incident.project, incident.condition[7:], level)

    async def _on_result(self, result: ProbeResult) -> None:
        project = self.config.project(result.project)
        self.recorder.add(result)
        for listener in self.result_listeners:
            listener(result)
        await self.health.observe(result, project)
        await self.analyzer.observe(result, project)

    def _health(self) -> dict[str, object]:
        return {"projects": len(self.config.projects), "statuses": self.health.statuses()}


async def _nothing() -> None:
    return None
