"""One simulated service: a worker port (the whole contract) and a supervisor port.

The supervisor port serves ``/control`` and the demo fault route and stays up when the
worker "crashes", as systemd or a process manager would, so a crash can be restarted.
Everything time-dependent reads the injected clock, so a FakeClock test can advance
minutes of behaviour without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from agents.clock import Clock, SystemClock
from demo.faults import FAULT_ROUTE, FAULTS, TRANSIENT_FAULTS
from demo.services.domain import Domain
from demo.services.fault_route import fault_route
from demo.services.listener import Listener
from demo.services.vitals import Vitals
from orch_kit import Callbacks, Contract, ControlRequest, Health, LogBuffer, LogEntry, LogQuery

log = logging.getLogger("demo.services")
TICK_S = 1.0  # one unit of domain work per second of clock time


class SimulatedService:
    def __init__(
        self,
        domain: Domain,
        *,
        secret: bytes,
        clock: Clock | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        control_host: str | None = None,
        control_port: int = 0,
        starting_s: float = 3.0,
    ) -> None:
        self.domain = domain
        self.name = domain.name
        self.clock: Clock = clock or SystemClock()
        self.starting_s = starting_s
        self.logs = LogBuffer(maxlen=5000, now=self.clock.now)
        self.vitals = Vitals(domain)
        self.restarts = 0
        self.control_calls: Counter[str] = Counter()  # performed actions (not replays)
        self.pid = 4000 + domain.rng.randint(100, 900)
        self._faults: set[str] = set()
        self._paused = False
        self._born = self._boot = self.clock.monotonic()
        self._starting_until = self._boot
        self._ready_logged = True
        self._leak_since = 0.0
        self._hang_gate = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        callbacks = Callbacks(
            health=self._health,
            metrics=self._metrics,
            status=self._status,
            logs=self._logs,
            control=self._control,
        )
        self.contract = Contract(
            callbacks,
            secret=secret,
            now=lambda: self.clock.now().timestamp(),
            version=domain.version,
            service_id=domain.name,
        )
        self.main = Listener(self._main_app, host, port)
        self.supervisor = Listener(self._supervisor_app, control_host or host, control_port)

    # observable state ---------------------------------------------------------------------

    @property
    def faults(self) -> set[str]:
        return set(self._faults)

    @property
    def state(self) -> str:
        """``crashed`` (only here: a crashed worker cannot answer), else the /status state."""
        if "crash" in self._faults:
            return "crashed"
        if self.clock.monotonic() < self._starting_until:
            return "starting"
        return "paused" if self._paused else "running"

    @property
    def url(self) -> str:
        return self.main.url

    @property
    def control_url(self) -> str:
        return self.supervisor.url

    def _t(self) -> float:
        return self.clock.monotonic() - self._born

    def _leaking_for(self) -> float | None:
        if "memory_leak" not in self._faults:
            return None
        return self.clock.monotonic() - self._leak_since

    def _log(self, level: str, message: str) -> None:
        self.logs.append(level, message)

    # lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._log("info", f"starting {self.name} v{self.domain.version} (pid {self.pid})")
        self._boot_lines()
        await self.supervisor.start()
        if "crash" not in self._faults:  # a fault injected before start holds
            await self.main.start()
        self._worker = asyncio.create_task(self._work(), name=f"{self.name}-worker")

    async def stop(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        await asyncio.gather(*self._pending, return_exceptions=True)
        self._release_hang()
        await self.main.stop()
        await self.supervisor.stop()

    async def _work(self) -> None:
        while True:
            await self.clock.sleep(TICK_S)
            self._tick()

    def _tick(self) -> None:
        if "crash" in self._faults or "hang" in self._faults:
            return  # a dead or wedged process does no work and writes nothing
        t, rng, db = self._t(), self.domain.rng, self.domain.database
        if "disk_full" in self._faults and rng.random() < 0.3:
            spool = f"{self.domain.data_dir}/spool/{rng.getrandbits(32):08x}.tmp"
            self._log("error", f"OSError: [Errno 28] No space left on device: '{spool}'")
        if "dependency_down" in self._faults:
            if rng.random() < 0.4:
                self._log("error", _db_refused(db.host, db.port))
            self.domain.idle(t, self._log, "dependency_down")
            return
        state = self.state
        if state == "starting":
            self.domain.idle(t, self._log, "starting")
            return
        if not self._ready_logged:
            self._ready_logged = True
            self._log("info", f"ready: {self.name} v{self.domain.version} pid {self.pid}")
        if state == "paused":
            self.domain.idle(t, self._log, "paused")
            return
        if "memory_leak" in self._faults and rng.random() < 0.15:
            rss = self.vitals.memory_percent(t, self._leaking_for()) * 81.92  # of 8 GiB
            self._log(
                "warning",
                f"gc: rss {rss:.0f} MiB after full collection, "
                f"response cache holds {rng.randint(40, 90)}k entries",
            )
        self.domain.work(t, self._log, "error_spike" in self._faults)

    def _boot_lines(self) -> None:
        db = self.domain.database
        self.domain.startup(self._log)
        if "dependency_down" in self._faults:
            self._log("error", _db_refused(db.host, db.port))
        else:
            self._log("info", f"connected to postgres {db.host}:{db.port}/{db.name} pool_size=10")
        if "disk_full" in self._faults:
            self._log("error", f"cannot write {self.domain.data_dir}/pid: No space left on device")

    # faults -------------------------------------------------------------------------------

    def inject(self, fault: str) -> asyncio.Future[None]:
        """Start a fault now.  ``faults`` changes at once; the returned future is done when
        the effect is in place (for ``crash``, the worker port closed).  Awaiting it is
        optional, so both ``svc.inject(f)`` and ``await svc.inject(f)`` work."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known faults: {', '.join(FAULTS)}")
        if fault in self._faults:
            return _done()
        log.info("%s: injecting %s", self.name, fault)
        self._faults.add(fault)
        db = self.domain.database
        if fault == "memory_leak":
            self._leak_since = self.clock.monotonic()
        elif fault == "crash":
            self._log("critical", f"worker pid {self.pid} exited on signal 11 (SIGSEGV)")
            self._release_hang()
            return self._in_background(self.main.stop())
        elif fault == "disk_full":
            spool = f"{self.domain.data_dir}/spool/batch.tmp"
            self._log("error", f"OSError: [Errno 28] No space left on device: '{spool}'")
        elif fault == "dependency_down":
            self._log("error", _db_refused(db.host, db.port))
        return _done()

    def clear(self, fault: str | None = None) -> asyncio.Future[None]:
        """Remove one fault (or all) as if the outside cause went away.  Clearing ``crash``
        respawns the worker without counting a restart.  Awaiting is optional, as for
        :meth:`inject`."""
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known faults: {', '.join(FAULTS)}")
        targets = set(self._faults) if fault is None else {fault} & self._faults
        if not targets:
            return _done()
        log.info("%s: clearing %s", self.name, ", ".join(sorted(targets)))
        self._faults -= targets
        db = self.domain.database
        if "hang" in targets:
            self._release_hang()
        if "dependency_down" in targets:
            self._log("info", f"reconnected to postgres {db.host}:{db.port}/{db.name}")
        if "disk_full" in targets:
            self._log("info", f"disk space recovered on {self.domain.data_dir} after log rotation")
        if "crash" in targets:
            return self._in_background(self._respawn())
        return _done()

    def _in_background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._pending.add(task)  # stop() waits for these; the set keeps them referenced
        task.add_done_callback(self._pending.discard)
        return task

    def _release_hang(self) -> None:
        # Wake every hung request (they answer 503) and arm a fresh gate for the next hang.
        self._hang_gate.set()
        self._hang_gate = asyncio.Event()

    # control ------------------------------------------------------------------------------

    async def restart(self) -> None:
        """What a supervisor restart does: transient faults go, outside ones stay."""
        self.restarts += 1
        if "hang" in self._faults:
            self._log("error", f"supervisor: worker pid {self.pid} unresponsive, sending SIGKILL")
        else:
            self._log("warning", f"supervisor: restarting worker pid {self.pid} on request")
        self._faults -= TRANSIENT_FAULTS
        self._release_hang()
        await self._respawn()

    async def _respawn(self) -> None:
        self.pid += self.domain.rng.randint(3, 40)
        self._paused = False
        self._boot = self.clock.monotonic()
        self._starting_until = self._boot + self.starting_s
        self._ready_logged = False
        self._log("info", f"starting {self.name} v{self.domain.version} (pid {self.pid})")
        self._boot_lines()
        await self.main.start()  # a no-op unless the worker had crashed

    async def _control(self, request: ControlRequest) -> dict[str, Any]:
        action = request.action
        self.control_calls[action] += 1
        if action == "restart":
            await self.restart()
            return {"pid": self.pid}
        if "crash" in self._faults:
            return {"note": "the worker is down; only restart has an effect"}
        if action == "clear_cache":
            freed = self.vitals.memory_percent(self._t(), self._leaking_for()) * 81.92 * 0.4
            self._faults.discard("memory_leak")  # the leak lived in the cache
            self._log("info", f"response cache cleared on request, freed {freed:.0f} MiB")
        elif action in ("pause", "resume"):
            self._paused = action == "pause"
            self._log("info", f"{'paused' if self._paused else 'resumed'} by operator request")
        return {"state": self.state}

    # the contract's callbacks -------------------------------------------------------------

    def _health(self) -> Health:
        return self.vitals.health(self._t(), self._faults, self._leaking_for())

    def _metrics(self) -> dict[str, float]:
        t, working = self._t(), self.state == "running" and "dependency_down" not in self._faults
        standard = self.vitals.metrics(t, self._faults, working, self._leaking_for())
        return {**standard, **self.domain.metrics(t, "error_spike" in self._faults)}

    def _status(self) -> dict[str, Any]:
        state = self.state
        return {
            "state": state,
            "uptime_s": round(self.clock.monotonic() - self._boot, 1),
            "version": self.domain.version,
            "pid": self.pid,
            **self.domain.status(),
        }

    def _logs(self, query: LogQuery) -> list[LogEntry]:
        return self.logs.query(query)

    # the two apps -------------------------------------------------------------------------

    @web.middleware
    async def _hang_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if "hang" in self._faults:
            await self._hang_gate.wait()  # set only by restart, clear, crash or stop
            # The wedged worker was killed: its clients see the connection drop, not an answer.
            if request.transport is not None:
                request.transport.abort()
            raise web.HTTPServiceUnavailable(text="worker killed while handling the request")
        response: web.StreamResponse = await handler(request)
        return response

    def _main_app(self) -> web.Application:
        app = web.Application(middlewares=[self._hang_middleware])
        self.contract.mount(app)
        return app

    def _supervisor_app(self) -> web.Application:
        app = web.Application()
        self.contract.mount_control(app)
        assert self.contract.auth is not None  # a secret is required in __init__
        app.router.add_post(FAULT_ROUTE, fault_route(self, self.contract.auth))
        return app


def _db_refused(host: str, port: int) -> str:
    return (
        f'psycopg.OperationalError: connection to server at "{host}", port {port} failed: '
        "Connection refused. Is the server running on that host and accepting TCP/IP connections?"
    )


def _done() -> asyncio.Future[None]:
    future = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future
