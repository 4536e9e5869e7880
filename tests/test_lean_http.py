"""The lean probe client (agents.lean_http) against a raw TCP server that answers exactly
the bytes each test scripts: reuse of keep-alive connections (counted at the server),
framing (Content-Length, chunked, until close), and every way an answer can go wrong,
read back as the reasons a probe reports (agents.probe_fetch.fetch).

DNS is faked at its boundary (an aiohttp resolver answering fixed addresses), as in
tests/test_address_guard.py; everything else is real sockets on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from agents.address_guard import GuardedResolver
from agents.lean_http import LeanHttp
from agents.probe_fetch import MAX_BODY
from tests.raw_http import HEALTH, OK, Client, RawServer, Serve, hang_up_on, raw_servers, replies
from tests.support import eventually

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    async with raw_servers() as start:
        yield start


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    async with aiohttp.ClientSession() as session:
        lean = LeanHttp()
        try:
            yield Client(session, lean)
        finally:
            await lean.close()


# -- keep-alive ----------------------------------------------------------------------


async def test_one_connection_carries_every_request(serve: Serve, client: Client) -> None:
    server = await serve(replies(OK + HEALTH))
    answers = [await client.get(server.url()) for _ in range(5)]
    assert [(a.status, a.body, a.content_type) for a in answers] == [
        (200, HEALTH, "application/health+json")
    ] * 5
    assert (server.connections, len(server.requests)) == (1, 5)
    assert client.lean.connections_opened == 1
    first = server.requests[0].decode()
    assert first.startswith("GET /health HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n" in first
    assert "Accept: application/json\r\n" in first and "Accept-Encoding" not in first


async def test_connection_close_is_honoured(serve: Serve, client: Client) -> None:
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 18\r\n\r\n" + HEALTH
    server = await serve(replies(closing, keep=False))
    for _ in range(3):
        assert (await client.get(server.url())).body == HEALTH
    assert server.connections == 3


async def test_a_server_closing_an_idle_connection_before_answering_is_retried_once(
    serve: Serve, client: Client
) -> None:
    """The second request lands on a connection the server closes without answering (its
    idle timeout raced us): it is sent once more on a fresh connection."""

    server = await serve(hang_up_on(2))
    assert (await client.get(server.url())).status == 200
    assert (await client.get(server.url())).status == 200
    assert (server.connections, len(server.requests)) == (2, 3)


async def test_extra_bytes_after_an_answer_mean_the_connection_is_not_reused(
    serve: Serve, client: Client
) -> None:
    server = await serve(replies(OK + HEALTH + b"HTTP/1.1 200 OK\r\n"))
    for _ in range(2):
        assert (await client.get(server.url())).body == HEALTH
    assert server.connections == 2


async def test_a_connection_the_server_closes_while_idle_is_forgotten(
    serve: Serve, client: Client
) -> None:
    server = await serve(replies(OK + HEALTH, keep=False))  # answers, then hangs up
    assert (await client.get(server.url())).status == 200
    # The hang-up reaches us through the kernel: no event in this process to wait on.
    await eventually(lambda: client.lean.idle_connections() == 0, "the hang-up to be seen")
    assert (await client.get(server.url())).status == 200
    # Nothing was written to the dead connection: no request lost, none repeated.
    assert (server.connections, len(server.requests)) == (2, 2)


async def test_a_closed_client_refuses_politely(serve: Serve, client: Client) -> None:
    server = await serve(replies(OK + HEALTH))
    await client.lean.close()
    reason = await client.reason(server.url())
    assert reason == "GET /health: RuntimeError: the probe HTTP client is closed"
    assert server.connections == 0


# -- framing -------------------------------------------------------------------------


async def test_chunked_body_with_extensions_and_trailers(serve: Serve, client: Client) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
        b'5;ext=1\r\n{"sta\r\nd\r\ntus": "pass"}\r\n0\r\nX-Trailer: yes\r\n\r\n'
    )
    server = await serve(replies(chunked))
    for _ in range(2):  # the framing ended where it should: the connection is reused
        assert (await client.get(server.url())).body == HEALTH
    assert server.connections == 1


async def test_body_until_the_connection_ends(serve: Serve, client: Client) -> None:
    server = await serve(replies(b"HTTP/1.1 200 OK\r\n\r\n" + HEALTH, keep=False))
    answer = await client.get(server.url())
    assert (answer.body, answer.content_type) == (HEALTH, "")


async def test_gzip_sent_unasked_is_inflated(serve: Serve, client: Client) -> None:
    packed = gzip.compress(HEALTH)
    head = f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(packed)}\r\n\r\n"
    server = await serve(replies(head.encode() + packed))
    assert (await client.get(server.url())).body == HEALTH


async def test_interim_answers_are_skipped(serve: Serve, client: Client) -> None:
    server = await serve(replies(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK + HEALTH))
    assert (await client.get(server.url())).status == 200


# -- what goes wrong, as the probe reports it -------------------------------------------


async def test_server_closing_mid_answer(serve: Serve, client: Client) -> None:
    server = await serve(
        replies(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789", keep=False)
    )
    reason = await client.reason(server.url())
    assert reason == "GET /health: connection closed mid-answer (10 bytes received)"
    silent = await serve(replies(b"", keep=False))
    assert await client.reason(silent.url()) == "GET /health: connection closed without an answer"


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (
            b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
            "invalid HTTP answer (bad status line 'SSH-2.0-OpenSSH_9.6')",
        ),
        (b"HTTP/1.1 2x0 OK\r\n\r\n", "invalid HTTP answer (bad status line 'HTTP/1.1 2x0 OK')"),
        (
            b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
            "invalid HTTP answer (bad header line 'no colon here')",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
            "invalid HTTP answer (bad Content-Length '-5')",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "broken answer body (bad chunk size 'zz')",
        ),
    ],
)
async def test_garbage_is_a_reason_and_the_connection_is_dropped(
    serve: Serve, client: Client, answer: bytes, reason: str
) -> None:
    server = await serve(replies(answer, OK + HEALTH))
    assert await client.reason(server.url()) == f"GET /health: {reason}"
    assert (await client.get(server.url())).body == HEALTH  # a fresh connection
    assert server.connections == 2


async def test_slow_drip_ends_at_the_deadline(serve: Serve, client: Client) -> None:
    async def drip(_n: int, _request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while not server.release.is_set():
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)  # the drip's pace (server side), not a test wait
        return False

    server = await serve(drip)
    reason = await client.reason(server.url(), timeout=0.2)
    assert reason.startswith("GET /health: answer not complete within 0.2s (")
    assert reason.endswith(" bytes received)")


async def test_silence_ends_at_the_deadline(serve: Serve, client: Client) -> None:
    async def hang(_n: int, _request: bytes, _writer: asyncio.StreamWriter) -> bool:
        await server.release.wait()
        return False

    server = await serve(hang)
    assert await client.reason(server.url(), timeout=0.2) == "GET /health: no answer within 0.2s"


async def test_body_cap(serve: Serve, client: Client) -> None:
    big = f"HTTP/1.1 200 OK\r\nContent-Length: {2 * MAX_BODY}\r\n\r\n".encode()
    server = await serve(replies(big))
    assert await client.reason(server.url()) == (
        f"GET /health: answer larger than 1 MiB (Content-Length {2 * MAX_BODY})"
    )

    async def endless(_n: int, _request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n")  # no length: until the connection ends
        chunk = b" " * 65536
        while not endless_server.release.is_set():
            writer.write(chunk)
            await writer.drain()
        return False

    endless_server = await serve(endless)
    reason = await client.reason(endless_server.url(), timeout=10)
    assert reason == "GET /health: answer larger than 1 MiB, cut off"


async def test_redirect_is_not_followed(serve: Serve, client: Client) -> None:
    moved = b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/\r\nContent-Length: 0\r\n\r\n"
    server = await serve(replies(moved))
    answer = await client.get(server.url())
    assert (answer.status, answer.location, answer.body) == (302, "http://169.254.169.254/", b"")
    assert len(server.requests) == 1


async def test_connection_refused(client: Client) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert (
        await client.reason(f"http://127.0.0.1:{port}/health") == "GET /health: connection refused"
    )


# -- the address guard checks the address connected to ----------------------------------


class FixedDns(AbstractResolver):
    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        if host not in self.answers:
            raise OSError(f"no such host {host}")
        address = self.answers[host]
        return [
            ResolveResult(
                hostname=host, host=address, port=port, family=socket.AF_INET, proto=0, flags=0
            )
        ]

    async def close(self) -> None:
        return None


async def test_address_guard_on_the_connected_address(serve: Serve) -> None:
    server = await serve(replies(OK + HEALTH))
    dns = FixedDns(
        {"svc.test": "127.0.0.1", "meta.test": "169.254.169.254", "ok.test": "127.0.0.1"}
    )
    resolver = GuardedResolver(lambda host: host == "ok.test", inner=dns)
    async with aiohttp.ClientSession() as session:
        lean = LeanHttp(resolver)
        client = Client(session, lean)
        try:
            loopback = await client.reason(server.url(host="svc.test"))
            assert "127.0.0.1 is a loopback address" in loopback and "private_network" in loopback
            metadata = await client.reason(server.url(host="meta.test"))
            assert "169.254.169.254 is a link-local address" in metadata
            literal = await client.reason("http://169.254.169.254/latest/meta-data")
            assert "169.254.169.254 is a link-local address" in literal
            unknown = await client.reason(server.url(host="nowhere.test"))
            assert unknown == "GET /health: cannot resolve host nowhere.test"
            assert server.connections == 0  # nothing refused got through
            assert (await client.get(server.url(host="ok.test"))).body == HEALTH
            assert server.connections == 1
            assert "169.254.169.254" not in dns.lookups  # literals skip DNS, not the guard
        finally:
            await lean.close()


# -- on uvloop, as orch runs --------------------------------------------------------------


def test_keep_alive_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> tuple[int, int, list[int]]:
        server = RawServer(replies(OK + HEALTH))
        await server.start()
        async with aiohttp.ClientSession() as session:
            lean = LeanHttp()
            try:
                client = Client(session, lean)
                statuses = [(await client.get(server.url())).status for _ in range(3)]
            finally:
                await lean.close()
        await server.stop()
        return server.connections, len(server.requests), statuses

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(main()) == (1, 3, [200, 200, 200])
