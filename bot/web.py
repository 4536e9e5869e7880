"""orch's own aiohttp web app: liveness, readiness, and the routes other parts mount
(the Slack app's POST /slack/events; later the dashboard and the API)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping

from aiohttp import web

from bot import __version__
from storage.base import Store

HealthFn = Callable[[], dict[str, object]]
# A readiness check answers None when its part is up, else a short reason it is not.
ReadyCheck = Callable[[], Awaitable[str | None]]
CHECK_TIMEOUT = 2.0


def make_web_app(
    health: HealthFn,
    *,
    ready: Mapping[str, ReadyCheck] | None = None,
    routes: Iterable[web.AbstractRouteDef] = (),
) -> web.Application:
    app = web.Application(client_max_size=1 << 20)
    checks = dict(ready or {})

    async def healthz(_request: web.Request) -> web.Response:
        # Liveness only: the process and its loop answer. Dependencies are /readyz's job,
        # so a Slack or database outage never gets orch restarted by its supervisor.
        body = {"status": "pass", "version": __version__, **health()}
        return web.json_response(body, content_type="application/health+json")

    async def readyz(_request: web.Request) -> web.Response:
        names = list(checks)
        results = await asyncio.gather(*(run_check(checks[n]) for n in names))
        down = {n: r for n, r in zip(names, results, strict=True) if r is not None}
        body: dict[str, object] = {
            "status": "fail" if down else "pass",
            "version": __version__,
            "checks": {n: down.get(n, "up") for n in names},
        }
        return web.json_response(
            body, status=503 if down else 200, content_type="application/health+json"
        )

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_routes(list(routes))
    return app


async def run_check(check: ReadyCheck) -> str | None:
    """None when the part is up, else why not (a timeout or an error is a reason)."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            return await check()
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT:g}s"
    except Exception as exc:  # a failing check is a "down", never a 500
        return type(exc).__name__


def store_ready(store: Store) -> ReadyCheck:
    """The store answers a cheap indexed read."""

    async def check() -> str | None:
        await store.list_incidents(open_only=True, limit=1)
        return None

    return check


class WebServer:
    """Runs an aiohttp app on host:port; port 0 picks a free one (see ``port``)."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        self._host = host
        self._port = port
        self.port = port

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        # With port 0 the OS picks one; the runner knows which address it bound.
        for address in self._runner.addresses:
            self.port = int(address[1])
            break

    async def stop(self) -> None:
        await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"
