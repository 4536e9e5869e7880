"""A lean keep-alive HTTP/1.1 client for the probe's GETs (http and https).

At 5,000 projects every 10 s most of orch's CPU went into aiohttp's client machinery
(docs/benchmarks.md).  A probe needs far less: write a request built once per target,
read a status line, a few headers and a small body.  ``LeanHttp.get`` does that on an
``asyncio.Protocol`` with a small pool of idle keep-alive connections per (host, port,
TLS or not).  TLS is the event loop's (``create_connection(ssl=...)``) with a verifying
context like aiohttp's default: system CAs, host name checked, ALPN http/1.1.

Guarantees (the probe's, agents.probe_fetch):
- One deadline for everything: resolving, connecting, the head and every body byte, so a
  slow drip ends at the deadline.  Connecting runs under ``asyncio.timeout_at``; reading
  is watched by one periodic check for all connections in use (every ``DEADLINE_TICK_S``,
  so a request ends at most that much after its deadline), because a timer per request
  was a tenth of the client's CPU at 5,000 projects.
- The body is capped (``max_body``): a larger Content-Length is refused before reading,
  a longer body is cut off as it arrives.
- The address guard: host names are resolved by the given resolver (the SSRF guard,
  agents.address_guard.GuardedResolver) and the socket connects to exactly an address
  it returned; address literals are checked against the always-refused ranges.
- A connection is reused only after a complete, well-framed answer the server did not
  mark ``Connection: close``; one that failed, was cancelled, was closed by the server,
  or sent bytes while idle is closed and forgotten.  A request on a reused connection
  that the server closed before answering is retried once on a fresh connection (the
  server's idle timeout raced us; a GET is safe to repeat).

Anything unusual (user info in the URL, other schemes) stays on aiohttp: see ``handles``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Sequence
from ipaddress import ip_address
from typing import Final

from aiohttp.abc import AbstractResolver
from yarl import URL

from agents.address_guard import AddressRefused, GuardedResolver, refusal
from agents.lean_http_conn import Closed, Connection, Expired, Key, Unanswered
from agents.lean_http_parse import Head

_MAX_IDLE_PER_HOST: Final = 8
Timed = tuple[Head, bytes, float]  # an answer, and when it was complete (perf_counter)
DEADLINE_TICK_S: Final = 0.02


class Unresolvable(Exception):
    def __init__(self, host: str) -> None:
        super().__init__(host)
        self.host = host


class TlsFailed(Exception):
    """The TLS handshake failed (``error`` says why: a certificate, a protocol)."""

    def __init__(self, error: ssl.SSLError) -> None:
        super().__init__(error)
        self.error = error


class ConnectFailed(Exception):
    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


class LeanHttp:
    """Plain-http GETs over pooled keep-alive connections (see the module docstring).

    ``resolver``: resolves host names, and is the address guard (default: a
    GuardedResolver that allows no private addresses except for ``localhost``).
    ``keepalive``: seconds an idle connection is kept.  ``reuse=False``: a connection
    per request (as aiohttp's ``force_close``).  ``dns_ttl``: seconds a lookup is reused
    for new connections (None: every new connection resolves again).
    """

    def __init__(
        self,
        resolver: AbstractResolver | None = None,
        *,
        keepalive: float = 45.0,
        reuse: bool = True,
        dns_ttl: float | None = 300.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._ssl = ssl_context if ssl_context is not None else _verifying_context()
        self._resolver = resolver if resolver is not None else GuardedResolver(lambda _h: False)
        self._keepalive = keepalive
        self._reuse = reuse
        self._dns_ttl = dns_ttl
        self._idle: dict[Key, list[Connection]] = {}
        self._dns: dict[tuple[str, int], tuple[float, list[tuple[int, str]]]] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._reading: set[Connection] = set()  # in use, watched for their deadlines
        self._tick: asyncio.TimerHandle | None = None
        self.closed = False
        self.connections_opened = 0  # for tests and the bench: how often reuse failed
        self._unpipelined: set[Key] = set()  # where a pipeline once went unanswered

    @staticmethod
    def handles(url: URL) -> bool:
        """Whether ``url`` is for this client: http or https, a host, no user info."""
        return (
            url.scheme in ("http", "https")
            and bool(url.raw_host)
            and url.raw_user is None
            and url.raw_password is None
        )

    async def get(
        self, key: Key, request: bytes, deadline: float, max_body: int
    ) -> tuple[Head, bytes]:
        """Send ``request`` to ``key`` and read the answer, all before ``deadline`` (loop
        time).  Raises Closed, Expired, ConnectFailed, Unresolvable, AddressRefused,
        InvalidHead, BrokenBody or AnswerTooLarge."""
        if self.closed:
            raise RuntimeError("the probe HTTP client is closed")
        conn = self._take_idle(key)
        reused = conn is not None
        while True:
            if conn is None:
                conn = await self._connect_before(key, deadline)
            self._watch(conn, deadline)
            try:
                head, body = await conn.answer(request, max_body)
                break
            except Closed as exc:
                conn.close()
                if not reused or exc.received >= 0 or conn.buf:
                    raise
                # A reused connection closed before a byte of the answer: the server's
                # idle timeout won the race.  Once more on a fresh connection.
            except BaseException:
                conn.close()
                raise
            finally:
                self._reading.discard(conn)
            reused, conn = False, None
        if head.keep_alive:
            self._release(key, conn)
        else:
            conn.close()
        return head, body

    async def get_all(
        self, key: Key, requests: Sequence[bytes], deadline: float, max_body: int
    ) -> list[Timed | Exception]:
        """Several GETs to one ``key``, pipelined (RFC 9112 §9.3.2): written at once on one
        connection, their answers read in order, each with the ``perf_counter`` time it
        was complete.  One write and one connection instead of one per request (a
        contract probe's /health, /metrics and /status).

        Returns an answer or the exception it ended with, per request, in order.  A
        server may close the connection after any answer (``Connection: close``, an
        HTTP/1.0 server): what it left unanswered goes on a fresh connection.  After a
        broken answer, the rest get one fresh connection too.  When the deadline passes,
        a request that was first on its connection gets ``Expired``, and any queued
        behind another ``Unanswered`` (the one ahead may have kept it waiting: it is not
        judged); since a server that ignores pipelined requests looks just the same,
        ``pipelines(key)`` is False from then on (the caller then sends them
        concurrently, one connection each, as before).  Everything else is as in
        ``get``."""
        if self.closed:
            raise RuntimeError("the probe HTTP client is closed")
        answers: list[Timed | Exception] = []
        pending = list(requests)
        conn = self._take_idle(key)
        reused, spare_connections = conn is not None, 1
        while pending:
            if conn is None:
                try:
                    conn = await self._connect_before(key, deadline)
                except Exception as exc:
                    answers.extend([exc] * len(pending))
                    return answers
            self._watch(conn, deadline)
            conn.send(b"".join(pending))
            done, error, keep = 0, None, True
            try:
                while done < len(pending) and keep:
                    head, body = await conn.answer(None, max_body)
                    answers.append((head, body, time.perf_counter()))
                    done += 1
                    keep = head.keep_alive
            except Exception as exc:
                error = exc
            except BaseException:
                conn.close()
                raise
            finally:
                self._reading.discard(conn)
            del pending[:done]
            if error is None and keep and not conn.buf:
                break  # all answered, and the connection can carry more
            partial = bool(conn.buf)  # bytes of an answer not yet complete
            conn.close()
            conn = None
            if error is None:  # the server closed after an answer: the rest go anew
                continue
            stale = isinstance(error, Closed) and error.received < 0 and not partial
            if stale and done == 0 and reused:
                reused = False  # an idle connection the server had closed: once more
                continue
            if isinstance(error, Expired):
                # Only a request nothing was ahead of on its connection is judged by the
                # timeout; one queued behind another may have been kept waiting by it.
                if len(requests) > 1:
                    self._unpipelined.add(key)
                if not done:
                    answers.append(error)
                    del pending[:1]
                answers.extend(Unanswered() for _ in pending)
                return answers
            answers.append(error)  # a broken answer: the request it answered failed
            del pending[:1]
            if not spare_connections:
                answers.extend([error] * len(pending))
                return answers
            spare_connections -= 1
        if conn is not None:
            self._release(key, conn)
        return answers

    def pipelines(self, key: Key) -> bool:
        """Whether ``get_all`` is worth using for ``key`` (see there)."""
        return key not in self._unpipelined

    def _watch(self, conn: Connection, deadline: float) -> None:
        """Reading ``conn`` until ``deadline``: the periodic check expires it then."""
        conn.deadline = deadline
        conn.expired = False
        self._reading.add(conn)
        if self._tick is None:
            self._tick = conn.loop.call_later(DEADLINE_TICK_S, self._check_deadlines)

    def _release(self, key: Key, conn: Connection) -> None:
        """After a complete answer: back to the pool if it can carry another request."""
        if not conn.buf and not conn.closed and not conn.expired and self._reuse:
            self._park(key, conn)
        else:
            conn.close()

    async def _connect_before(self, key: Key, deadline: float) -> Connection:
        scope = asyncio.timeout_at(deadline)
        try:
            async with scope:
                return await self._connect(key)
        except TimeoutError:
            if scope.expired():
                raise Expired(-1) from None
            raise

    def _check_deadlines(self) -> None:
        self._tick = None
        reading = self._reading
        if not reading:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        for conn in [c for c in reading if c.closed or c.deadline <= now]:
            reading.discard(conn)
            if not conn.closed:  # a closed one's reader is woken already, and must
                conn.expire()  # see it closed (the end of its body, or "closed")
        if reading and not self.closed:
            self._tick = loop.call_later(DEADLINE_TICK_S, self._check_deadlines)

    # -- the pool ----------------------------------------------------------------------

    def idle_connections(self) -> int:
        """Idle keep-alive connections held now (for tests and telemetry)."""
        return sum(len(idle) for idle in self._idle.values())

    def _take_idle(self, key: Key) -> Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        oldest_ok = asyncio.get_running_loop().time() - self._keepalive
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.idle_since >= oldest_ok:
                conn.idle_since = -1.0
                return conn
            conn.idle_since = -1.0
            conn.close()
        return None

    def _park(self, key: Key, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        idle = self._idle.setdefault(key, [])
        if len(idle) >= _MAX_IDLE_PER_HOST:
            conn.close()
            return
        conn.idle_since = loop.time()
        idle.append(conn)
        if self._sweep is None:
            self._sweep = loop.call_later(max(1.0, self._keepalive / 2), self._expire_idle)

    def _forget(self, conn: Connection) -> None:
        if conn.idle_since < 0:
            return  # in use: its reader sees it closed
        idle = self._idle.get(conn.key)
        if idle is not None and conn in idle:
            idle.remove(conn)
            if not idle:
                del self._idle[conn.key]

    def _expire_idle(self) -> None:
        self._sweep = None
        oldest_ok = asyncio.get_running_loop().time() - self._keepalive
        for key in list(self._idle):
            idle = self._idle[key]
            keep = [c for c in idle if c.idle_since >= oldest_ok and not c.closed]
            stale = [c for c in idle if c.idle_since < oldest_ok or c.closed]
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
            for conn in stale:
                conn.idle_since = -1.0  # already out of the pool
                conn.close()
        if self._idle and not self.closed:
            loop = asyncio.get_running_loop()
            self._sweep = loop.call_later(max(1.0, self._keepalive / 2), self._expire_idle)

    async def close(self) -> None:
        """Close every idle connection; later calls of ``get`` raise RuntimeError."""
        self.closed = True
        for handle in (self._sweep, self._tick):
            if handle is not None:
                handle.cancel()
        self._sweep = self._tick = None
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.idle_since = -1.0
                conn.close()
        await self._resolver.close()

    # -- connecting --------------------------------------------------------------------

    async def _connect(self, key: Key) -> Connection:
        loop = asyncio.get_running_loop()
        host, port, tls = key
        last: OSError | None = None
        for family, address in await self._addresses(key):
            sock = socket.socket(family, socket.SOCK_STREAM)
            conn = Connection(self._forget, key)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await loop.sock_connect(sock, (address, port))
                await loop.create_connection(
                    conn.itself, sock=sock, ssl=self._ssl if tls else None,
                    server_hostname=host if tls else None,
                )  # fmt: skip
            except ssl.SSLError as exc:  # an OSError too: caught first
                sock.close()
                raise TlsFailed(exc) from exc
            except OSError as exc:  # refused, unreachable, reset during the handshake
                sock.close()
                last = exc
                continue
            except BaseException:
                sock.close()
                raise
            self.connections_opened += 1
            return conn
        raise ConnectFailed(last or OSError(f"no address for {host}"))

    async def _addresses(self, key: Key) -> list[tuple[int, str]]:
        host, port, _tls = key
        literal = _literal_family(host)
        if literal is not None:
            # aiohttp skips the resolver for literals too; the config refused the
            # always-refused ones at load, and this keeps refusing them here.
            why = refusal(host, private_ok=True)
            if why is not None:
                raise AddressRefused(why)
            return [(literal, host)]
        now = asyncio.get_running_loop().time()
        cached = self._dns.get((host, port))
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            found = await self._resolver.resolve(host, port, family=socket.AF_UNSPEC)
        except AddressRefused:
            raise
        except OSError as exc:
            raise Unresolvable(host) from exc
        addresses = [(int(r["family"]), str(r["host"])) for r in found]
        if self._dns_ttl is not None:
            if len(self._dns) > 65536:
                self._dns.clear()
            self._dns[(host, port)] = (now + self._dns_ttl, addresses)
        return addresses


def _literal_family(host: str) -> int | None:
    try:
        version = ip_address(host.split("%", 1)[0]).version
    except ValueError:
        return None
    return socket.AF_INET6 if version == 6 else socket.AF_INET


_VERIFYING: list[ssl.SSLContext] = []


def _verifying_context() -> ssl.SSLContext:
    """One verifying context per process, as aiohttp's default (loading the system CAs
    is slow: not once per client)."""
    if not _VERIFYING:
        context = ssl.create_default_context()
        context.set_alpn_protocols(["http/1.1"])
        _VERIFYING.append(context)
    return _VERIFYING[0]
