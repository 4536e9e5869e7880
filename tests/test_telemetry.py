"""orch's own /metrics, scraped from a real Runtime over HTTP: the contract's JSON numbers
by default (readable by orch's own probe client, so a parent orch can watch this one), the
Prometheus text when asked for it, and the counters moving as fake projects, a fake Slack,
a fake Anthropic and a private Redis answer, and as orch remediates."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from redis import asyncio as aioredis

from agents.analysis_context import AnalysisContext
from agents.clock import SystemClock
from agents.probe import ProbeClient
from bot.config import Config
from bot.runtime import Runtime, RuntimeOptions
from bot.settings import Settings
from tests.fake_anthropic import FakeAnthropic, error
from tests.fake_slack import FakeSlack
from tests.redis_server import RedisServer
from tests.support import eventually

CONTRACT_FIVE = ("cpu_percent", "memory_percent", "error_rate", "requests_per_second",
                 "latency_p95_ms")  # fmt: skip
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)  # what a Prometheus server sends


class FakeProject:
    """A contract service whose /health passes or fails (503)."""

    def __init__(self, healthy: bool) -> None:
        self.healthy = healthy
        self.url = ""
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._json({"cpu_percent": 1.0, "memory_percent": 2.0,
                                                   "error_rate": 0.0, "requests_per_second": 1.0,
                                                   "latency_p95_ms": 5.0}))  # fmt: skip
        app.router.add_get("/status", self._json({"state": "running"}))
        self._runner = web.AppRunner(app, access_log=None)

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _health(self, _request: web.Request) -> web.Response:
        status = "pass" if self.healthy else "fail"
        return web.json_response({"status": status}, status=200 if self.healthy else 503,
                                 content_type="application/health+json")  # fmt: skip

    @staticmethod
    def _json(body: dict[str, Any]) -> Any:
        async def handler(_request: web.Request) -> web.Response:
            return web.json_response(body)

        return handler


@dataclass
class Orch:
    runtime: Runtime
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        assert self.runtime.web is not None
        return self.runtime.web.url

    async def metrics_text(self, accept: str = PROMETHEUS_ACCEPT) -> tuple[str, str]:
        async with self.session.get(f"{self.url}/metrics", headers={"Accept": accept}) as resp:
            assert resp.status == 200
            return resp.headers["Content-Type"], await resp.text()

    async def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        _type, text = await self.metrics_text()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }


def sample(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
async def projects() -> AsyncIterator[dict[str, FakeProject]]:
    made = {"good": FakeProject(True), "bad": FakeProject(False)}
    for p in made.values():
        await p.start()
    yield made
    for p in made.values():
        await p.stop()


async def start_orch(tmp_path: Path, projects: dict[str, FakeProject], **settings: Any) -> Orch:
    config = Config.model_validate({
        "defaults": {"interval": "200ms", "timeout": "150ms"},
        "orchestrators": {"ops": {"channel": "#ops", "projects": sorted(projects)}},
        "projects": [{"name": n, "url": p.url} for n, p in sorted(projects.items())],
    })  # fmt: skip
    runtime = Runtime(
        Settings(sqlite_path=tmp_path / "orch.db", port=0, **settings),
        config,
        options=RuntimeOptions(lease_ttl_s=3),
    )
    await runtime.start()
    return Orch(runtime, aiohttp.ClientSession())


async def stop_orch(orch: Orch) -> None:
    await orch.session.close()
    await orch.runtime.stop()


async def test_prometheus_text_counts_probes_by_result_with_a_latency_histogram(
    tmp_path: Path, projects: dict[str, FakeProject]
) -> None:
    orch = await start_orch(tmp_path, projects)
    try:

        async def both_seen() -> bool:
            s = await orch.samples()
            return min(sample(s, "orch_probes_total", result=r) for r in ("pass", "fail")) >= 2

        await eventually(both_seen, "passing and failing probes in /metrics")
        content_type, text = await orch.metrics_text()
        assert content_type == "text/plain; version=0.0.4; charset=utf-8"
        s = await orch.samples()
        probes = sum(sample(s, "orch_probes_total", result=r) for r in ("pass", "warn", "fail"))
        assert sample(s, "orch_probe_latency_seconds_count") == probes
        assert sample(s, "orch_probe_latency_seconds_bucket", le="+Inf") == probes
        assert sample(s, "orch_probe_latency_seconds_bucket", le="10.0") == probes
        # The contract's numbers come first, as gauges, as any project's /metrics would.
        assert "# TYPE cpu_percent gauge" in text
        assert 0.0 < sample(s, "error_rate") < 1.0
        # Scrape-time readings of the parts.
        assert ("orch_schedule_lateness_seconds", (("quantile", "0.99"),)) in s
        assert sample(s, "orch_outbox_depth", outbox="events") >= 0
        assert ("orch_outbox_depth", (("outbox", "events"),)) in s
        assert sample(s, "orch_bus_events_total", role="incidents", outcome="delivered") >= 0
        assert sample(s, "orch_events_relayed_total") >= 1  # the bad project's status change
        assert sample(s, "orch_dead_letters_total") == 0
        assert "process_cpu_seconds_total" in text
    finally:
        await stop_orch(orch)


async def test_json_by_default_is_a_contract_metrics_answer_a_parent_orch_reads(
    tmp_path: Path, projects: dict[str, FakeProject]
) -> None:
    orch = await start_orch(tmp_path, projects)
    try:
        await eventually(lambda: orch.runtime.telemetry.probes.recent().count >= 4, "a few probes")
        for accept in (None, "*/*", "application/json", "text/plain;q=0.5, application/json"):
            headers = {"Accept": accept} if accept else {}
            async with orch.session.get(f"{orch.url}/metrics", headers=headers) as resp:
                assert resp.content_type == "application/json", accept
                numbers = await resp.json()
        assert all(isinstance(numbers[k], int | float) for k in CONTRACT_FIVE)
        assert 0.2 <= numbers["error_rate"] <= 0.8  # one of the two projects fails
        assert numbers["requests_per_second"] > 0
        assert numbers["latency_p95_ms"] > 0
        assert 0 <= numbers["cpu_percent"] <= 100 and 0 < numbers["memory_percent"] <= 100
        assert numbers["projects_polled"] == 2 and numbers["dead_letters"] == 0
        assert "schedule_lateness_p99_ms" in numbers and "outbox_depth" in numbers
        # A parent orch probes this one as a contract project: /metrics parses cleanly.
        parent = Config.model_validate({"projects": [{"name": "child-orch", "url": orch.url}]})
        result = await ProbeClient(orch.session, SystemClock()).probe(parent.project("child-orch"))
        assert "/metrics" not in result.reason
        assert set(CONTRACT_FIVE) <= set(result.metrics)
        assert result.metrics["projects_polled"] == 2
    finally:
        await stop_orch(orch)


async def test_slack_429s_and_errors_are_counted(
    tmp_path: Path, projects: dict[str, FakeProject]
) -> None:
    slack = FakeSlack()
    await slack.start()
    slack.fail("chat.postMessage", status=429, retry_after=1)
    slack.fail("chat.postMessage", error="internal_error")
    orch = await start_orch(tmp_path, projects, slack_bot_token="xoxb-test",
                            slack_signing_secret="s", slack_api_url=slack.api_url)  # fmt: skip
    try:
        await slack.wait_for("chat.postMessage", 3, timeout=20)  # 429, error, then posted

        async def sent() -> bool:
            return sample(await orch.samples(), "orch_slack_writes_total", outcome="sent") >= 1

        await eventually(sent, "the card counted as sent")
        s = await orch.samples()
        assert sample(s, "orch_slack_rate_limited_total") == 1
        assert sample(s, "orch_slack_api_errors_total", kind="rate_limited") == 1
        assert sample(s, "orch_slack_api_errors_total", kind="transient") == 1
        assert sample(s, "orch_slack_writes_total", outcome="deferred") == 2
        assert ("orch_outbox_depth", (("outbox", "slack"),)) in s
    finally:
        await stop_orch(orch)
        await slack.stop()


async def test_claude_calls_tokens_and_failures_are_counted(
    tmp_path: Path, projects: dict[str, FakeProject]
) -> None:
    fake = FakeAnthropic()
    await fake.start()
    # A 429 answered three times (two SDK retries) is one failed call; then one answer.
    fake.script(*[error(429, "rate_limit_error", retry_after_ms="1")] * 3)
    orch = await start_orch(tmp_path, projects, anthropic_api_key="sk-test",
                            anthropic_base_url=fake.url)  # fmt: skip
    try:
        advisor = orch.runtime.acting.advisor
        assert advisor is not None
        context = AnalysisContext("bad", "contract", ("restart",), incident=None)
        failed = await advisor.analyze(context)
        answered = await advisor.analyze(context)
        assert failed.output is None and answered.output is not None
        s = await orch.samples()
        assert sample(s, "orch_claude_calls_total", outcome="http_429") == 1
        assert sample(s, "orch_claude_calls_total", outcome="ok") == 1
        assert sample(s, "orch_claude_tokens_total", direction="input") == 1200
        assert sample(s, "orch_claude_tokens_total", direction="output") == 150
        assert sample(s, "orch_claude_cost_usd_total") > 0
        assert len(fake.requests) == 4
    finally:
        await stop_orch(orch)
        await fake.stop()


async def test_redis_bus_lag_pending_and_dead_letters_are_read_at_scrape_time(
    tmp_path: Path, projects: dict[str, FakeProject]
) -> None:
    async with RedisServer() as redis:
        orch = await start_orch(tmp_path, projects, redis_url=redis.url)
        try:
            s = await orch.samples()
            assert ("orch_bus_lag_events", (("role", "incidents"),)) in s
            assert ("orch_bus_pending_events", (("role", "incidents"),)) in s
            assert sample(s, "orch_bus_dead_letter_stream_length") == 0
            # An entry no consumer can decode is dead-lettered by every role that reads it.
            client = aioredis.from_url(redis.url)
            await client.xadd(
                "orch:events", {"id": "poison-1", "type": "project.status_changed", "event": "{"}
            )
            await client.aclose()

            async def dead_lettered() -> bool:
                found = await orch.samples()
                return sample(found, "orch_bus_dead_letter_stream_length") >= 1

            await eventually(dead_lettered, "the poison entry in the dead-letter stream")
            s = await orch.samples()
            assert sum(v for (name, labels), v in s.items()
                       if name == "orch_bus_events_total"
                       and ("outcome", "dead_letters") in labels) >= 1  # fmt: skip
            async with orch.session.get(f"{orch.url}/metrics") as resp:
                numbers = await resp.json()
            assert numbers["bus_lag"] >= 0 and numbers["bus_pending"] >= 0
        finally:
            await stop_orch(orch)


async def test_remediations_are_counted_by_outcome(
    tmp_path: Path, projects: dict[str, FakeProject]
) -> None:
    config = Config.model_validate({
        "defaults": {"interval": "200ms", "timeout": "150ms", "recheck_interval": "100ms",
                     "remediation": {"verify_timeout": "500ms", "verify_interval": "100ms"}},
        "projects": [{"name": "bad", "url": f"{projects['bad'].url}/health", "kind": "http",
                      "allowed_actions": ["restart"], "control_commands": {"restart": ["true"]}}],
    })  # fmt: skip
    runtime = Runtime(Settings(sqlite_path=tmp_path / "orch.db", port=0), config,
                      options=RuntimeOptions(lease_ttl_s=3))  # fmt: skip
    await runtime.start()
    orch = Orch(runtime, aiohttp.ClientSession())
    try:
        # Down, restarted by a command that "works", still failing: the restart failed.
        async def counted() -> bool:
            found = await orch.samples()
            return sample(found, "orch_remediations_total", action="restart", outcome="failed") >= 1

        await eventually(counted, "a failed restart in /metrics")
    finally:
        await stop_orch(orch)
