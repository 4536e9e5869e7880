"""The heartbeat to a dead-man switch (a local fake switch; the clock injected), the JSON
log lines (parsed back, secrets redacted), and the one-minute window of /metrics' JSON."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from agents.clock import FakeClock
from agents.probe_result import Level, ProbeResult
from bot.config import Config
from bot.runtime import Runtime, RuntimeOptions
from bot.settings import Settings
from bot.telemetry.heartbeat import Heartbeat, safe_url
from bot.telemetry.logs import JsonFormatter
from bot.telemetry.probes import ProbeInstruments
from tests.support import eventually

TOKEN = "0f3c1f9e-5e2b-4c83-9a55-1d4cb1d3a7e2"  # a healthchecks.io-style check id


class FakeSwitch:
    """A dead-man switch: counts the pings to /ping/<token>; ``status`` is its answer."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.status = 200
        self.url = ""
        self._arrived = asyncio.Condition()
        app = web.Application()
        app.router.add_get("/ping/{token}", self._ping)
        self._runner = web.AppRunner(app, access_log=None)

    async def start(self) -> None:
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/ping/{TOKEN}"

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def wait_hits(self, count: int) -> None:
        async with asyncio.timeout(10), self._arrived:
            await self._arrived.wait_for(lambda: len(self.hits) >= count)

    async def _ping(self, request: web.Request) -> web.Response:
        async with self._arrived:
            self.hits.append(request.match_info["token"])
            self._arrived.notify_all()
        return web.Response(status=self.status, text="OK")


@pytest.fixture
async def switch() -> AsyncIterator[FakeSwitch]:
    fake = FakeSwitch()
    await fake.start()
    yield fake
    await fake.stop()


def counters() -> tuple[CollectorRegistry, dict[str, Counter]]:
    registry = CollectorRegistry()
    family = Counter("beats", "test", ["result"], registry=registry)
    return registry, {r: family.labels(r) for r in ("sent", "failed", "skipped")}


def counted(registry: CollectorRegistry, result: str) -> float:
    return registry.get_sample_value("beats_total", {"result": result}) or 0.0


async def test_beats_once_per_interval_on_the_injected_clock(
    switch: FakeSwitch, clock: FakeClock
) -> None:
    registry, counts = counters()

    async def healthy() -> str | None:
        return None

    beat = Heartbeat(switch.url, 60.0, healthy, clock, counts)
    await beat.start()
    try:
        await switch.wait_hits(1)  # at start: "orch is up"
        for n in (2, 3, 4):
            await eventually(lambda: clock.sleepers == 1, "the heartbeat waiting")
            await clock.advance(59.0)
            assert len(switch.hits) == n - 1  # not before its time
            await clock.advance(1.0)
            await switch.wait_hits(n)
        assert switch.hits == [TOKEN] * 4 and counted(registry, "sent") == 4
    finally:
        await beat.stop()


async def test_an_unhealthy_orch_stays_silent_and_failures_are_counted_without_the_token(
    switch: FakeSwitch, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    registry, counts = counters()
    problem: list[str] = ["store: ConnectionRefusedError"]

    async def healthy() -> str | None:
        return problem[0] if problem else None

    beat = Heartbeat(switch.url, 60.0, healthy, clock, counts)
    await beat.start()
    try:
        await eventually(lambda: clock.sleepers == 1, "the first beat (skipped) done")
        assert await beat.beat() == "skipped"
        problem.clear()
        switch.status = 500
        assert await beat.beat() == "failed"
        await switch.stop()  # the switch unreachable: refused, counted, never raised
        assert await beat.beat() == "failed"
    finally:
        await beat.stop()
    assert switch.hits == [TOKEN]  # only the beat the switch answered 500
    assert counted(registry, "skipped") == 2 and counted(registry, "failed") == 2
    assert counted(registry, "sent") == 0
    assert "heartbeat" in caplog.text and TOKEN not in caplog.text
    assert safe_url(switch.url) == f"{switch.url.split('/ping')[0]}/…"


async def test_runtime_beats_while_ready_and_counts_beats_in_its_metrics(
    switch: FakeSwitch, tmp_path: Path
) -> None:
    config = Config.model_validate({"projects": [{"name": "p", "url": "http://127.0.0.1:9"}]})
    settings = Settings.from_env({
        "ORCH_SQLITE_PATH": str(tmp_path / "orch.db"), "PORT": "0",
        "ORCH_HEARTBEAT_URL": switch.url, "ORCH_HEARTBEAT_INTERVAL": "50ms",
    })  # fmt: skip
    assert TOKEN not in repr(settings)
    runtime = Runtime(settings, config, options=RuntimeOptions(lease_ttl_s=3))
    await runtime.start()
    try:
        await switch.wait_hits(3)
        exposition = (await runtime.telemetry.exposition()).decode()
        assert 'orch_heartbeats_total{result="sent"}' in exposition
        sent = runtime.telemetry.registry.get_sample_value(
            "orch_heartbeats_total", {"result": "sent"}
        )
        assert sent is not None and sent >= 3
    finally:
        await runtime.stop()


def json_lines(logger: logging.Logger) -> tuple[io.StringIO, logging.Handler]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    return stream, handler


def test_json_log_lines_parse_carry_extras_and_are_redacted() -> None:
    logger = logging.getLogger("orch.test.json")
    logger.setLevel(logging.INFO)
    stream, handler = json_lines(logger)
    try:
        logger.warning(
            "slack said no for %s with token=%s",
            "ops@example.com",
            "xoxb-1234567890-abcdefghijklmnop",
            extra={
                "project": "email-blast",
                "attempt": 2,
                "header": "Bearer sk-ant-abcdef0123456789",
            },
        )
        try:
            raise RuntimeError("password=hunter2hunter2 leaked")
        except RuntimeError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "warning" and first["logger"] == "orch.test.json"
    assert first["ts"].endswith("Z") and "T" in first["ts"]
    assert first["project"] == "email-blast" and first["attempt"] == 2
    text = json.dumps([first, second])
    for secret in ("ops@example.com", "xoxb-1234567890", "sk-ant-abcdef", "hunter2"):
        assert secret not in text
    assert "slack said no" in first["message"]
    assert second["message"] == "boom" and "RuntimeError" in second["exception"]


def test_bad_telemetry_settings_are_named_without_repeating_the_url() -> None:
    with pytest.raises(ValueError, match="ORCH_LOG_FORMAT must be text or json, got 'xml'"):
        Settings.from_env({"ORCH_LOG_FORMAT": "xml"})
    with pytest.raises(ValueError, match="ORCH_HEARTBEAT_URL must be an http") as caught:
        Settings.from_env({"ORCH_HEARTBEAT_URL": f"hc-ping.com/{TOKEN}"})
    assert TOKEN not in str(caught.value)
    with pytest.raises(ValueError, match="ORCH_HEARTBEAT_INTERVAL"):
        Settings.from_env({"ORCH_HEARTBEAT_INTERVAL": "soon"})
    assert Settings.from_env({"ORCH_HEARTBEAT_INTERVAL": "2m"}).heartbeat_interval == 120.0


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_configure_logging_writes_the_chosen_format_on_stderr(log_format: str) -> None:
    # A fresh interpreter: configuring the root logger here would replace pytest's.
    script = (
        "import logging; from bot.telemetry.logs import configure_logging; "
        f"configure_logging(logging.INFO, {log_format!r}); "
        "logging.getLogger('orch.x').info('sent to ops@example.com', extra={'project': 'p'})"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    line = done.stderr.strip()
    if log_format == "json":
        entry = json.loads(line)
        assert entry["logger"] == "orch.x" and entry["project"] == "p"
        assert "ops@example.com" not in line and entry["message"].startswith("sent to ")
    else:
        assert line.endswith("INFO orch.x: sent to ops@example.com")


async def test_the_json_numbers_cover_the_last_minute_only(clock: FakeClock) -> None:
    probes = ProbeInstruments(CollectorRegistry(), clock.monotonic)
    for n in range(20):  # 20 probes over the first 10 s, one in four failing
        level = Level.FAIL if n % 4 == 0 else Level.PASS
        probes.observe(ProbeResult("p", clock.now(), level, latency_ms=float(n + 1)))
        await clock.advance(0.5)
    recent = probes.recent()
    assert recent.count == 20 and recent.error_rate == 0.25
    assert recent.per_second == 2.0 and recent.latency_p95_ms == 19.0
    await clock.advance(60.0)
    assert probes.recent().count == 0 and probes.recent().error_rate == 0.0
