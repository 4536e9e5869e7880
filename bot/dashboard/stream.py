"""``GET /api/v1/stream``: every bus event, as server-sent events, to connected browsers.

One bus subscription per replica (role ``dashboard:<replica_id>``: each replica sees every
event) fans out to the clients connected to that replica, each through its own bounded
queue.  The bus handler never waits on a client: a client whose queue is full is dropped
(its stream ends; the browser's ``EventSource`` reconnects and the page refetches), so a
slow or stalled browser never holds the bus up.  Events carry no ``id:``: a reconnecting
client refetches instead of asking for what it missed (``Last-Event-ID`` is not used).
A comment line every ``heartbeat_s`` keeps proxies from closing an idle stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Final

from aiohttp import web

from agents.bus import EventBus
from agents.events import Event
from bot.api import shapes
from bot.api.errors import jsonable

log = logging.getLogger(__name__)

QUEUE_SIZE: Final = 256  # events a client may lag behind before it is dropped
HEARTBEAT_S: Final = 15.0
_END: Final = None  # the queue's end-of-stream marker


class StreamClient:
    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=size)
        self.dropped = False


class StreamHub:
    """Connected clients and the fan-out to them."""

    def __init__(self, *, queue_size: int = QUEUE_SIZE, heartbeat_s: float = HEARTBEAT_S) -> None:
        self._size = queue_size
        self.heartbeat_s = heartbeat_s
        self._clients: set[StreamClient] = set()
        self._closed = False
        self.dropped = 0  # clients dropped for lagging, since start

    def register(self, bus: EventBus, role: str) -> None:
        bus.subscribe(role, self.publish)

    @property
    def clients(self) -> int:
        return len(self._clients)

    def connect(self) -> StreamClient:
        client = StreamClient(self._size)
        if self._closed:
            client.queue.put_nowait(_END)
        else:
            self._clients.add(client)
        return client

    def disconnect(self, client: StreamClient) -> None:
        self._clients.discard(client)

    async def publish(self, event: Event) -> None:
        """The bus handler: queue ``event`` for every client, never waiting."""
        if not self._clients:
            return
        data = json.dumps(jsonable(shapes.event(event)), ensure_ascii=False, allow_nan=False,
                          separators=(",", ":"))  # fmt: skip
        frame = b"".join(b"data: " + line.encode() + b"\n" for line in data.split("\n")) + b"\n"
        for client in list(self._clients):
            try:
                client.queue.put_nowait(frame)
            except asyncio.QueueFull:
                self._drop(client)

    def _drop(self, client: StreamClient) -> None:
        self._clients.discard(client)
        client.dropped = True
        self.dropped += 1
        while not client.queue.empty():  # make room for the end marker
            client.queue.get_nowait()
        client.queue.put_nowait(_END)
        log.info("dashboard stream: a client fell %d events behind and was dropped", self._size)

    def close(self) -> None:
        """End every stream (orch is stopping); later connections end at once."""
        self._closed = True
        for client in list(self._clients):
            self._clients.discard(client)
            while not client.queue.empty():
                client.queue.get_nowait()
            client.queue.put_nowait(_END)

    async def serve(self, request: web.Request) -> web.StreamResponse:
        """Stream to one client until it goes, lags too far, or orch stops."""
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        })  # fmt: skip
        client = self.connect()
        try:
            await response.prepare(request)
            await response.write(b"retry: 2000\n: connected\n\n")
            while True:
                try:
                    frame = await asyncio.wait_for(client.queue.get(), self.heartbeat_s)
                except TimeoutError:
                    frame = b": heartbeat\n\n"
                if frame is _END:
                    break
                await response.write(frame)
        except ConnectionError:
            pass  # the client went away (a write to a closed transport)
        finally:
            self.disconnect(client)
        return response
