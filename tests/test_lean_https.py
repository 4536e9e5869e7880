"""The lean probe client over TLS: certificates verified as aiohttp's default does,
host names checked, keep-alive kept, the deadline covering the handshake.

A throwaway certificate for 127.0.0.1 is made with the openssl command line tool; the
server is the raw scripted one of tests/raw_http.py with TLS on.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from agents.lean_http import LeanHttp
from tests.raw_http import HEALTH, OK, Client, RawServer, replies

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:  # like tests.services: CI must not pass by skipping
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true and the openssl command is not installed", pytrace=False)
        pytest.skip("the openssl command is not installed")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=20,
    )  # fmt: skip
    return cert, key


@pytest.fixture
async def tls_server(certificate: tuple[Path, Path]) -> AsyncIterator[RawServer]:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = RawServer(replies(OK + HEALTH))
    await server.start(tls=context)
    yield server
    await server.stop()


def trusting(cert: Path) -> ssl.SSLContext:
    """A verifying client context whose only CA is the test certificate."""
    return ssl.create_default_context(cafile=str(cert))


async def test_https_keeps_its_connection(
    tls_server: RawServer, certificate: tuple[Path, Path]
) -> None:
    async with aiohttp.ClientSession() as session:
        lean = LeanHttp(ssl_context=trusting(certificate[0]))
        try:
            client = Client(session, lean)
            for _ in range(3):
                assert (await client.get(tls_server.url(scheme="https"))).body == HEALTH
        finally:
            await lean.close()
    assert (tls_server.connections, len(tls_server.requests)) == (1, 3)


async def test_an_untrusted_certificate_is_rejected(tls_server: RawServer) -> None:
    async with aiohttp.ClientSession() as session:
        lean = LeanHttp()  # the system's CAs, as aiohttp's default
        try:
            reason = await Client(session, lean).reason(tls_server.url(scheme="https"))
        finally:
            await lean.close()
    assert reason.startswith("GET /health: TLS certificate rejected (")
    assert "CERTIFICATE_VERIFY_FAILED" in reason
    assert tls_server.requests == []


async def test_a_certificate_for_another_name_is_rejected(
    tls_server: RawServer, certificate: tuple[Path, Path]
) -> None:
    async with aiohttp.ClientSession() as session:
        lean = LeanHttp(ssl_context=trusting(certificate[0]))
        try:
            url = tls_server.url(host="localhost", scheme="https")  # the cert names 127.0.0.1
            reason = await Client(session, lean).reason(url)
        finally:
            await lean.close()
    assert reason.startswith("GET /health: TLS certificate rejected (")
    assert "mismatch" in reason
    assert tls_server.requests == []


async def test_a_server_that_never_speaks_tls_ends_at_the_deadline(
    certificate: tuple[Path, Path],
) -> None:
    server = RawServer(replies(OK + HEALTH))
    await server.start()  # plain TCP: the client's handshake gets no answer
    async with aiohttp.ClientSession() as session:
        lean = LeanHttp(ssl_context=trusting(certificate[0]))
        try:
            reason = await Client(session, lean).reason(server.url(scheme="https"), timeout=0.3)
        finally:
            await lean.close()
            await server.stop()
    assert reason == "GET /health: no answer within 0.3s"
