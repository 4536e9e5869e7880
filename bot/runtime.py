"""The orchestrator process: builds every component from settings and config, starts them
in dependency order and stops them in reverse (symmetric lifecycle, DESIGN §8).

Replicas share the fleet through leases (``agents.coordination``): the monitor polls only
the projects this replica holds, and a project it takes over is seeded from the store, so
a handover neither re-announces nor early-resolves an outage.  ``stop`` is graceful:
polling stops first, what was recorded is flushed, then the leases are released so the
other replicas take the projects over at their next beat.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field

import aiohttp

from agents.bus import EventBus
from agents.bus_factory import make_bus
from agents.clock import Clock, SystemClock
from agents.coordination import LeaseKeeper, default_replica_id
from agents.escalation import dead_letter_escalation
from agents.events import Event
from agents.health import STATUSES, HealthMonitor
from agents.incidents import IncidentManager
from agents.lean_http import LeanHttp
from agents.metrics_analyzer import MetricsAnalyzer
from agents.monitor import ProjectMonitor
from agents.probe import ProbeClient
from agents.probe_result import ProbeResult
from agents.recorder import ProbeRecorder
from agents.retention import RetentionJob
from agents.write_buffer import BufferedRelay, database_ready
from bot.acting import Acting
from bot.api import ApiParts
from bot.config import Config, Project
from bot.dashboard import Dashboard
from bot.event_text import EventLogger
from bot.gc_tuning import tune_for_service
from bot.jobs import JobScheduler
from bot.network_policy import guarded_resolver, lean_probe_client
from bot.notifier import SlackNotifier
from bot.orchestrator_scope import Scope, scoped
from bot.runtime_live import LiveControls
from bot.settings import Settings
from bot.slack.home_refresh import HomeRefresher
from bot.slack.service import build_slack
from bot.slack.silences import SilenceBoard
from bot.slack_outbox import SlackOutbox
from bot.telemetry.endpoint import metrics_route
from bot.telemetry.heartbeat import Heartbeat, when_ready
from bot.telemetry.registry import Telemetry
from bot.web import ReadyCheck, WebServer, make_web_app
from storage.base import Store
from storage.factory import open_store

log = logging.getLogger(__name__)

ResultListener = Callable[[ProbeResult], None]
PROBE_KEEPALIVE_S = 45.0  # idle probe connections are kept this long (see start)
TAKEOVER_FIRST_PROBE_S = 2.0  # projects taken over are first probed within this


@dataclass
class RuntimeOptions:
    serve_web: bool = True
    max_concurrency: int = 256
    extra_result_listeners: list[ResultListener] = field(default_factory=list)
    replica_id: str | None = None  # None: host-pid-random, unique per start
    # A dead replica's projects are held again within about 1.3 x this (agents.coordination).
    lease_ttl_s: float = 15.0
    # Graceful stop: how long flushing and releasing may take before we exit anyway (the
    # leases then expire on their own).
    stop_grace_s: float = 10.0
    # Run one orchestrator group's projects only (``orch run --orchestrator``).
    orchestrator: str | None = None
    # Reload projects.yml when it changes, checked this often (None: only on SIGHUP or
    # /orch reload).  Off by default here; ``orch run`` turns it on.
    watch_config_s: float | None = None
    # Tune the garbage collector for a long-lived service once started (bot.gc_tuning);
    # process-wide, so only ``orch run`` and the benchmarks turn it on.
    tune_gc: bool = False


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
        self._indexed: tuple[Config, Mapping[str, Project]] = (config, config.project_index())
        self.clock = clock or SystemClock()
        self.options = options or RuntimeOptions()
        self.scope = Scope(self.options.orchestrator)
        self.scope.check(config)
        self.replica_id = self.scope.replica_id(self.options.replica_id or default_replica_id())
        self.store: Store = open_store(settings.database_url, settings.sqlite_path)
        # REDIS_URL selects Redis Streams (replicas share one consumer group per role);
        # unset keeps the in-process bus. A dead-lettered event becomes an escalation
        # people see, not a silent log line.
        self.bus: EventBus = make_bus(
            settings.redis_url, self.store, clock=self.clock, on_dead_letter=self._dead_letter
        )
        # While the database is unreachable, events that change no other state (status
        # changes, anomalies) are held in memory and written when it is back
        # (agents.write_buffer), so the live statuses keep up with the fleet.
        self.relay = BufferedRelay(self.store, self.bus, clock=self.clock)
        # Subscriptions go through the scope: one group's process handles its events only.
        self.events = scoped(self.bus, self.scope, lambda: self.config)
        self.health = HealthMonitor(self.relay, clock=self.clock)
        self.analyzer = MetricsAnalyzer(self.relay, clock=self.clock)
        self.incidents = IncidentManager(self.store, self.relay, clock=self.clock)
        self.incidents.register(self.events)
        EventLogger().register(self.events)
        self.recorder = ProbeRecorder(self.store, clock=self.clock)
        self.retention = RetentionJob(self.store, self.clock)
        self.scheduler = JobScheduler(self, groups=lambda: self.scope.groups(self.config))
        self.slack = build_slack(settings, self)
        # Silences are read on every notification: a board kept fresh from the store.
        self.silences = SilenceBoard(self.store, self.clock)
        self.silences.register(self.events, role=f"silences:{self.replica_id}")
        self.slack_outbox: SlackOutbox | None = None
        self.home: HomeRefresher | None = None
        if self.slack is not None:
            # Every Slack write goes through one persisted, paced outbox (DESIGN §5).
            self.slack_outbox = SlackOutbox(self.store, self.slack.client, self.clock)
            SlackNotifier(
                self.store,
                lambda: self.config,
                wake=self.slack_outbox.wake,
                statuses=self.health.statuses,
                is_silenced=self.silences.is_silenced,
            ).register(self.events)
            # Each replica knows only the Home tabs opened through it: its own role.
            self.home = HomeRefresher(self.slack.services, self.slack.client, clock=self.clock)
            self.home.register(self.events, role=f"slack-home:{self.replica_id}")
        self.result_listeners: list[ResultListener] = list(self.options.extra_result_listeners)
        # orch's own /metrics (bot.telemetry): probes counted as they come, the rest read
        # from the parts at scrape time.
        self.telemetry = Telemetry(self)
        self.result_listeners.append(self.telemetry.probes.observe)
        self.heartbeat: Heartbeat | None = None
        self._session: aiohttp.ClientSession | None = None
        self._lean: LeanHttp | None = None  # the probes' HTTP client (agents.lean_http)
        self.monitor: ProjectMonitor | None = None
        # Deciding, acting and explaining (bot.acting); the probe client comes at start.
        self._prober: ProbeClient | None = None
        self.acting = Acting(
            settings, self.store, lambda: self.config, lambda: self._session, self._probe,
            replica_id=self.replica_id, clock=self.clock, wake=self.relay.wake,
            polled=self._polled, is_flapping=self.health.is_flapping,
        )  # fmt: skip
        # The keeper's beat renews the executor's locks too: a crash frees them in one ttl.
        self.acting.executor.renewed_by_heartbeat(self.options.lease_ttl_s)
        self.acting.register(self.events)
        # The live dashboard: every event, streamed to the browsers connected here.
        self.dashboard = Dashboard(self.events, self.replica_id)
        self.web: WebServer | None = None
        self.keeper = LeaseKeeper(
            self.store,
            self.replica_id,
            names=self.scope.names(config),
            ttl_s=self.options.lease_ttl_s,
            clock=self.clock,
            on_change=self._on_leases,
            prefix="project:",
            pool=self.scope.pool,
        )
        # Reloading projects.yml, pause/resume, orch's own contract (bot.runtime_live).
        self.live = LiveControls(self)
        self._leased_before = False
        self._started: list[str] = []

    async def start(self) -> None:
        await self.store.open()
        self._started.append("store")
        await self.silences.start()
        self._started.append("silences")
        await self.bus.start()
        self._started.append("bus")
        await self.relay.start()
        self._started.append("relay")
        await self.recorder.start()
        self._started.append("recorder")
        # One pooled, keep-alive session for every probe: a connection per check would
        # roughly double the cost of polling (DESIGN §9).
        # Its resolver refuses metadata, link-local and (unless configured) private
        # addresses, and the connection goes to the address it checked (SSRF guard).
        # Idle connections are kept past the default scrape_interval, so a probe that
        # fetches /metrics and /status every 30 s reuses its three connections instead of
        # opening two afresh (at aiohttp's 15 s, reconnecting was most of the CPU at 5,000
        # projects: docs/benchmarks.md).
        connector = aiohttp.TCPConnector(
            limit=self.options.max_concurrency, ttl_dns_cache=300, enable_cleanup_closed=True,
            resolver=guarded_resolver(lambda: self.config), keepalive_timeout=PROBE_KEEPALIVE_S,
        )  # fmt: skip
        self._session = aiohttp.ClientSession(connector=connector)
        self._started.append("session")
        # Probes go through the lean keep-alive client (same guard, same keep-alive,
        # same certificate checks): aiohttp's client machinery was most of orch's CPU at
        # 5,000 projects (docs/benchmarks.md). URLs with user info stay on the session.
        self._lean = lean_probe_client(lambda: self.config, PROBE_KEEPALIVE_S)
        self._started.append("probe-http")
        self._prober = prober = ProbeClient(self._session, self.clock, self._lean)
        self.monitor = ProjectMonitor(
            prober.poll,  # /metrics and /status once per scrape_interval, not every probe
            self._on_result,
            needs_recheck=self.health.needs_recheck,
            clock=self.clock,
            max_concurrency=self.options.max_concurrency,
        )
        self._started.append("monitor")
        await self.keeper.start()  # its first beat hands the monitor this replica's share
        self._started.append("leases")
        self._leased_before = True  # from now on, a newly held project is a takeover
        await self.acting.start()
        self._started.append("acting")
        self.scheduler.start()
        self._started.append("scheduler")
        await self.live.start()
        self._started.append("live")
        if self.slack is not None:
            await self.slack.start()
            self._started.append("slack")
        if self.slack_outbox is not None:
            await self.slack_outbox.start()
            self._started.append("slack-outbox")
        if self.options.serve_web:
            # The HTTP API (bot.api; off unless ORCH_API_MODE / ORCH_API_TOKENS say so).
            slack_client = self.slack.client if self.slack else None
            parts = ApiParts(self.store, lambda: self.config, self.clock, self.settings,
                             self.relay.wake, slack_client=slack_client)  # fmt: skip
            # The dashboard's routes include the API's (bot.dashboard; none when it is off).
            routes = [*(self.slack.routes() if self.slack else ()), *self.dashboard.routes(parts),
                      metrics_route(self.telemetry)]  # fmt: skip
            app = make_web_app(self._health, ready=self._ready_checks(), routes=routes)
            self.live.mount(app, self._ready_checks())  # /health /status /logs /control
            self.web = WebServer(app, self.settings.host, self.settings.port)
            await self.web.start()
            self._started.append("web")
        if self.settings.heartbeat_url:  # a dead-man switch, pinged while /readyz passes
            self.heartbeat = Heartbeat(
                self.settings.heartbeat_url, self.settings.heartbeat_interval,
                when_ready(self._ready_checks()), self.clock, self.telemetry.heartbeats,
            )  # fmt: skip
            await self.heartbeat.start()
            self._started.append("heartbeat")
        if self.options.tune_gc:
            tune_for_service()

    async def stop(self) -> None:
        """Stop in reverse order of start; each step runs even if an earlier one failed."""
        steps = {
            "heartbeat": lambda: self.heartbeat.stop() if self.heartbeat else _nothing(),
            "web": self._stop_web,
            "slack-outbox": lambda: self.slack_outbox.stop() if self.slack_outbox else _nothing(),
            "slack": self._stop_slack,
            "live": self.live.stop,
            "scheduler": self.scheduler.stop,
            "acting": self.acting.stop,
            "leases": self._hand_back,
            "monitor": lambda: self.monitor.stop() if self.monitor else _nothing(),
            "probe-http": lambda: self._lean.close() if self._lean else _nothing(),
            "session": lambda: self._session.close() if self._session else _nothing(),
            "recorder": self.recorder.stop,
            "relay": self.relay.stop,
            "bus": self.bus.stop,
            "silences": self.silences.stop,
            "store": self.store.close,
        }
        while self._started:
            name = self._started.pop()
            try:
                await steps[name]()
            except Exception:
                log.exception("stopping %s failed", name)

    async def run_once(
        self, job: str, run: Callable[[], Awaitable[object]], period: str = "hour"
    ) -> bool:
        """Run a scheduled job (retention, digest, approval expiry) on exactly one replica
        per UTC ``period`` ("hour" or "day", by the database clock); True where it ran.
        At most once: the claim is taken before running, so a run that fails is not
        repeated in that period (the jobs catch up on their next one)."""
        if not await self.keeper.once_per(job, period):
            return False
        await run()
        return True

    async def _probe(self, project: Project) -> ProbeResult:
        assert self._prober is not None, "probed before start"
        return await self._prober.probe(project)

    def _polled(self) -> Collection[str]:
        return self.monitor.projects if self.monitor is not None else ()

    async def _on_leases(self, held: frozenset[str]) -> None:
        """The keeper's set changed: poll exactly the held projects."""
        assert self.monitor is not None
        polled = set(self.monitor.projects)
        # Seed before the first probe (the keeper's first beat is the start-up).
        await self._restore_state(held - polled, takeover=self._leased_before)
        # Taken-over projects went unwatched for up to a lease period: probe them within
        # seconds, not at a random moment of their interval.
        soon = TAKEOVER_FIRST_PROBE_S if self._leased_before else None
        stopped = self.monitor.set_projects(self.live.to_poll(held), first_within=soon)
        # The keeper releases leases only after this returns: no probe may still be in
        # flight, or two replicas could report the same project.
        await asyncio.gather(*stopped, return_exceptions=True)
        for name in polled - held:  # a later takeover seeds afresh from the store
            self.health.forget(name)
            self.analyzer.forget(name)

    async def _hand_back(self) -> None:
        """Graceful stop: take no new work, stop polling, flush what was recorded, then
        release the leases (at once, not one lease period later), within the grace."""
        await self.keeper.halt()
        if self.monitor is not None:
            await self.monitor.stop()
        deadline = asyncio.get_running_loop().time() + self.options.stop_grace_s
        for step in (self.recorder.flush, self.relay.flush, self.keeper.retire):
            try:
                async with asyncio.timeout_at(deadline):
                    await step()
            except Exception:  # the rest still runs; unreleased leases simply expire
                log.exception("graceful stop: %s failed", getattr(step, "__qualname__", step))

    async def _restore_state(self, names: Collection[str], *, takeover: bool) -> None:
        """Seed the agents for projects this replica starts polling, from open incidents,
        so a restarted orch neither re-announces a known outage nor resolves it on the
        first good probe.  On a takeover also from the status the fleet last announced,
        so a handover from another replica does not announce the project again."""
        if not names:
            return
        if takeover:
            for name, status in (await self.store.announced_statuses(sorted(names))).items():
                if status in STATUSES:
                    self.health.restore(name, status)
        for incident in await self.store.list_incidents(open_only=True, limit=100_000):
            if incident.project not in names:
                continue
            if incident.condition == "down":
                self.health.restore(incident.project, "down")
            elif incident.condition.startswith("metric:"):
                level = "crit" if incident.severity == "critical" else "warn"
                self.analyzer.restore(incident.project, incident.condition[7:], level)

    async def _on_result(self, result: ProbeResult) -> None:
        config, index = self._indexed
        if config is not self.config:  # reloaded: index the new one (once per reload)
            config, index = self._indexed = (self.config, self.config.project_index())
        project = index[result.project]
        self.recorder.add(result)
        for listener in self.result_listeners:
            listener(result)
        # Nearly every probe changes nothing worth announcing: taken without a coroutine.
        if not self.health.observe_quietly(result, project):
            await self.health.observe(result, project)
        if not self.analyzer.observe_quietly(result, project):
            await self.analyzer.observe(result, project)

    def _ready_checks(self) -> dict[str, ReadyCheck]:
        # Down: "database unreachable (…); held in memory: N probe results, M events".
        checks: dict[str, ReadyCheck] = {
            "store": database_ready(
                self.store, {"probe results": self.recorder, "events": self.relay}
            )
        }
        ping = getattr(self.bus, "ping", None)
        if ping is not None:
            checks["bus"] = _ping_check(ping)
        if self.slack is not None:
            checks["slack"] = self.slack.check
        if self.slack_outbox is not None:
            # Rate-limited or refused by Slack: not ready, and /readyz says why.
            checks["slack-outbox"] = self.slack_outbox.check
        return checks

    async def _stop_web(self) -> None:
        self.dashboard.close()  # open event streams end first: shutdown never waits on them
        if self.web is not None:
            await self.web.stop()

    async def _stop_slack(self) -> None:
        if self.home is not None:
            await self.home.stop()
        if self.slack is not None:
            await self.slack.stop()

    async def _dead_letter(self, role: str, event: Event, error: str) -> None:
        """An event a consumer role failed on five times: tell the humans."""
        self.telemetry.collector.dead_letters += 1
        await self.relay.emit([dead_letter_escalation(role, event, error, self.clock.now())])

    def _health(self) -> dict[str, object]:
        return {"projects": len(self.config.projects), "statuses": self.health.statuses()}


async def _nothing() -> None:
    return None


def _ping_check(ping: Callable[[], Awaitable[None]]) -> ReadyCheck:
    async def check() -> str | None:
        await ping()
        return None

    return check
