"""One listening port that can be closed and reopened on the same port number.

Closing uses ``AppRunner.cleanup``, which stops the listening socket *and* drops open
keep-alive connections, so a client with a pooled connection sees the crash too.  Each
start builds a fresh app from the factory: an aiohttp app cannot be started twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

# Handlers still running at close get this long before they are cancelled.  Services
# release their hung requests before closing, so this is only a backstop.
SHUTDOWN_TIMEOUT_S = 1.0


class Listener:
    def __init__(self, make_app: Callable[[], web.Application], host: str, port: int) -> None:
        self._make_app = make_app
        self.host = host
        self.port = port  # 0 until the first start picks a free port
        self._runner: web.AppRunner | None = None
        # Crash and restart may be requested back to back; the lock keeps them in order.
        self._lock = asyncio.Lock()

    @property
    def listening(self) -> bool:
        return self._runner is not None

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("not started yet: the port is chosen at the first start")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        async with self._lock:
            await self._start()

    async def _start(self) -> None:
        if self._runner is not None:
            return
        runner = web.AppRunner(
            self._make_app(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        if not self.port:
            # Keep the ephemeral port, so a crash and restart come back where clients look.
            self.port = int(runner.addresses[0][1])
        self._runner = runner

    async def stop(self) -> None:
        async with self._lock:
            runner, self._runner = self._runner, None
            if runner is not None:
                await runner.cleanup()
