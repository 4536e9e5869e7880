"""orch speaks the project contract itself (docs/contract.md), so a root orch can watch,
pause and restart the orch processes below it like any other project.

Served on orch's own web app through ``orch_kit`` (the same code the demo services use):

- ``/health``: application/health+json from this process's readiness checks (store, bus,
  Slack, Slack outbox): all up is pass, any down is fail (503); plus ``clock:skew``, this
  host's clock against the database's (leases, budgets and job claims are judged by the
  database clock, so a skewed host does not break them; it is reported so someone fixes
  its time sync): warn beyond ``SKEW_WARN_S``;
- ``/status``: running or paused, the Slack outbox backlog as ``queue_depth``, uptime,
  version, pid, replica, orchestrator group and the projects this process polls;
- ``/logs``: the last orch log lines, from an in-memory ring (``LogRing``), redacted;
- ``/control`` (only when ``ORCH_CONTROL_SECRET`` is set; HMAC-signed as the contract
  says): ``pause``/``resume`` stop and restart this process's polling (and with it its
  remediation), ``restart`` stops it gracefully and exits with ``EXIT_RESTART`` for its
  supervisor to start it again, ``clear_cache`` drops its caches.

``/metrics`` is served by orch's telemetry, not here.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from agents.clock import Clock
from agents.redact import redact
from bot import __version__
from bot.web import ReadyCheck, run_check
from orch_kit.contract import Contract
from orch_kit.logbuffer import LogBuffer
from orch_kit.model import Callbacks, Check, ControlRequest, Health, LogEntry, LogQuery
from storage.base import Store
from storage.postgres_connect import within

CONTROL_SECRET_ENV: Final = "ORCH_CONTROL_SECRET"
EXIT_RESTART: Final = 75  # EX_TEMPFAIL: "try again", what a supervisor restarts on
QUEUE_DEPTH_CAP: Final = 1000  # /status reads at most this many pending outbox rows
SKEW_READ_TIMEOUT_S: Final = 1.5
SKEW_WARN_S: Final = 5.0  # NTP keeps hosts within milliseconds; seconds mean it is broken
_LEVELS: Final = {"DEBUG": "debug", "INFO": "info", "WARNING": "warn", "ERROR": "error",
                  "CRITICAL": "error"}  # fmt: skip


class LogRing(logging.Handler):
    """Keeps the last lines of orch's log for ``/logs``, each redacted before it is kept
    (a URL with credentials or a token in an exception must not be served)."""

    def __init__(self, maxlen: int = 2000, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.buffer = LogBuffer(maxlen)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = f"{record.name}: {record.getMessage()}"
            if record.exc_info and record.exc_info[0] is not None:
                message += f" ({record.exc_info[0].__name__})"  # the type, not the traceback
            self.buffer.append(_LEVELS.get(record.levelname, "info"), redact(message))
        except Exception:
            self.handleError(record)


@dataclass
class OrchControls:
    """What ``/control`` and ``/status`` need from the Runtime."""

    paused: Callable[[], bool]
    pause: Callable[[], Awaitable[None]]
    resume: Callable[[], Awaitable[None]]
    restart: Callable[[], None]
    clear_cache: Callable[[], list[str]]
    polled: Callable[[], list[str]]


class OrchContract:
    def __init__(
        self,
        store: Store,
        ready: Mapping[str, ReadyCheck],
        controls: OrchControls,
        *,
        clock: Clock,
        replica_id: str,
        orchestrator: str | None,
        secret: str | None,
        log_lines: int = 2000,
    ) -> None:
        self._store = store
        self._ready = dict(ready)
        self._controls = controls
        self._clock = clock
        self._replica_id = replica_id
        self._orchestrator = orchestrator
        self._started = clock.monotonic()
        self.logs = LogRing(log_lines)
        callbacks = Callbacks(
            health=self.health, metrics=dict, status=self.status, logs=self.read_logs,
            control=self.control if secret else None,
        )  # fmt: skip
        self.contract = Contract(
            callbacks, secret=secret.encode() if secret else None, now=time.time,
            version=__version__, service_id=replica_id,
        )  # fmt: skip

    def mount(self, app: web.Application) -> None:
        # /metrics: orch's telemetry serves it on the same app, in both formats.
        self.contract.mount(app, control=self.contract.auth is not None, metrics=False)

    def start(self) -> None:
        logging.getLogger().addHandler(self.logs)

    def stop(self) -> None:
        logging.getLogger().removeHandler(self.logs)

    async def health(self) -> Health:
        checks: dict[str, list[Check]] = {}
        for name, check in self._ready.items():
            problem = await run_check(check)
            if problem is None:
                checks[name] = [Check("pass", component_type="component")]
            else:
                checks[name] = [Check("fail", problem, component_type="component")]
        # The database just failed its check: asking it the time would only add a wait.
        store_down = checks.get("store", [Check("pass")])[0].status == "fail"
        skew = None if store_down else await self._clock_skew()
        if skew is not None:
            checks["clock:skew"] = [skew]
        return Health.from_checks(checks)

    async def _clock_skew(self) -> Check | None:
        """The database's clock minus this host's, in seconds (None: no database answer,
        which the store check already reports)."""
        try:
            before = self._clock.now()
            # Bounded and never cancelled: a database that stops answering must not hang
            # /health (storage.postgres_connect.within); the store check says why.
            db = await within(SKEW_READ_TIMEOUT_S, self._store.db_now())
            after = self._clock.now()
        except Exception:
            return None
        skew = (db - (before + (after - before) / 2)).total_seconds()  # mid-round-trip
        if abs(skew) <= SKEW_WARN_S:
            return Check("pass", component_type="system", observed_value=round(skew, 3),
                         observed_unit="s")  # fmt: skip
        where = "behind" if skew > 0 else "ahead of"
        message = (f"this host's clock is {abs(skew):.0f} s {where} the database's;"
                   " fix its time sync (leases and budgets use the database clock)")  # fmt: skip
        return Check("warn", message, component_type="system", observed_value=round(skew, 3),
                     observed_unit="s")  # fmt: skip

    async def status(self) -> dict[str, Any]:
        pending = await self._store.slack_rows(state="pending", limit=QUEUE_DEPTH_CAP)
        return {
            "state": "paused" if self._controls.paused() else "running",
            "queue_depth": len(pending),
            "uptime_s": round(self._clock.monotonic() - self._started, 3),
            "version": __version__,
            "pid": os.getpid(),
            "replica": self._replica_id,
            "orchestrator": self._orchestrator,
            "projects": self._controls.polled(),
        }

    def read_logs(self, query: LogQuery) -> list[LogEntry]:
        return self.logs.buffer.query(query)

    async def control(self, request: ControlRequest) -> dict[str, Any]:
        controls = self._controls
        if request.action == "pause":
            await controls.pause()
        elif request.action == "resume":
            await controls.resume()
        elif request.action == "restart":
            controls.restart()  # the answer goes out; the command then stops and exits
            return {"exit_code": EXIT_RESTART}
        elif request.action == "clear_cache":
            return {"cleared": controls.clear_cache()}
        return {"state": "paused" if controls.paused() else "running"}
