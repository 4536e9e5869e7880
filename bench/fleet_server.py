"""A simulated fleet: many healthy contract endpoints, one tiny aiohttp app per port.

Run as a child of the bench (``python -m bench.fleet_server --count 500``): it binds
``count`` ephemeral ports on 127.0.0.1, prints one JSON line ``{"ports": [...],
"control": port}`` once all of them accept connections, and serves until its stdin
closes (the parent exited or closed the pipe), SIGTERM or SIGINT arrives, or
``--max-seconds`` pass — so it never outlives the bench. Before it exits it prints
``{"cpu_s": ..., "peak_rss_mb": ...}``.

A port per project, as a real fleet has, so orch keeps one keep-alive connection per
project as it would in production (one port with many paths would let a handful of
pooled connections serve the whole fleet and flatter the figures).

Every answer is healthy and well under orch's default thresholds, until the driver
injects a fault through the control port: ``POST /fault {"ports": [...], "fail": true}``
makes those ports' /health answer ``fail`` (503).  ``GET /seen`` returns, per port, the
wall time of its last /health request, so the driver can tell when a project was polled.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import signal
import socket
import time
from typing import Any

from aiohttp import web

from bench.proc import peak_rss_mb, raise_fd_limit, stdin_closed

HEALTH = {"status": "pass", "version": "bench", "checks": {}, "output": ""}
METRICS = {
    "cpu_percent": 12.5,
    "memory_percent": 40.0,
    "error_rate": 0.001,
    "requests_per_second": 5.0,
    "latency_p95_ms": 20.0,
}
_STARTED = time.monotonic()
FAILING: set[int] = set()  # ports whose /health answers fail
SEEN: dict[int, float] = {}  # port -> wall time of its last /health request
# Every POST /control that reached a port, before the kit's idempotency memory answers a
# replay: (port, idempotency key, action).  A key seen twice is an action sent twice.
CONTROLS: list[tuple[int, str, str]] = []


def _status() -> dict[str, Any]:
    return {
        "state": "running",
        "queue_depth": 0,
        "uptime_s": round(time.monotonic() - _STARTED, 1),
        "version": "bench",
    }


def _kit_app(port: int) -> web.Application | None:
    """An app with the contract served by orch_kit, or None when the kit is not there."""
    try:
        from orch_kit import Callbacks, Health, mount_contract
    except ImportError:
        return None

    def health() -> Health:
        SEEN[port] = time.time()
        return Health("fail", output="injected fault") if port in FAILING else Health("pass")

    @web.middleware
    async def count_controls(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method == "POST" and request.path == "/control":
            with contextlib.suppress(ValueError):
                body = await request.json()  # read once; aiohttp keeps it for the handler
                CONTROLS.append((port, str(body.get("idempotency_key")), str(body.get("action"))))
        return await handler(request)

    app = web.Application(middlewares=[count_controls])
    mount_contract(
        app,
        Callbacks(
            health=health,
            metrics=lambda: METRICS,
            status=_status,
            logs=lambda _query: [],
            control=lambda _request: None,
        ),
        secret=b"orch-bench-secret",
        version="bench",
    )
    return app


# The fallback: the same JSON shapes from prebuilt bytes (DESIGN §3).
_HEALTH_BODY = json.dumps(HEALTH).encode()
_FAIL_BODY = json.dumps({**HEALTH, "status": "fail", "output": "injected fault"}).encode()
_METRICS_BODY = json.dumps(METRICS).encode()


def _health_handler(port: int) -> Any:
    async def health(_request: web.Request) -> web.Response:
        SEEN[port] = time.time()
        if port in FAILING:
            return web.Response(body=_FAIL_BODY, status=503, content_type="application/health+json")
        return web.Response(body=_HEALTH_BODY, content_type="application/health+json")

    return health


async def _metrics(_request: web.Request) -> web.Response:
    return web.Response(body=_METRICS_BODY, content_type="application/json")


async def _status_handler(_request: web.Request) -> web.Response:
    return web.json_response(_status())


async def _logs(_request: web.Request) -> web.Response:
    return web.json_response({"entries": []})


async def _control(_request: web.Request) -> web.Response:
    return web.json_response({"error": "unsigned"}, status=401)


def _plain_app(port: int) -> web.Application:
    app = web.Application()
    app.router.add_get("/health", _health_handler(port))
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/status", _status_handler)
    app.router.add_get("/logs", _logs)
    app.router.add_post("/control", _control)
    return app


def make_app(port: int, use_kit: bool = True) -> tuple[web.Application, str]:
    """A fresh contract app for ``port`` and which handlers serve it (``orch_kit`` or
    ``plain``)."""
    app = _kit_app(port) if use_kit else None
    return (app, "orch_kit") if app is not None else (_plain_app(port), "plain")


async def _fault(request: web.Request) -> web.Response:
    body = await request.json()
    ports = {int(p) for p in body["ports"]}
    if body.get("fail", True):
        FAILING.update(ports)
    else:
        FAILING.difference_update(ports)
    return web.json_response({"failing": len(FAILING)})


async def _seen(_request: web.Request) -> web.Response:
    return web.json_response({str(port): at for port, at in SEEN.items()})


async def _controls(_request: web.Request) -> web.Response:
    return web.json_response(CONTROLS)


def _control_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/fault", _fault)
    app.router.add_get("/seen", _seen)
    app.router.add_get("/controls", _controls)
    return app


def _bind() -> tuple[socket.socket, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock, int(sock.getsockname()[1])


async def _serve_on(
    app: web.Application, sock: socket.socket, runners: list[web.AppRunner]
) -> None:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    runners.append(runner)
    await web.SockSite(runner, sock, backlog=1024).start()


async def serve(count: int, max_seconds: float, use_kit: bool) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runners: list[web.AppRunner] = []
    ports: list[int] = []
    kind = "none"
    try:
        for _ in range(count):
            sock, port = _bind()
            ports.append(port)
            app, kind = make_app(port, use_kit)
            await _serve_on(app, sock, runners)
        sock, control = _bind()
        await _serve_on(_control_app(), sock, runners)
        print(json.dumps({"ports": ports, "handlers": kind, "control": control}), flush=True)
        watchers = [
            asyncio.create_task(stop.wait()),
            asyncio.create_task(stdin_closed()),
            asyncio.create_task(asyncio.sleep(max_seconds)),
        ]
        await asyncio.wait(watchers, return_when=asyncio.FIRST_COMPLETED)
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
    finally:
        for runner in reversed(runners):
            with contextlib.suppress(Exception):
                await runner.cleanup()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        with contextlib.suppress(BrokenPipeError, ValueError):
            print(
                json.dumps(
                    {"cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": peak_rss_mb()}
                ),
                flush=True,
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_server")
    parser.add_argument("--count", type=int, required=True, help="ports (apps) to serve")
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="hard stop")
    parser.add_argument("--plain", action="store_true", help="do not use orch_kit")
    args = parser.parse_args(argv)
    raise_fd_limit()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.count, args.max_seconds, not args.plain))


if __name__ == "__main__":
    main()
