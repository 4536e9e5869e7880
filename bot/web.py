"""orch's own aiohttp web app. Later issues mount Slack, the dashboard and the API here."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from bot import __version__

HealthFn = Callable[[], dict[str, object]]


def make_web_app(health: HealthFn) -> web.Application:
    app = web.Application(client_max_size=1 << 20)

    async def healthz(_request: web.Request) -> web.Response:
        # Liveness only: the process and its loop answer. Readiness comes with Slack.
        body = {"status": "pass", "version": __version__, **health()}
        return web.json_response(body, content_type="application/health+json")

    app.router.add_get("/healthz", healthz)
    return app


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
