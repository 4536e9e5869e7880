"""Hostile answers from projects (property-based): whatever bytes, status codes and
content types a project sends back, the probe returns a result (never raises), a failed
probe says why, and every metric it keeps is a finite float the analyzer can classify.

One real aiohttp server on an ephemeral port plays the project; each generated example
sets what its /health, /metrics and /status answer next, and the real ``ProbeClient``
probes it over real keep-alive connections (the lean client orch probes with).
Hangs and slow drips beyond the timeout are covered by tests/test_probe.py; here the
space of *content* is explored.

hypothesis runs synchronous tests, so the server and the probes run on a loop of their
own in a thread (as tests/test_api_fuzz.py does for schemathesis).
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.clock import FakeClock
from agents.lean_http import LeanHttp
from agents.metrics_analyzer import MetricState, classify, step
from agents.probe import ProbeClient
from agents.probe_parse import BadAnswer, load_json
from agents.probe_prometheus import prometheus_metrics
from agents.probe_result import Level, ProbeResult
from bot.config import Project, Threshold
from tests.support import make_project

EXAMPLES = 150

# -- what a hostile project may send ----------------------------------------------------
JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
ANY_JSON = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
STATUSES = st.sampled_from(["pass", "warn", "fail", "PASS", "ok", "", None, 1, True, ["pass"]])
HEALTH_DOCS = st.fixed_dictionaries(
    {"status": STATUSES},
    optional={
        "output": ANY_JSON,
        "checks": st.dictionaries(st.text(max_size=10), ANY_JSON, max_size=3) | ANY_JSON,
        "version": ANY_JSON,
    },
)
METRIC_NAMES = st.sampled_from(
    ["cpu_percent", "memory_percent", "error_rate", "requests_per_second", "latency_p95_ms", "q"]
)
METRIC_DOCS = st.dictionaries(METRIC_NAMES | st.text(max_size=10), ANY_JSON, max_size=8)
STATUS_DOCS = st.fixed_dictionaries(
    {}, optional={"state": ANY_JSON, "queue_depth": ANY_JSON, "uptime_s": ANY_JSON}
)
# Texts a JSON parser finds hard: deep nesting, numbers beyond float, beyond int limits.
NASTY_TEXTS = st.sampled_from(
    [
        "[" * 100_000,
        '{"status": ' * 5_000,
        '{"status": "pass", "x": 1e999}',
        '{"cpu_percent": 1e999, "error_rate": -1e999, "memory_percent": NaN}',
        '{"cpu_percent": ' + "9" * 5_000 + "}",
        '{"status": "pass"}' * 3,
        "\ufeff{}",
        "null",
    ]
)


def body_of(docs: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """A well-formed document, any JSON, a nasty text, or arbitrary bytes."""
    return st.one_of(
        docs.map(lambda d: json.dumps(d).encode()),
        ANY_JSON.map(lambda d: json.dumps(d).encode()),
        NASTY_TEXTS.map(str.encode),
        st.binary(max_size=200),
        st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
    )


CODES = st.sampled_from([200, 200, 200, 201, 204, 301, 400, 404, 429, 500, 503, 599])
CTYPES = st.sampled_from(
    [
        "application/health+json",
        "application/json",
        "application/json; charset=latin-1",
        "application/json; charset=klingon",
        "text/html",
        "text/plain; version=0.0.4",
        None,
    ]
)


@dataclass(frozen=True)
class Reply:
    body: bytes
    status: int
    ctype: str | None


def replies(docs: st.SearchStrategy[Any]) -> st.SearchStrategy[Reply]:
    return st.builds(Reply, body_of(docs), CODES, CTYPES)


# -- the project and the prober, on a loop of their own ---------------------------------
@dataclass
class FakeProject:
    """The fake project: what each endpoint answers now."""

    answers: dict[str, Reply] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rsplit("/", 1)[-1]
        self.hits.append(path)
        reply = self.answers.get(path, Reply(b"{}", 404, "application/json"))
        headers = {"Content-Type": reply.ctype} if reply.ctype else {}
        # 204 and 1xx may carry no body; aiohttp refuses to send one.
        body = b"" if reply.status in (204, 304) else reply.body
        return web.Response(body=body, status=reply.status, headers=headers)


class Prober:
    def __init__(self) -> None:
        self.fake = FakeProject()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.url = ""

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.fake.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self.session = aiohttp.ClientSession()
        # orch probes through the lean client (bot.runtime): test that path.
        self.lean = LeanHttp()
        self.client = ProbeClient(self.session, FakeClock(), self.lean)

    def probe(self, project: Project, answers: dict[str, Reply]) -> ProbeResult:
        self.fake.answers = answers
        self.fake.hits.clear()
        return asyncio.run_coroutine_threadsafe(self.client.probe(project), self.loop).result(30)

    def stop(self) -> None:
        async def close() -> None:
            await self.lean.close()
            await self.session.close()
            await self.runner.cleanup()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def prober() -> Iterator[Prober]:
    p = Prober()
    p.start()
    try:
        yield p
    finally:
        p.stop()


HYPOTHESIS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def assert_sane(result: ProbeResult) -> None:
    assert isinstance(result.level, Level)
    if result.level is not Level.PASS:
        assert result.reason.strip(), f"a {result.level} probe must say why"
    assert len(result.reason) <= 1_000, "a reason is a line, not the project's answer"
    for name, value in result.metrics.items():
        assert isinstance(name, str)
        assert type(value) is float and math.isfinite(value), (name, value)


# -- the properties ---------------------------------------------------------------------
@HYPOTHESIS
@given(health=replies(HEALTH_DOCS), metrics=replies(METRIC_DOCS), status=replies(STATUS_DOCS))
def test_contract_probe_survives_any_answer(
    prober: Prober, health: Reply, metrics: Reply, status: Reply
) -> None:
    project = make_project(url=prober.url, timeout="2s")
    result = prober.probe(project, {"health": health, "metrics": metrics, "status": status})
    assert_sane(result)
    assert "health" in prober.fake.hits
    if result.level is Level.PASS:
        # PASS only for a 200 whose body is a health document saying "pass".
        assert health.status == 200
        doc = load_json(health.body)
        assert doc["status"] == "pass"
    if health.status >= 500:
        assert result.level is Level.FAIL


@HYPOTHESIS
@given(page=st.one_of(st.text(max_size=300), st.binary(max_size=300).map(bytes.hex)), code=CODES)
def test_prometheus_probe_survives_any_page(prober: Prober, page: str, code: int) -> None:
    project = make_project(url=prober.url + "/metrics", kind="prometheus", timeout="2s")
    result = prober.probe(project, {"metrics": Reply(page.encode(), code, "text/plain")})
    assert_sane(result)
    if code != 200:
        assert result.level is Level.FAIL


# Prometheus lines built to stress the summing of labelled samples and special values.
PROM_VALUES = st.sampled_from(["1e308", "-1e308", "NaN", "+Inf", "-Inf", "0", "1.5", "1e-320"])
PROM_LINES = st.lists(
    st.builds(
        lambda name, label, value: f'{name}{{k="{label}"}} {value}' if label else f"{name} {value}",
        st.sampled_from(["a", "b_total", "c_bucket"]),
        st.sampled_from(["", "x", "y", "z"]),
        PROM_VALUES,
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(lines=PROM_LINES)
def test_prometheus_sums_stay_finite(lines: list[str]) -> None:
    """Summed labelled samples may overflow a float; what is kept is still finite."""
    try:
        metrics = prometheus_metrics("\n".join(lines) + "\n")
    except BadAnswer as exc:
        assert str(exc)
        return
    assert all(type(v) is float and math.isfinite(v) for v in metrics.values()), metrics


FINITE = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def thresholds(draw: st.DrawFn) -> Threshold:
    """Any valid threshold: one or both levels, crit beyond warn in its direction."""
    direction = draw(st.sampled_from(["above", "below"]))
    a, b = sorted(draw(st.lists(FINITE, min_size=2, max_size=2)))
    warn, crit = (a, b) if direction == "above" else (b, a)
    keep = draw(st.sampled_from(["warn", "crit", "both"]))
    return Threshold(
        warn=None if keep == "crit" else warn, crit=None if keep == "warn" else crit,
        direction=direction,
    )  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=30),
    threshold=thresholds(),
)
def test_analyzer_classifies_any_number(values: list[float], threshold: Threshold) -> None:
    """The analyzer's state machine takes any float without raising and only ever holds
    one of its three levels; a NaN never raises an anomaly on its own."""
    state = MetricState()
    for value in values:
        level = classify(value, threshold)
        assert level in ("none", "warn", "crit")
        if math.isnan(value):
            assert level == "none"
        state = step(state, value, threshold, open_after=3, close_after=2)
        assert state.level in ("none", "warn", "crit")
