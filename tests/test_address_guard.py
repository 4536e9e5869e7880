"""The SSRF guard: which addresses a project's URL may reach (agents.address_guard).

The probes run for real against a local service; only DNS is faked, at its boundary
(an aiohttp resolver answering fixed addresses for ``*.test`` names), because making a
real name resolve to 169.254.169.254 is the attack, not something a test can arrange.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer

from agents.address_guard import AddressRefused, GuardedResolver, literal_refusal, refusal
from agents.clock import FakeClock
from agents.lean_http import LeanHttp
from agents.probe import ProbeClient
from agents.probe_result import Level, ProbeResult
from bot.config import Config
from bot.network_policy import guarded_resolver
from tests.support import make_project


class ScriptedDns(AbstractResolver):
    """DNS at the boundary: each name answers the next address of its script (the last
    one repeats), so a name can re-resolve somewhere else between two probes."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        self.script = script
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        answers = self.script[host]
        address = answers.pop(0) if len(answers) > 1 else answers[0]
        fam = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [ResolveResult(hostname=host, host=address, port=port, family=fam, proto=0, flags=0)]

    async def close(self) -> None:
        return None


@pytest.fixture
async def service() -> AsyncIterator[tuple[TestServer, list[str]]]:
    hits: list[str] = []

    async def health(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.json_response({"status": "pass"}, content_type="application/health+json")

    app = web.Application()
    app.router.add_get("/health", health)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server, hits
    finally:
        await server.close()


@pytest.fixture(params=["lean", "aiohttp"])
def transport(request: pytest.FixtureRequest) -> str:
    """Both ways orch sends a request: the lean client (probes) and aiohttp (the rest)."""
    return str(request.param)


async def probe_via(
    dns: ScriptedDns, url: str, *, private: set[str], times: int = 1, transport: str
) -> list[ProbeResult]:
    resolver = GuardedResolver(lambda host: host in private, inner=dns)
    # No DNS cache and no keep-alive: every probe resolves and connects afresh, as a
    # probe after the cache's lifetime would.
    if transport == "lean":
        lean: LeanHttp | None = LeanHttp(resolver, reuse=False, dns_ttl=None)
        connector = aiohttp.TCPConnector()
    else:
        lean = None
        connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        client = ProbeClient(session, FakeClock(), lean)
        project = make_project(url=url, timeout="2s")
        try:
            return [await client.probe(project, scrape=False) for _ in range(times)]
        finally:
            if lean is not None:
                await lean.close()


async def test_a_name_resolving_to_loopback_needs_the_config_to_allow_it(
    service: tuple[TestServer, list[str]], transport: str
) -> None:
    server, hits = service
    dns = ScriptedDns({"svc.test": ["127.0.0.1"]})
    url = f"http://svc.test:{server.port}"
    (refused,) = await probe_via(dns, url, private=set(), transport=transport)
    assert refused.level is Level.FAIL
    assert "loopback address" in refused.reason and "private_network" in refused.reason
    assert hits == []  # nothing reached the service
    (allowed,) = await probe_via(dns, url, private={"svc.test"}, transport=transport)
    assert allowed.level is Level.PASS
    assert hits == ["/health"]


async def test_a_name_that_re_resolves_to_metadata_is_caught(
    service: tuple[TestServer, list[str]], transport: str
) -> None:
    """Checked and connected are the same address: the second lookup answers the metadata
    service, and that probe fails without any connection being made there or here."""
    server, hits = service
    dns = ScriptedDns({"svc.test": ["127.0.0.1", "169.254.169.254"]})
    first, second = await probe_via(
        dns, f"http://svc.test:{server.port}", private={"svc.test"}, times=2, transport=transport
    )
    assert first.level is Level.PASS
    assert second.level is Level.FAIL
    assert "169.254.169.254" in second.reason and "link-local" in second.reason
    assert dns.lookups == ["svc.test", "svc.test"]
    assert hits == ["/health"]


@pytest.mark.parametrize(
    ("address", "private_ok", "refused_because"),
    [
        ("169.254.169.254", True, "link-local"),
        ("fe80::1", True, "link-local"),
        ("fd00:ec2::254", True, "metadata"),
        ("100.100.100.200", True, "metadata"),
        ("::ffff:169.254.169.254", True, "link-local"),
        ("0.0.0.0", True, "unspecified"),
        ("224.0.0.1", True, "multicast"),
        ("10.1.2.3", False, "private address"),
        ("192.168.0.10", False, "private address"),
        ("100.64.0.1", False, "private address"),
        ("fd12::1", False, "private address"),
        ("127.0.0.1", False, "loopback address"),
        ("::1", False, "loopback address"),
    ],
)
def test_refused_addresses(address: str, private_ok: bool, refused_because: str) -> None:
    reason = refusal(address, private_ok=private_ok)
    assert reason is not None and refused_because in reason


@pytest.mark.parametrize(
    ("address", "private_ok"),
    [("93.184.216.34", False), ("2606:2800:220:1::1", False), ("10.1.2.3", True),
     ("127.0.0.1", True)],
)  # fmt: skip
def test_allowed_addresses(address: str, private_ok: bool) -> None:
    assert refusal(address, private_ok=private_ok) is None


def test_address_literals_in_urls() -> None:
    assert "link-local" in (literal_refusal("http://169.254.169.254/latest/meta-data") or "")
    assert "metadata" in (literal_refusal("http://[fd00:ec2::254]/") or "")
    # Written out in the config, a private or loopback address is the operator's choice.
    assert literal_refusal("http://10.0.4.9:9100/metrics") is None
    assert literal_refusal("http://127.0.0.1:8101") is None
    assert literal_refusal("https://status.example.com") is None  # names: at resolve time


async def test_the_config_decides_which_names_may_be_private_and_reloads_follow() -> None:
    def config(private: bool) -> Config:
        return Config.model_validate({"projects": [
            {"name": "db", "url": "http://db.internal:9100", "private_network": private},
            {"name": "web", "url": "https://web.test"},
        ]})  # fmt: skip

    current = config(True)
    dns = ScriptedDns({"db.internal": ["10.0.0.5"], "web.test": ["192.168.7.7"]})
    resolver = guarded_resolver(lambda: current, inner=dns)
    assert [r["host"] for r in await resolver.resolve("db.internal", 9100)] == ["10.0.0.5"]
    with pytest.raises(AddressRefused, match="private address"):
        await resolver.resolve("web.test", 443)  # its project does not allow it
    current = config(False)  # a reload takes the permission away
    with pytest.raises(AddressRefused, match="private_network"):
        await resolver.resolve("db.internal", 9100)
