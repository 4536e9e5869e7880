"""A raw HTTP/1.1 server for the lean client's tests: it answers exactly the bytes a
test scripts, and counts connections and requests (tests/test_lean_http.py,
tests/test_lean_https.py)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from agents.lean_http import LeanHttp
from agents.probe_fetch import Answer, ProbeError, fetch, target

Reply = Callable[[int, bytes, asyncio.StreamWriter], Awaitable[bool]]  # True: keep open
Serve = Callable[[Reply], Awaitable["RawServer"]]
HEALTH = b'{"status": "pass"}'
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/health+json\r\nContent-Length: 18\r\n\r\n"


class RawServer:
    """Counts connections and requests; ``reply(n, request, writer)`` answers the n-th."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.connections = 0
        self.requests: list[bytes] = []
        self.release = asyncio.Event()  # set at teardown: drips and hangs end
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, tls: ssl.SSLContext | None = None) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        self.port = self._server.sockets[0].getsockname()[1]

    def url(self, path: str = "/health", host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(request)
                keep = await self.reply(len(self.requests), request, writer)
                await writer.drain()
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client hung up, as it may
        finally:
            writer.close()

    async def stop(self) -> None:
        self.release.set()
        for writer in self._writers:
            writer.close()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


class Client:
    def __init__(self, session: aiohttp.ClientSession, lean: LeanHttp) -> None:
        self.session, self.lean = session, lean

    async def get(self, url: str, timeout: float = 2.0) -> Answer:
        deadline = asyncio.get_running_loop().time() + timeout
        where = target(url)
        return await fetch(
            self.session, where, {"Accept": "application/json"}, deadline, timeout, self.lean
        )

    async def reason(self, url: str, timeout: float = 2.0) -> str:
        with pytest.raises(ProbeError) as caught:
            await self.get(url, timeout)
        return caught.value.reason


def replies(*answers: bytes, keep: bool = True) -> Reply:
    """Answer the n-th request with ``answers[n-1]`` (the last one repeats)."""

    async def reply(n: int, _request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(answers[min(n, len(answers)) - 1])
        return keep

    return reply


def hang_up_on(request: int) -> Reply:
    """Answer every request with a health document, except the ``request``-th: hang up on
    it without a word (a server's idle timeout racing the client's reuse)."""

    async def reply(n: int, _request: bytes, writer: asyncio.StreamWriter) -> bool:
        if n == request:
            return False
        writer.write(OK + HEALTH)
        return True

    return reply


@contextlib.asynccontextmanager
async def raw_servers() -> AsyncIterator[Serve]:
    """Start raw servers on demand (``await start(reply)``); all stopped at the end."""
    servers: list[RawServer] = []

    async def start(reply: Reply) -> RawServer:
        server = RawServer(reply)
        await server.start()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            await server.stop()
