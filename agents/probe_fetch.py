"""One bounded GET for the probe client.

``fetch`` either returns the whole answer or raises ``ProbeError`` whose text is the
finished, human-readable reason (``GET /health: connection refused``). Every way a
request can go wrong is turned into such a reason here, so the verdict code above it
only deals with answers that arrived.

Bounds: the request shares one deadline with the rest of its probe (``asyncio.timeout_at``
covers connecting, the headers and every body chunk, so a body that trickles in a byte
at a time still ends at the deadline); the body is read chunk by chunk and abandoned as
soon as it passes ``MAX_BODY``; redirects are never followed.
"""

from __future__ import annotations

import asyncio
import errno
import time
from dataclasses import dataclass
from functools import lru_cache

import aiohttp
from yarl import URL

from agents.address_guard import AddressRefused

MAX_BODY = 1 << 20  # 1 MiB: far above any health document, far below a memory problem


class ProbeError(Exception):
    """A request that produced no usable answer; ``str()`` is the full reason."""

    def __init__(self, reason: str, latency_ms: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.latency_ms = latency_ms


@dataclass(frozen=True, slots=True)
class Target:
    url: URL
    label: str  # "GET /health": the prefix of every reason about this request


@dataclass(frozen=True, slots=True)
class Answer:
    label: str
    status: int
    content_type: str  # lower-case media type without parameters, "" when absent
    charset: str | None
    location: str | None  # the Location header, for the "redirect not followed" reason
    body: bytes
    latency_ms: float  # from sending the request to the last body byte


# Parsing a URL costs tens of microseconds; probes repeat the same URLs forever.  Sized
# for three per project of a fleet of many thousands: at 4,096 a 5,000-project fleet
# missed on every probe (measured: 7 % of orch's CPU, docs/benchmarks.md).
@lru_cache(maxsize=1 << 16)
def target(url: str) -> Target:
    parsed = URL(url)
    return Target(parsed, f"GET {parsed.raw_path_qs or '/'}")


async def fetch(
    session: aiohttp.ClientSession,
    where: Target,
    headers: dict[str, str] | None,
    deadline: float,
    timeout: float,
) -> Answer:
    """GET ``where`` before ``deadline`` (loop time); ``timeout`` is only for the reason."""
    started = time.perf_counter()
    received = -1  # body bytes so far; -1 until the status line and headers are in
    try:
        async with (
            asyncio.timeout_at(deadline),
            session.get(where.url, headers=headers, allow_redirects=False) as resp,
        ):
            received = 0
            length = resp.content_length
            if length is not None and length > MAX_BODY:
                # Refuse before reading: leaving the body unread makes aiohttp drop the
                # connection instead of returning it to the pool half-read.
                raise _TooLarge(f"answer larger than 1 MiB (Content-Length {length})")
            chunks: list[bytes] = []
            content = resp.content
            while chunk := await content.readany():
                received += len(chunk)
                if received > MAX_BODY:
                    raise _TooLarge("answer larger than 1 MiB, cut off")
                chunks.append(chunk)
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            return Answer(
                where.label,
                resp.status,
                resp.content_type if "Content-Type" in resp.headers else "",
                resp.charset,
                resp.headers.get("Location"),
                body,
                (time.perf_counter() - started) * 1000.0,
            )
    except Exception as exc:  # every failure becomes a reason; CancelledError passes
        reason = _describe(exc, received, timeout)
        raise ProbeError(
            f"{where.label}: {reason}", (time.perf_counter() - started) * 1000.0
        ) from exc


class _TooLarge(Exception):
    pass


def _describe(exc: Exception, received: int, timeout: float) -> str:
    if isinstance(exc, _TooLarge):
        return str(exc)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return f"timed out ({exc or 'client session timeout'})"  # the session's own limits
    if isinstance(exc, TimeoutError):
        if received < 0:
            return f"no answer within {timeout}s"
        return f"answer not complete within {timeout}s ({received} bytes received)"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _connect_reason(exc)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        if received < 0:
            return "connection closed without an answer"
        return f"connection closed mid-answer ({received} bytes received)"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"broken answer body ({exc})"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"invalid HTTP answer ({exc.message})"
    if isinstance(exc, aiohttp.InvalidURL):
        return f"invalid URL {exc.url}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"connection error ({exc.strerror})"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _connect_reason(exc: aiohttp.ClientConnectorError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        if isinstance(exc.os_error, AddressRefused):  # resolved, but not somewhere allowed
            return str(exc.os_error)
        return f"cannot resolve host {exc.host}"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate rejected ({exc.certificate_error})"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS error ({exc.os_error})"
    err = exc.os_error
    if err.errno == errno.ECONNREFUSED:
        return "connection refused"
    return f"cannot connect ({err.strerror or err})"
