"""A TCP proxy in the test process that a test can cut and restore: a database "outage"
without touching the shared server.

``start`` listens on an ephemeral loopback port and forwards every connection to the
target.  ``cut`` closes every connection it carries (both sides, abortively, as a
crashed server or a dropped link would) and stops listening, so new connections are
refused; ``restore`` listens again on the same port.  ``stall`` is the nastier outage, a
black hole: connections stay open and new ones are accepted, but no byte goes through
either way (a dead link without resets); ``restore`` after it drops those connections, as
TCP eventually would, and forwards again.  ``accepted`` counts connections.
"""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self._target = (target_host, target_port)
        self._host = host
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.accepted = 0

    @property
    def is_cut(self) -> bool:
        return self._server is None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def cut(self) -> None:
        """Refuse new connections and drop every open one."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        for writer in list(self._writers):
            writer.transport.abort()
        links = list(self._links)
        for task in links:
            task.cancel()
        await asyncio.gather(*links, return_exceptions=True)

    def stall(self) -> None:
        """Keep every connection, forward nothing (until ``restore``)."""
        self._flowing.clear()

    async def restore(self) -> None:
        if not self._flowing.is_set():
            await self.cut()  # what was stuck in the black hole is lost
            self._flowing.set()
        if self._server is None:
            await self.start()  # the same port: the clients' URL does not change

    async def stop(self) -> None:
        await self.cut()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream = await asyncio.open_connection(*self._target)
            self._writers.add(upstream)
            await asyncio.gather(
                _pipe(reader, upstream, self._flowing), _pipe(up_reader, writer, self._flowing)
            )
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._links.discard(task)
            for side in (writer, upstream):
                if side is not None:
                    self._writers.discard(side)
                    side.transport.abort()


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flowing: asyncio.Event
) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            await flowing.wait()  # stalled: the bytes go nowhere, for now
            writer.write(data)
            await writer.drain()
    writer.transport.abort()  # one side ended: end the other (no half-open links)
