"""One bounded GET for the probe client.

``fetch`` either returns the whole answer or raises ``ProbeError`` whose text is the
finished, human-readable reason (``GET /health: connection refused``). Every way a
request can go wrong is turned into such a reason here, so the verdict code above it
only deals with answers that arrived.

Two transports, one set of reasons: http and https targets go through the lean
keep-alive client (agents.lean_http) when the caller passes one, anything else (user
info in the URL) through the caller's aiohttp session.

Bounds: the request shares one deadline with the rest of its probe (``asyncio.timeout_at``
covers connecting, the headers and every body chunk, so a body that trickles in a byte
at a time still ends at the deadline); the body is read chunk by chunk and abandoned as
soon as it passes ``MAX_BODY``; redirects are never followed.
"""

from __future__ import annotations

import asyncio
import errno
import ssl
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

import aiohttp
from aiohttp.helpers import parse_content_type
from aiohttp.http import SERVER_SOFTWARE
from yarl import URL

from agents.address_guard import AddressRefused
from agents.lean_http import ConnectFailed, Expired, LeanHttp, TlsFailed, Unresolvable
from agents.lean_http_conn import Closed, Unanswered
from agents.lean_http_parse import AnswerTooLarge, BrokenBody, Head, InvalidHead, decode_body

MAX_BODY = 1 << 20  # 1 MiB: far above any health document, far below a memory problem


class ProbeError(Exception):
    """A request that produced no usable answer; ``str()`` is the full reason."""

    def __init__(self, reason: str, latency_ms: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.latency_ms = latency_ms
        self.retry = False  # unanswered in a pipeline: not the endpoint's fault (fetch_all)


@dataclass(frozen=True, slots=True)
class Target:
    url: URL
    label: str  # "GET /health": the prefix of every reason about this request
    lean_key: tuple[str, int, bool] | None  # (host, port, TLS) for the lean client, or None
    request_line: bytes  # "GET /health HTTP/1.1\r\nHost: ...\r\n", built once


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
    path = parsed.raw_path_qs or "/"
    if not LeanHttp.handles(parsed) or parsed.port is None:
        return Target(parsed, f"GET {path}", None, b"")
    line = f"GET {path} HTTP/1.1\r\nHost: {parsed.host_port_subcomponent}\r\n"
    key = (parsed.raw_host or "", parsed.port, parsed.scheme == "https")
    return Target(parsed, f"GET {path}", key, line.encode())


def fetch(
    session: aiohttp.ClientSession,
    where: Target,
    headers: dict[str, str] | None,
    deadline: float,
    timeout: float,
    lean: LeanHttp | None = None,
) -> Coroutine[Any, Any, Answer]:
    """GET ``where`` before ``deadline`` (loop time); ``timeout`` is only for the reason.

    With ``lean``, an http or https target goes through it instead of ``session``.  (A
    plain function handing back either coroutine: one frame less on the hot path.)"""
    if lean is not None and where.lean_key is not None:
        return _fetch_lean(lean, where, headers, deadline, timeout)
    return _fetch_aiohttp(session, where, headers, deadline, timeout)


async def _fetch_aiohttp(
    session: aiohttp.ClientSession,
    where: Target,
    headers: dict[str, str] | None,
    deadline: float,
    timeout: float,
) -> Answer:
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
                raise AnswerTooLarge(length)
            chunks: list[bytes] = []
            content = resp.content
            while chunk := await content.readany():
                received += len(chunk)
                if received > MAX_BODY:
                    raise AnswerTooLarge(None)
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
        raise _probe_error(where, exc, started, timeout, received) from exc


async def _fetch_lean(
    lean: LeanHttp,
    where: Target,
    headers: dict[str, str] | None,
    deadline: float,
    timeout: float,
) -> Answer:
    started = time.perf_counter()
    assert where.lean_key is not None
    try:
        request = where.request_line + _headers_of(headers)
        head, body = await lean.get(where.lean_key, request, deadline, MAX_BODY)
        return _lean_answer(where, head, body, started, time.perf_counter())
    except Exception as exc:  # every failure becomes a reason; CancelledError passes
        raise _probe_error(where, exc, started, timeout) from exc


async def fetch_all(
    session: aiohttp.ClientSession,
    wanted: Sequence[tuple[Target, dict[str, str] | None]],
    deadline: float,
    timeout: float,
    lean: LeanHttp | None = None,
) -> list[Answer | ProbeError]:
    """Several GETs to one origin, each an answer or its ProbeError, in order.  Through
    the lean client they are pipelined on one connection (``LeanHttp.get_all``); a
    ProbeError with ``retry`` set was queued behind another request when the deadline
    passed (maybe kept waiting by it: not to be judged, ask again).  Otherwise, and for
    an origin where a pipeline once went unanswered, they run concurrently, one
    ``fetch`` each."""
    key = wanted[0][0].lean_key
    if (
        lean is None
        or key is None
        or not lean.pipelines(key)
        or any(where.lean_key != key for where, _h in wanted)
    ):
        calls = (fetch(session, where, h, deadline, timeout, lean) for where, h in wanted)
        answers = await asyncio.gather(*calls, return_exceptions=True)
        for answer in answers:  # fetch raises only ProbeError: anything else is cancellation
            if isinstance(answer, BaseException) and not isinstance(answer, ProbeError):
                raise answer
        return cast(list[Answer | ProbeError], answers)
    started = time.perf_counter()
    try:
        requests = [where.request_line + _headers_of(h) for where, h in wanted]
        results = await lean.get_all(key, requests, deadline, MAX_BODY)
    except Exception as exc:  # a closed client: every request fails the same way
        results = [exc] * len(wanted)
    out: list[Answer | ProbeError] = []
    for (where, _h), result in zip(wanted, results, strict=True):
        if isinstance(result, Exception):
            out.append(_probe_error(where, result, started, timeout))
            continue
        head, body, done = result
        try:
            out.append(_lean_answer(where, head, body, started, done))
        except Exception as exc:  # a body whose coding is broken, say
            out.append(_probe_error(where, exc, started, timeout))
    return out


def _lean_answer(where: Target, head: Head, body: bytes, started: float, done: float) -> Answer:
    fields = head.headers
    coding = fields.get("content-encoding")
    if coding is not None:
        body = decode_body(body, coding, MAX_BODY)
    raw_type = fields.get("content-type")
    content_type, charset = ("", None) if raw_type is None else _media_type(raw_type)
    return Answer(
        where.label, head.status, content_type, charset, fields.get("location"), body,
        (done - started) * 1000.0,
    )  # fmt: skip


def _probe_error(
    where: Target, exc: Exception, started: float, timeout: float, received: int | None = None
) -> ProbeError:
    """The ProbeError for a request that failed with ``exc``; ``received``: body bytes
    read before it (None: as the lean client's exception says)."""
    if received is None:
        received = exc.received if isinstance(exc, Closed | Expired) else -1
    reason = _describe(exc, received, timeout)
    error = ProbeError(f"{where.label}: {reason}", (time.perf_counter() - started) * 1000.0)
    error.retry = isinstance(exc, Unanswered)
    return error


# The header dicts of a probe are module constants: their bytes are kept by identity
# (with a copy to tell a dict changed since), which costs less than hashing the items.
_BLOCKS: dict[int, tuple[dict[str, str], dict[str, str], bytes]] = {}


def _headers_of(headers: dict[str, str] | None) -> bytes:
    if not headers:
        return _header_block(())
    known = _BLOCKS.get(id(headers))
    if known is not None and known[0] is headers and known[1] == headers:
        return known[2]
    block = _header_block(tuple(headers.items()))
    if len(_BLOCKS) < 64:
        _BLOCKS[id(headers)] = (headers, dict(headers), block)
    return block


@lru_cache(maxsize=256)
def _header_block(headers: tuple[tuple[str, str], ...]) -> bytes:
    """The request's header fields after Host, as aiohttp would send them (its
    User-Agent, ``Accept: */*`` unless given), but no Accept-Encoding: probe answers are
    small and an uncompressed one costs less CPU than inflating it."""
    given = {name.lower() for name, _ in headers}
    if "host" in given:
        raise ValueError("the Host header comes from the URL")
    lines = [f"{name}: {value}\r\n" for name, value in headers]
    if "user-agent" not in given:
        lines.append(f"User-Agent: {SERVER_SOFTWARE}\r\n")
    if "accept" not in given:
        lines.append("Accept: */*\r\n")
    text = "".join(lines)
    if any(c in text.replace("\r\n", "") for c in "\r\n\0"):
        raise ValueError("a header contains a line break")
    return (text + "\r\n").encode("latin-1")


@lru_cache(maxsize=256)
def _media_type(raw: str) -> tuple[str, str | None]:
    """(media type, charset) as aiohttp's ``content_type`` and ``charset`` give them."""
    media, params = parse_content_type(raw)
    return media, params.get("charset")


def _describe(exc: Exception, received: int, timeout: float) -> str:
    if isinstance(exc, AnswerTooLarge):
        if exc.length is not None:
            return f"answer larger than 1 MiB (Content-Length {exc.length})"
        return "answer larger than 1 MiB, cut off"
    if isinstance(exc, Unanswered):
        return f"not answered within {timeout}s (queued behind another request)"
    if isinstance(exc, Expired):
        exc = TimeoutError()
    if isinstance(exc, Closed):
        if received < 0:
            return "connection closed without an answer"
        return f"connection closed mid-answer ({received} bytes received)"
    if isinstance(exc, InvalidHead):
        return f"invalid HTTP answer ({exc})"
    if isinstance(exc, BrokenBody):
        return f"broken answer body ({exc})"
    if isinstance(exc, AddressRefused):
        return str(exc)
    if isinstance(exc, Unresolvable):
        return f"cannot resolve host {exc.host}"
    if isinstance(exc, ConnectFailed):
        return _os_reason(exc.error)
    if isinstance(exc, TlsFailed):
        if isinstance(exc.error, ssl.SSLCertVerificationError):
            return f"TLS certificate rejected ({exc.error})"
        return f"TLS error ({exc.error})"
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
    return _os_reason(exc.os_error)


def _os_reason(err: OSError) -> str:
    if err.errno == errno.ECONNREFUSED:
        return "connection refused"
    return f"cannot connect ({err.strerror or err})"
