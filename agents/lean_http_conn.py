"""One keep-alive connection of the lean probe client (agents.lean_http): an
``asyncio.Protocol`` that buffers what arrives and reads one answer at a time from it.

It notices the server closing it (EOF or loss) at once and tells its pool to forget it;
bytes arriving while it is idle (nothing was asked) close it, since the next answer
would be out of step.  ``expire`` (called by the pool's deadline check when the
request's deadline passes) makes the reader raise ``Expired`` at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from agents.lean_http_parse import AnswerTooLarge, Chunked, Head, parse_head

Key = tuple[str, int, bool]  # (host as in the URL, port, TLS): where a connection goes


class Closed(Exception):
    """The server closed the connection before the answer was complete."""

    def __init__(self, received: int) -> None:
        super().__init__(received)
        self.received = received  # body bytes so far; -1 before the head was complete


class Expired(Exception):
    """The deadline passed; ``received`` as for ``Closed``."""

    def __init__(self, received: int) -> None:
        super().__init__(received)
        self.received = received


class Unanswered(Exception):
    """A pipelined request the server never answered although it answered an earlier one
    on the same connection: likely a server that does not take pipelined requests (the
    client sends it one request at a time from then on)."""


class Connection(asyncio.Protocol):
    """One TCP connection; the reading side of a single request at a time."""

    def __init__(self, forget: Callable[[Connection], None], key: Key) -> None:
        self._forget = forget
        self.key = key  # the pool's name for where it goes
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.closed = False
        self.idle_since = -1.0  # loop time it went idle; -1 while in use
        self.received = -1  # body bytes of the answer being read; -1 before its head
        self.deadline = 0.0  # loop time by which the answer being read must be in
        self.expired = False
        self._waiter: asyncio.Future[None] | None = None

    def itself(self) -> Connection:
        """The protocol factory for ``create_connection`` (the protocol exists already)."""
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.idle_since >= 0:  # nothing was asked: the connection is out of step
            self.close()
            return
        self.buf += data
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool:
        self._lost()
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost()

    def _lost(self) -> None:
        if self.closed:
            return
        self.closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._forget(self)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self._lost()

    def expire(self) -> None:
        """The deadline passed: the reader stops waiting (the caller closes us)."""
        self.expired = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _arrival(self) -> asyncio.Future[None]:
        """Done when more bytes arrive, the connection ends or the deadline passes.  A
        future rather than a coroutine: waking the reader then resumes one frame less."""
        self._waiter = waiter = self.loop.create_future()
        if self.closed or self.expired:
            waiter.set_result(None)
        return waiter

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def answer(self, request: bytes | None, max_body: int) -> tuple[Head, bytes]:
        """Send ``request`` (None: sent already, pipelined) and read its answer: the head,
        then the body.  One coroutine for all of it (this is the probe's hot path).
        Raises Closed, Expired, InvalidHead, BrokenBody or AnswerTooLarge."""
        if request is not None:
            assert self.transport is not None
            self.transport.write(request)
        self.received = -1
        buf = self.buf
        while True:
            head = parse_head(buf) if buf else None  # InvalidHead on garbage
            if head is None:
                if self.closed:
                    raise Closed(-1)
                await self._arrival()
                if self.expired:
                    raise Expired(-1)
            elif head.status >= 200:
                break
            # else an interim answer (100 Continue, 103 Early Hints): the next one
        self.received = 0
        if head.length is not None:
            need = head.length
            if need > max_body:
                raise AnswerTooLarge(need)  # refused unread
            while len(buf) < need:
                self.received = len(buf)
                if self.closed:
                    raise Closed(self.received)
                await self._arrival()
                if self.expired:
                    raise Expired(self.received)
            body = bytes(buf[:need]) if len(buf) != need else bytes(buf)
            del buf[:need]
            self.received = need
            return head, body
        if head.chunked:
            decoder, parts = Chunked(), list[bytes]()
            while True:
                self.received += decoder.feed(buf, parts)  # BrokenBody on bad framing
                if self.received > max_body:
                    raise AnswerTooLarge(None)
                if decoder.done:
                    return head, b"".join(parts)
                if self.closed:
                    raise Closed(self.received)
                await self._arrival()
                if self.expired:
                    raise Expired(self.received)
        while not self.closed:  # the body ends with the connection
            self.received = len(buf)
            if self.received > max_body:
                raise AnswerTooLarge(None)
            await self._arrival()
            if self.expired:
                raise Expired(self.received)
        self.received = len(buf)
        if self.received > max_body:
            raise AnswerTooLarge(None)
        body = bytes(buf)
        buf.clear()
        return head, body
