"""Pipelined GETs of the lean probe client (``LeanHttp.get_all``, used for a contract
probe's /health, /metrics and /status) against a raw TCP server that answers exactly the
bytes each test scripts and counts connections and requests; read back as the reasons a
probe reports (agents.probe_fetch.fetch_all)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from agents.lean_http import LeanHttp
from agents.probe_fetch import Answer, ProbeError, fetch_all, target
from tests.raw_http import HEALTH, OK, RawServer, Serve, hang_up_on, raw_servers, replies

pytestmark = pytest.mark.timeout(30)
PATHS = ("/health", "/metrics", "/status")
JSON = {"Accept": "application/json"}


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    async with raw_servers() as start:
        yield start


@pytest.fixture
async def lean() -> AsyncIterator[LeanHttp]:
    client = LeanHttp()
    try:
        yield client
    finally:
        await client.close()


async def probe_three(
    server: RawServer, lean: LeanHttp, timeout: float = 2.0
) -> list[Answer | ProbeError]:
    """What a scraping contract probe asks: three GETs, pipelined."""
    deadline = asyncio.get_running_loop().time() + timeout
    wanted = [(target(server.url(path)), JSON) for path in PATHS]
    async with aiohttp.ClientSession() as session:
        return await fetch_all(session, wanted, deadline, timeout, lean)


def paths(server: RawServer) -> list[str]:
    return [r.split(b" ", 2)[1].decode() for r in server.requests]


def answer(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + b"".join(extra)
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


async def test_three_requests_share_one_connection_and_keep_their_order(
    serve: Serve, lean: LeanHttp
) -> None:
    async def reply(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        path = request.split(b" ", 2)[1]
        writer.write(answer(b'{"n": %d, "path": "%s"}' % (n, path)))
        return True

    server = await serve(reply)
    for round_ in range(2):
        got = await probe_three(server, lean)
        assert [(a.status, a.label) for a in got if isinstance(a, Answer)] == [
            (200, f"GET {p}") for p in PATHS
        ]
        assert [a.body for a in got if isinstance(a, Answer)] == [
            b'{"n": %d, "path": "%s"}' % (3 * round_ + i + 1, p.encode())
            for i, p in enumerate(PATHS)
        ]
    # Six requests, one connection, opened once: the pipeline is reused like a single GET.
    assert (server.connections, len(server.requests), lean.connections_opened) == (1, 6, 1)
    assert paths(server) == [*PATHS, *PATHS]
    assert lean.pipelines((("127.0.0.1"), server.port, False))


async def test_a_server_closing_after_the_first_answer_gets_the_rest_anew(
    serve: Serve, lean: LeanHttp
) -> None:
    """An HTTP/1.0-minded server: one answer per connection, then it hangs up."""
    server = await serve(replies(answer(HEALTH, b"Connection: close\r\n"), keep=False))
    got = await probe_three(server, lean)
    assert [a.body for a in got if isinstance(a, Answer)] == [HEALTH] * 3
    assert server.connections == 3
    assert paths(server) == list(PATHS)  # each asked exactly once


async def test_a_broken_answer_fails_its_own_request_only(serve: Serve, lean: LeanHttp) -> None:
    async def reply(n: int, _request: bytes, writer: asyncio.StreamWriter) -> bool:
        if n == 2:
            writer.write(b"SMTP ready\r\n\r\n")  # garbage for /metrics, then hang up
            return False
        writer.write(OK + HEALTH)
        return True

    server = await serve(reply)
    health, metrics, status = await probe_three(server, lean)
    assert isinstance(health, Answer) and isinstance(status, Answer)
    assert isinstance(metrics, ProbeError)
    assert metrics.reason == "GET /metrics: invalid HTTP answer (bad status line 'SMTP ready')"
    # /status went again on a fresh connection; the first connection's copy was lost
    # with it (the server hung up), so the server saw it twice at most, answered once.
    assert server.connections == 2
    assert paths(server).count("/health") == 1 and paths(server)[-1] == "/status"


async def test_a_server_that_ignores_pipelined_requests_is_asked_concurrently_after(
    serve: Serve, lean: LeanHttp
) -> None:
    """It answers the first request of a connection and sits on the rest.  The first
    probe sees /metrics and /status queued at the deadline (not judged: "retry"); from
    then on the three go concurrently, one connection each, and all answer."""
    release = asyncio.Event()

    async def reply(n: int, request: bytes, writer: asyncio.StreamWriter) -> bool:
        if n == 2:  # the second on the first connection; the third is never even read
            await release.wait()
            return False
        writer.write(OK + HEALTH)
        return True

    server = await serve(reply)
    try:
        health, metrics, status = await probe_three(server, lean, timeout=0.3)
        assert isinstance(health, Answer)
        assert isinstance(metrics, ProbeError) and metrics.retry
        assert isinstance(status, ProbeError) and status.retry
        assert status.reason == (
            "GET /status: not answered within 0.3s (queued behind another request)"
        )
        assert not lean.pipelines(("127.0.0.1", server.port, False))
        got = await probe_three(server, lean)
        assert [a.status for a in got if isinstance(a, Answer)] == [200, 200, 200]
    finally:
        release.set()


async def test_a_request_first_on_its_connection_is_judged_by_the_deadline(
    serve: Serve, lean: LeanHttp
) -> None:
    """/health itself hangs: it timed out with nothing ahead of it, so it gets the usual
    reason; the two queued behind it are not judged."""
    release = asyncio.Event()

    async def reply(n: int, _request: bytes, writer: asyncio.StreamWriter) -> bool:
        await release.wait()
        return False

    server = await serve(reply)
    try:
        health, metrics, status = await probe_three(server, lean, timeout=0.3)
    finally:
        release.set()
    assert isinstance(health, ProbeError) and not health.retry
    assert health.reason == "GET /health: no answer within 0.3s"
    assert isinstance(metrics, ProbeError) and metrics.retry
    assert isinstance(status, ProbeError) and status.retry


async def test_a_reused_connection_closed_before_answering_is_retried_once(
    serve: Serve, lean: LeanHttp
) -> None:
    """The second probe lands on the kept connection just as the server closes it (its
    idle timeout racing ours): all three go once more on a fresh connection."""

    server = await serve(hang_up_on(4))
    first = await probe_three(server, lean)
    second = await probe_three(server, lean)
    assert [a.status for a in (*first, *second) if isinstance(a, Answer)] == [200] * 6
    assert server.connections == 2
    assert paths(server)[3:] == ["/health", *PATHS]  # the lost one, then all three again
