"""Batched probe writes, and orch's own /healthz."""

from __future__ import annotations

import asyncio

import aiohttp

from agents.probe_result import Level, ProbeResult
from agents.recorder import ProbeRecorder
from bot.web import WebServer, make_web_app
from tests.support import Stack


def result(stack: Stack, n: int) -> ProbeResult:
    return ProbeResult(
        f"p{n % 3}", stack.clock.now(), Level.PASS, 4.0, metrics={"cpu_percent": float(n)}
    )


async def test_probes_are_written_in_one_batch_per_flush_interval(stack: Stack) -> None:
    recorder = ProbeRecorder(stack.store, clock=stack.clock, flush_interval=1.0)
    await recorder.start()
    try:
        for n in range(30):
            recorder.add(result(stack, n))
        # Nothing is written per probe …
        assert (await stack.store.count_rows())["probes"] == 0
        await stack.clock.advance(1.0)
        await asyncio.wait_for(recorder.wait_for_flushes(1), timeout=5)
        # … everything is written by the next flush, in one go.
        assert recorder.written_probes == 30
        counts = await stack.store.count_rows()
        assert counts["probes"] == 30 and counts["metric_samples"] == 30
    finally:
        await recorder.stop()


async def test_a_full_buffer_flushes_early(stack: Stack) -> None:
    recorder = ProbeRecorder(stack.store, clock=stack.clock, flush_interval=60, max_rows=20)
    await recorder.start()
    try:
        for n in range(10):  # 10 probes + 10 samples = 20 rows
            recorder.add(result(stack, n))
        await asyncio.wait_for(recorder.wait_for_flushes(1), timeout=5)
        assert (await stack.store.count_rows())["probes"] == 10
    finally:
        await recorder.stop()


async def test_rows_that_fail_to_write_are_kept_and_written_later(stack: Stack) -> None:
    recorder = ProbeRecorder(stack.store, clock=stack.clock)
    for n in range(5):
        recorder.add(result(stack, n))
    await stack.store.close()  # the database goes away
    try:
        await recorder.flush()
    except Exception as exc:  # any store error: the rows must survive it
        assert "not open" in str(exc)
    await stack.store.open()
    await recorder.stop()  # stop flushes what is left
    assert (await stack.store.count_rows())["probes"] == 5
    assert recorder.dropped == 0


async def test_healthz_answers_with_health_json() -> None:
    server = WebServer(make_web_app(lambda: {"projects": 3}), "127.0.0.1", 0)
    await server.start()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{server.url}/healthz") as response,
        ):
            assert response.status == 200
            assert response.content_type == "application/health+json"
            body = await response.json(content_type=None)
        assert body["status"] == "pass" and body["projects"] == 3
    finally:
        await server.stop()
