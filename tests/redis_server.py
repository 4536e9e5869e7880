"""A throwaway ``redis-server`` for tests that stop, kill or restart Redis.

The shared service must never be stopped (other tests and engineers use it), so these
tests run their own server on a free loopback port, without persistence, so that a
restart comes back empty exactly like a production Redis that lost its memory.  Use it
as an async context manager: the process is always stopped and reaped on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from types import TracebackType

import pytest


def free_port() -> int:
    # ``--port 0`` is not valid for redis-server: let the kernel pick one and hand it on.
    # Another process could take it in between; on loopback in a test run that is rare.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(self, port: int | None = None, *, ready_timeout: float = 10.0) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:  # like tests.services: CI must not go green by skipping
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail("CI=true and redis-server is not on PATH", pytrace=False)
            pytest.skip("redis-server is not on PATH")
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._ready_timeout = ready_timeout
        self._dir = tempfile.TemporaryDirectory(prefix="orch-redis-")
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        """Start on ``self.port`` (the same port on every restart) and wait until it
        answers PING."""
        if self.running:
            return
        assert self.binary is not None
        self._proc = await asyncio.create_subprocess_exec(
            self.binary,
            "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no",  # a restart comes back empty
            "--dir", self._dir.name, "--protected-mode", "no",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        await self._wait_ready()

    async def stop(self, *, kill: bool = False) -> None:
        """Terminate (SIGTERM) or kill (SIGKILL) the server and reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # it died on its own
                if kill:
                    proc.kill()
                else:
                    proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def _wait_ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._ready_timeout
        while loop.time() < deadline:
            if self._proc is not None and self._proc.returncode is not None:
                raise RuntimeError(f"redis-server exited with {self._proc.returncode}")
            if await asyncio.to_thread(_pings, self.port):
                return
            await asyncio.sleep(0.01)
        raise TimeoutError(f"redis-server on port {self.port} did not answer in time")

    async def __aenter__(self) -> RedisServer:
        try:
            await self.start()
        except BaseException:
            await self.stop(kill=True)
            self._dir.cleanup()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.stop(kill=True)
        finally:
            self._dir.cleanup()


def _pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False
