"""The probe client against a local fleet of misbehaving services.

One aiohttp server on an ephemeral port serves every case under its own path prefix
(``/html/health``, ``/nan/metrics``, ...). Handlers that hang or stream forever wait on
``Fleet.release``, which only the fixture's teardown sets, so the server closes promptly.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agents.clock import FakeClock
from agents.lean_http import LeanHttp
from agents.probe import MAX_BODY, ProbeClient
from agents.probe_result import Level
from bot.config import Config, Project

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HJ = "application/health+json"
GOOD_METRICS = {"cpu_percent": 12.5, "memory_percent": 40, "error_rate": 0.0, "jobs": 3}
GOOD_STATUS = {"state": "running", "queue_depth": 2, "uptime_s": 60, "version": "1.4.2"}


class Fleet:
    def __init__(self) -> None:
        self.release = asyncio.Event()  # set only at teardown: hangs and streams end
        self.entered = asyncio.Event()  # a hanging handler has the request
        self.hits: list[tuple[str, str]] = []  # (path, Accept) per request
        self.url = ""

    def __call__(self, path: str) -> str:
        return self.url + path


def answer(body: Any, status: int = 200, ctype: str | None = "application/json") -> Handler:
    raw = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body))
    data = raw.encode() if isinstance(raw, str) else raw
    headers = {"Content-Type": ctype} if ctype else {}

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=data, status=status, headers=headers)

    return handler


def build_app(fleet: Fleet) -> web.Application:
    async def hang(request: web.Request) -> web.StreamResponse:
        fleet.entered.set()
        await fleet.release.wait()
        return web.json_response({"status": "pass"}, content_type=HJ)

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("https://elsewhere.example/health")

    async def endless(request: web.Request) -> web.StreamResponse:
        """Chunked, no length, never ends: only a reader that cuts off gets out."""
        response = web.StreamResponse(headers={"Content-Type": HJ})
        response.enable_chunked_encoding()
        await response.prepare(request)
        chunk = b" " * 65536
        try:
            while not fleet.release.is_set():
                await response.write(chunk)
        except ConnectionError:
            pass  # the probe hung up, as it should
        return response

    async def drip(request: web.Request) -> web.StreamResponse:
        """Headers at once, then one byte at a time: each read succeeds, the body never ends."""
        response = web.StreamResponse(headers={"Content-Type": HJ})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            await response.write(b'{"status": "pass", "pad": "')
            while not fleet.release.is_set():
                await response.write(b"x")
                await asyncio.sleep(0.01)  # the drip's pace (server side), not a test wait
        except ConnectionError:
            pass
        return response

    good = {"metrics": answer(GOOD_METRICS), "status": answer(GOOD_STATUS)}
    ok_health = answer({"status": "pass", "version": "9.9"}, ctype=HJ)
    routes: dict[str, dict[str, Handler]] = {
        "ok": {"health": ok_health},
        "plainjson": {"health": answer({"status": "pass"})},
        "warn": {"health": answer({"status": "warn", "output": "disk 91% full"}, ctype=HJ)},
        "down": {
            "health": answer(
                {
                    "status": "fail",
                    "checks": {"db:connections": [{"status": "fail", "output": "exhausted"}]},
                },
                503,
                HJ,
            )
        },
        "html": {
            "health": answer("<!DOCTYPE html><html><body>Login</body></html>", ctype="text/html")
        },
        "truncated": {"health": answer('{"status": "pass", "checks": {', ctype=HJ)},
        "comma": {"health": answer('{"status": "pass" "x": 1}', ctype=HJ)},
        "empty": {"health": answer(b"", ctype=HJ)},
        "wrongtype": {"health": answer({"status": 5}, ctype=HJ)},
        "list": {"health": answer([1, 2], ctype=HJ)},
        "banana": {"health": answer({"status": "banana"}, ctype=HJ)},
        "nostatus": {"health": answer({"checks": {}}, ctype=HJ)},
        "pass503": {"health": answer({"status": "pass"}, 503, HJ)},
        "fail200": {"health": answer({"status": "fail"}, 200, HJ)},
        "redirect": {"health": redirect},
        "big": {"health": answer(b" " * (2 * MAX_BODY), ctype=HJ)},
        "endless": {"health": endless},
        "drip": {"health": drip},
        "hang": {"health": hang},
        "err500": {"health": answer("boom", 500, "text/plain")},
        "proxy503": {"health": answer("<html>503 Service Unavailable</html>", 503, "text/html")},
        "latin": {"health": answer(b'{"status": "pass", "note": "caf\xe9"}', ctype=HJ)},
        "deep": {"health": answer(b"[" * 100_000 + b"]" * 100_000, ctype=HJ)},
        # side endpoints broken, /health fine
        "nan": {
            "metrics": answer(
                '{"cpu_percent": NaN, "memory_percent": Infinity, "error_rate": 0.01,'
                ' "custom": NaN, "queue": 7}'
            )
        },
        "types": {
            "metrics": answer(
                {
                    "cpu_percent": "high",
                    "memory_percent": True,
                    "note": "x",
                    "flag": False,
                    "nested": {"a": 1},
                    "latency_p95_ms": 120,
                }
            )
        },
        "mhtml": {"metrics": answer("<html>oops</html>", ctype="text/html")},
        "mtrunc": {"metrics": answer('{"cpu_percent": 1')},
        "mhang": {"metrics": hang},
        "sbad": {"status": answer({"state": "exploded", "version": "1.0"})},
        "s404": {"status": answer({"error": "no such route"}, 404)},
        "warnplus": {
            "health": answer({"status": "warn"}, ctype=HJ),
            "metrics": answer([1]),
        },
        "failplus": {"health": answer({"status": "fail"}, 503, HJ), "metrics": answer([1])},
    }
    app = web.Application(middlewares=[_recorder(fleet)])
    for case, handlers in routes.items():
        for endpoint in ("health", "metrics", "status"):
            handler = handlers.get(endpoint) or good.get(endpoint) or ok_health
            app.router.add_get(f"/{case}/{endpoint}", handler)
    # plain http and prometheus targets
    doc = {"status": {"db": "up"}, "items": [{"name": "a"}], "flag": True}
    app.router.add_get("/page", answer("<html>All systems OK</html>", ctype="text/html"))
    app.router.add_get("/nocontent", answer(b"", 204, None))
    app.router.add_get("/moved", redirect)
    app.router.add_get("/doc", answer(doc))
    app.router.add_get("/latin", answer(b"caf\xe9 OK", ctype="text/plain"))
    app.router.add_get("/latin1", answer(b"caf\xe9 OK", ctype="text/plain; charset=latin-1"))
    app.router.add_get("/prom", answer(PROM_TEXT, ctype="text/plain; version=0.0.4"))
    app.router.add_get("/prom-html", answer("<!DOCTYPE html><html></html>", ctype="text/html"))
    app.router.add_get("/prom-bad", answer("up 1\nfoo bar baz\n", ctype="text/plain"))
    app.router.add_get("/prom-500", answer("down", 500, "text/plain"))
    return app


PROM_TEXT = """\
# HELP process_cpu_seconds_total CPU time.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.5
# TYPE http_requests_total counter
http_requests_total{code="200"} 3
http_requests_total{code="500"} 1
# TYPE lat histogram
lat_bucket{le="0.1"} 4
lat_bucket{le="+Inf"} 5
lat_sum 0.3
lat_count 5
# TYPE rpc summary
rpc{quantile="0.5"} 0.2
rpc_count 9
broken_gauge NaN
"""


def _recorder(fleet: Fleet) -> Any:
    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        fleet.hits.append((request.path, request.headers.get("Accept", "")))
        return await handler(request)

    return record


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    fleet = Fleet()
    server = TestServer(build_app(fleet), host="127.0.0.1")
    await server.start_server()
    fleet.url = str(server.make_url("")).rstrip("/")
    try:
        yield fleet
    finally:
        fleet.release.set()
        await server.close()


@pytest.fixture(params=["lean", "aiohttp"])
async def client(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[ProbeClient]:
    """Every case on both transports: the lean client orch probes with
    (agents.lean_http) and the aiohttp session (URLs with user info)."""
    async with aiohttp.ClientSession() as session:
        if request.param == "aiohttp":
            yield ProbeClient(session, clock)
            return
        lean = LeanHttp()
        try:
            yield ProbeClient(session, clock, lean)
        finally:
            await lean.close()


def project(
    url: str, kind: str = "contract", timeout: float = 5.0, http: dict[str, Any] | None = None
) -> Project:
    entry = {"name": "p", "url": url, "kind": kind, "timeout": timeout, "interval": 10}
    if http is not None:
        entry["http"] = http
    return Config.model_validate({"projects": [entry]}).projects[0]


# -- contract: /health -------------------------------------------------------------------


async def test_healthy_contract(fleet: Fleet, client: ProbeClient, clock: FakeClock) -> None:
    result = await client.probe(project(fleet("/ok")))
    assert (result.level, result.reason, result.http_status) == (Level.PASS, "", 200)
    assert result.probe == "health" and result.ts == clock.now()
    assert result.metrics == {
        "cpu_percent": 12.5,
        "memory_percent": 40.0,
        "error_rate": 0.0,
        "jobs": 3.0,
    }
    assert (result.state, result.version) == ("running", "1.4.2")
    assert result.latency_ms > 0  # real elapsed time although the fake clock stood still
    accepts = dict(fleet.hits)
    assert accepts["/ok/health"].startswith("application/health+json")
    assert accepts["/ok/metrics"] == "application/json"


HEALTH_CASES = [
    ("plainjson", Level.PASS, 200, ""),
    ("warn", Level.WARN, 200, 'GET /warn/health: status "warn": disk 91% full'),
    ("down", Level.FAIL, 503, 'GET /down/health: status "fail" (checks: db:connections fail)'),
    ("html", Level.FAIL, 200,
     'GET /html/health: expected application/health+json, got text/html '
     '(starts "<!DOCTYPE html><html><body>Logi…")'),
    ("truncated", Level.FAIL, 200,
     "GET /truncated/health: invalid JSON at char 30: "
     "Expecting property name enclosed in double quotes"),
    ("comma", Level.FAIL, 200,
     "GET /comma/health: invalid JSON at char 18: Expecting ',' delimiter"),
    ("empty", Level.FAIL, 200, "GET /empty/health: empty answer, expected JSON"),
    ("wrongtype", Level.FAIL, 200,
     'GET /wrongtype/health: "status" must be pass, warn or fail, got 5'),
    ("list", Level.FAIL, 200, "GET /list/health: expected a JSON object, got a list"),
    ("banana", Level.FAIL, 200,
     'GET /banana/health: "status" must be pass, warn or fail, got "banana"'),
    ("nostatus", Level.FAIL, 200, 'GET /nostatus/health: "status" missing'),
    ("pass503", Level.FAIL, 503, 'GET /pass503/health: HTTP 503 with status "pass" (expected 200)'),
    ("fail200", Level.FAIL, 200, 'GET /fail200/health: HTTP 200 with status "fail" (expected 503)'),
    ("redirect", Level.FAIL, 302,
     "GET /redirect/health: redirect (302 to https://elsewhere.example/health) not followed"),
    ("err500", Level.FAIL, 500, "GET /err500/health: HTTP 500"),
    ("proxy503", Level.FAIL, 503,
     "GET /proxy503/health: HTTP 503, expected application/health+json, got text/html "
     '(starts "<html>503 Service Unavailable</…")'),
    ("latin", Level.FAIL, 200, "GET /latin/health: not valid utf-8 (byte 0xe9 at offset 31)"),
    ("deep", Level.FAIL, 200, "GET /deep/health: JSON nested too deeply"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "level", "code", "reason"), HEALTH_CASES)
async def test_health_answers(
    fleet: Fleet, client: ProbeClient, case: str, level: Level, code: int, reason: str
) -> None:
    result = await client.probe(project(fleet(f"/{case}")))
    assert (result.level, result.http_status, result.reason) == (level, code, reason)


async def test_body_over_1mib_with_length_is_refused_unread(
    fleet: Fleet, client: ProbeClient
) -> None:
    result = await client.probe(project(fleet("/big")))
    assert result.level is Level.FAIL and result.http_status is None
    assert (
        result.reason
        == f"GET /big/health: answer larger than 1 MiB (Content-Length {2 * MAX_BODY})"
    )


async def test_endless_body_is_cut_off_at_1mib(fleet: Fleet, client: ProbeClient) -> None:
    # The server never stops sending: only a reader that stops at 1 MiB gets a verdict
    # before the timeout, and the reason says so.
    result = await client.probe(project(fleet("/endless")))
    assert result.level is Level.FAIL
    assert result.reason == "GET /endless/health: answer larger than 1 MiB, cut off"


async def test_slow_drip_ends_at_the_timeout(fleet: Fleet, client: ProbeClient) -> None:
    result = await client.probe(project(fleet("/drip"), timeout=0.2))
    assert result.level is Level.FAIL
    assert result.reason.startswith("GET /drip/health: answer not complete within 0.2s (")
    assert result.reason.endswith(" bytes received)")


async def test_hang_ends_at_the_timeout(fleet: Fleet, client: ProbeClient) -> None:
    result = await client.probe(project(fleet("/hang"), timeout=0.2))
    assert (result.level, result.http_status) == (Level.FAIL, None)
    assert result.reason == "GET /hang/health: no answer within 0.2s"
    assert result.latency_ms >= 150  # it did wait (timer resolution allows a little slack)


async def test_connection_refused(client: ProbeClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await client.probe(project(f"http://127.0.0.1:{port}"))
    assert (result.level, result.reason) == (Level.FAIL, "GET /health: connection refused")
    assert result.metrics == {} and result.state is None


async def test_closed_session_is_a_fail_not_an_exception(fleet: Fleet, clock: FakeClock) -> None:
    session = aiohttp.ClientSession()
    await session.close()
    result = await ProbeClient(session, clock).probe(project(fleet("/ok"), kind="http"))
    assert result.level is Level.FAIL
    assert result.reason.startswith("GET /ok: RuntimeError: Session is closed")


async def test_hanging_project_does_not_delay_another(fleet: Fleet, client: ProbeClient) -> None:
    hanging = asyncio.create_task(client.probe(project(fleet("/hang"), timeout=10)))
    await fleet.entered.wait()  # the hanging request is in flight on the server
    good = await client.probe(project(fleet("/ok")))
    assert good.level is Level.PASS
    assert not hanging.done()
    hanging.cancel()  # cancellation is the one thing probe() lets through
    with pytest.raises(asyncio.CancelledError):
        await hanging


async def test_without_scrape_only_health_is_fetched(fleet: Fleet, client: ProbeClient) -> None:
    result = await client.probe(project(fleet("/ok")), scrape=False)
    assert (result.level, result.metrics, result.state, result.version) == (
        Level.PASS, {}, None, "9.9",
    )  # fmt: skip
    assert [path for path, _ in fleet.hits] == ["/ok/health"]


async def test_poll_scrapes_once_per_scrape_interval(
    fleet: Fleet, client: ProbeClient, clock: FakeClock
) -> None:
    """Every 10 s with the default 30 s scrape_interval: /metrics and /status with the
    first probe and every third after it (29.9 s later is close enough)."""
    results = []
    for step in (0, 10, 10, 9.9, 10, 10, 10.2):
        await clock.advance(step)
        results.append(await client.poll(project(fleet("/ok"))))
    paths = [path for path, _ in fleet.hits]
    assert paths.count("/ok/health") == 7
    assert paths.count("/ok/metrics") == paths.count("/ok/status") == 3
    assert [bool(r.metrics) for r in results] == [True, False, False, True, False, False, True]
    assert [r.state for r in results] == ["running", None, None, "running", None, None, "running"]
    assert {r.level for r in results} == {Level.PASS}


async def test_poll_keeps_a_broken_side_endpoint_warning_between_scrapes(
    fleet: Fleet, client: ProbeClient, clock: FakeClock
) -> None:
    reason = "GET /s404/status: HTTP 404"
    results = []
    for _ in range(3):
        results.append(await client.poll(project(fleet("/s404"))))
        await clock.advance(10)
    assert [path for path, _ in fleet.hits].count("/s404/status") == 1
    assert [(r.level, r.reason) for r in results] == [(Level.WARN, reason)] * 3


# -- contract: /metrics and /status --------------------------------------------------------


SIDE_CASES = [
    ("nan", {"error_rate": 0.01, "queue": 7.0}, "running",
     'GET /nan/metrics: "cpu_percent" must be a finite number, got NaN; '
     '"memory_percent" must be a finite number, got Infinity'),
    ("types", {"latency_p95_ms": 120.0}, "running",
     'GET /types/metrics: "cpu_percent" must be a number, got "high"; '
     '"memory_percent" must be a number, got true'),
    ("mhtml", {}, "running",
     'GET /mhtml/metrics: expected application/json, got text/html (starts "<html>oops</html>")'),
    ("mtrunc", {}, "running",
     "GET /mtrunc/metrics: invalid JSON at char 17: Expecting ',' delimiter"),
    ("sbad", GOOD_METRICS, None,
     'GET /sbad/status: "state" must be running, paused or starting, got "exploded"'),
    ("s404", GOOD_METRICS, None, "GET /s404/status: HTTP 404"),
    ("warnplus", {}, "running", 'GET /warnplus/health: status "warn"; '
     "GET /warnplus/metrics: expected a JSON object, got a list"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "metrics", "state", "reason"), SIDE_CASES)
async def test_broken_side_endpoint_is_a_warning(
    fleet: Fleet,
    client: ProbeClient,
    case: str,
    metrics: dict[str, float],
    state: str | None,
    reason: str,
) -> None:
    result = await client.probe(project(fleet(f"/{case}")))
    assert (result.level, result.http_status, result.reason) == (Level.WARN, 200, reason)
    assert result.metrics == metrics  # the healthy part is kept
    assert result.state == state


async def test_hanging_metrics_is_a_warning(
    fleet: Fleet, client: ProbeClient, request: pytest.FixtureRequest
) -> None:
    hanging = project(fleet("/mhang"), timeout=0.3)
    result = await client.probe(hanging)
    if request.node.callspec.params["client"] == "lean":
        # Pipelined behind /health, /metrics and /status were still queued at the
        # deadline: not judged (either may have been kept waiting by the other), so
        # /health alone decides this probe.  From then on this origin is asked
        # concurrently: the next probe sees the hang for what it is, as over aiohttp.
        assert (result.level, result.reason, result.state) == (Level.PASS, "", None)
        assert [path for path, _accept in fleet.hits if path == "/mhang/status"] == []
        result = await client.probe(hanging)
    assert (result.level, result.http_status) == (Level.WARN, 200)
    assert result.reason == "GET /mhang/metrics: no answer within 0.3s"
    assert (result.state, result.version) == ("running", "1.4.2")


async def test_failing_health_keeps_only_its_own_reason(fleet: Fleet, client: ProbeClient) -> None:
    result = await client.probe(project(fleet("/failplus")))
    assert (result.level, result.http_status) == (Level.FAIL, 503)
    assert result.reason == 'GET /failplus/health: status "fail"'
    assert result.state == "running"


# -- kind: http ---------------------------------------------------------------------------


HTTP_CASES = [
    ("/page", None, Level.PASS, 200, ""),
    ("/page", {"body_contains": "All systems OK"}, Level.PASS, 200, ""),
    ("/page", {"body_contains": "Welcome"}, Level.FAIL, 200,
     'GET /page: body does not contain "Welcome" (starts "<html>All systems OK</html>")'),
    ("/nocontent", {"expect_status": [200, 204]}, Level.PASS, 204, ""),
    ("/nocontent", None, Level.FAIL, 204, "GET /nocontent: HTTP 204, expected 200"),
    ("/prom-500", {"expect_status": [200, 204]}, Level.FAIL, 500,
     "GET /prom-500: HTTP 500, expected one of 200, 204"),
    ("/moved", None, Level.FAIL, 302,
     "GET /moved: redirect (302 to https://elsewhere.example/health) not followed, expected 200"),
    ("/moved", {"expect_status": 302}, Level.PASS, 302, ""),
    ("/doc", {"json_path": "status.db", "json_equals": "up"}, Level.PASS, 200, ""),
    ("/doc", {"json_path": "items.0.name", "json_equals": "a"}, Level.PASS, 200, ""),
    ("/doc", {"json_path": "status.db", "json_equals": "down"}, Level.FAIL, 200,
     'GET /doc: json_path "status.db" is "up", expected "down"'),
    ("/doc", {"json_path": "status.cache", "json_equals": "up"}, Level.FAIL, 200,
     'GET /doc: json_path "status.cache" not found (no "cache" at status)'),
    ("/doc", {"json_path": "items.3.name", "json_equals": "a"}, Level.FAIL, 200,
     'GET /doc: json_path "items.3.name" not found (items has 1 items)'),
    ("/doc", {"json_path": "items.x", "json_equals": "a"}, Level.FAIL, 200,
     'GET /doc: json_path "items.x": items is a list, "x" is not an index'),
    ("/doc", {"json_path": "status.db.x", "json_equals": 1}, Level.FAIL, 200,
     'GET /doc: json_path "status.db.x" not found (status.db is "up")'),
    ("/doc", {"json_path": "flag", "json_equals": 1}, Level.FAIL, 200,
     'GET /doc: json_path "flag" is true, expected 1'),
    ("/doc", {"json_path": "flag", "json_equals": True}, Level.PASS, 200, ""),
    ("/page", {"json_path": "a", "json_equals": 1}, Level.FAIL, 200,
     "GET /page: invalid JSON at char 0: Expecting value"),
    ("/latin", {"body_contains": "OK"}, Level.FAIL, 200,
     "GET /latin: not valid utf-8 (byte 0xe9 at offset 3)"),
    ("/latin1", {"body_contains": "café"}, Level.PASS, 200, ""),  # declared charset honoured
]  # fmt: skip


@pytest.mark.parametrize(("path", "check", "level", "code", "reason"), HTTP_CASES)
async def test_http_checks(
    fleet: Fleet,
    client: ProbeClient,
    path: str,
    check: dict[str, Any] | None,
    level: Level,
    code: int,
    reason: str,
) -> None:
    result = await client.probe(project(fleet(path), kind="http", http=check))
    assert (result.level, result.http_status, result.reason) == (level, code, reason)
    assert result.probe == "http"


async def test_http_hang_and_big_body(fleet: Fleet, client: ProbeClient) -> None:
    hung = await client.probe(project(fleet("/hang/health"), kind="http", timeout=0.2))
    assert (hung.level, hung.reason) == (Level.FAIL, "GET /hang/health: no answer within 0.2s")
    big = await client.probe(project(fleet("/endless/health"), kind="http"))
    assert (big.level, big.reason) == (
        Level.FAIL, "GET /endless/health: answer larger than 1 MiB, cut off",
    )  # fmt: skip


# -- kind: prometheus ---------------------------------------------------------------------


async def test_prometheus_metrics(fleet: Fleet, client: ProbeClient) -> None:
    result = await client.probe(project(fleet("/prom"), kind="prometheus"))
    assert (result.level, result.reason, result.probe) == (Level.PASS, "", "prometheus")
    assert result.metrics == {
        "process_cpu_seconds_total": 12.5,
        "http_requests_total": 4.0,  # labelled samples summed under the bare name
        "lat_sum": 0.3,  # buckets skipped, _sum/_count kept
        "lat_count": 5.0,
        "rpc_count": 9.0,  # quantiles skipped; NaN gauge dropped
    }
    assert fleet.hits == [("/prom", "text/plain")]


PROM_CASES = [
    ("/prom-html", 200,
     'GET /prom-html: invalid Prometheus text at line 1 ("<!DOCTYPE html><html></html>"): '
     "invalid metric name:<!DOCTYPE html><html></html>"),
    ("/prom-bad", 200,
     'GET /prom-bad: invalid Prometheus text at line 2 ("foo bar baz"): '
     "could not convert string to float: 'bar'"),
    ("/prom-500", 500, "GET /prom-500: HTTP 500"),
    ("/moved", 302, "GET /moved: redirect (302 to https://elsewhere.example/health) not followed"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "code", "reason"), PROM_CASES)
async def test_prometheus_failures(
    fleet: Fleet, client: ProbeClient, path: str, code: int, reason: str
) -> None:
    result = await client.probe(project(fleet(path), kind="prometheus"))
    assert (result.level, result.http_status, result.reason) == (Level.FAIL, code, reason)
    assert result.metrics == {}


async def test_prometheus_without_scrape_skips_parsing(fleet: Fleet, client: ProbeClient) -> None:
    result = await client.probe(project(fleet("/prom-html"), kind="prometheus"), scrape=False)
    assert (result.level, result.metrics) == (Level.PASS, {})


def test_numbers_beyond_float_are_reasons_not_crashes() -> None:
    from agents.probe_parse import BadAnswer, contract_metrics, load_json

    metrics, problems = contract_metrics({"cpu_percent": 10**400, "custom": 10**400, "ok": 1})
    assert metrics == {"ok": 1.0}
    assert problems[0].startswith('"cpu_percent" must be a finite number, got 1000')
    with pytest.raises(BadAnswer, match="invalid JSON: Exceeds the limit"):
        load_json(b"1" * 5000)
