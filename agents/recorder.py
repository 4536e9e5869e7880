"""Batches probe results into the store: one transaction per flush, not per probe.

At a thousand projects a row-per-commit store would spend more time committing than the
monitor spends probing; a flush every second (or every ``max_rows``) keeps writes cheap.
Rows that fail to write stay in the buffer (bounded) and are retried on the next flush.
"""

from __future__ import annotations

import asyncio
import logging

from agents.clock import Clock, SystemClock, sleep_or_wake
from agents.lifecycle import cancel_and_wait
from agents.probe_result import ProbeResult
from storage.base import MetricSample, ProbeRecord, Store

log = logging.getLogger(__name__)


class ProbeRecorder:
    def __init__(
        self,
        store: Store,
        *,
        clock: Clock | None = None,
        flush_interval: float = 1.0,
        max_rows: int = 2000,
        max_buffer: int = 500_000,
    ) -> None:
        self._store = store
        self._clock = clock or SystemClock()
        self._flush_interval = flush_interval
        self._max_rows = max_rows
        self._max_buffer = max_buffer
        self._probes: list[ProbeRecord] = []
        self._samples: list[MetricSample] = []
        self._full = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.written_probes = 0
        self.written_samples = 0
        self.dropped = 0
        self.flushes = 0  # completed flushes that wrote something (observable in tests)
        self._flushed = asyncio.Condition()

    def add(self, result: ProbeResult) -> None:
        self._probes.append(
            ProbeRecord(
                project=result.project,
                ts=result.ts,
                level=result.level.value,
                latency_ms=result.latency_ms,
                reason=result.reason,
                http_status=result.http_status,
                probe=result.probe,
            )
        )
        self._samples.extend(
            MetricSample(result.project, result.ts, metric, value)
            for metric, value in result.metrics.items()
        )
        if len(self._probes) + len(self._samples) >= self._max_rows:
            self._full.set()

    async def flush(self) -> None:
        async with self._lock:
            probes, self._probes = self._probes, []
            samples, self._samples = self._samples, []
            wrote = bool(probes or samples)
            try:
                if probes:
                    await self._store.add_probes(probes)
                    self.written_probes += len(probes)
                    probes = []
                if samples:
                    await self._store.add_metric_samples(samples)
                    self.written_samples += len(samples)
                    samples = []
                if wrote:
                    await self._announce_flush()
            finally:
                # Whatever was not written goes back in front, within the bound.
                self._probes[:0] = probes
                self._samples[:0] = samples
                overflow = len(self._probes) + len(self._samples) - self._max_buffer
                if overflow > 0:
                    self.dropped += overflow
                    del self._samples[: min(overflow, len(self._samples))]

    async def _announce_flush(self) -> None:
        async with self._flushed:
            self.flushes += 1
            self._flushed.notify_all()

    async def wait_for_flushes(self, count: int) -> None:
        """Until ``count`` flushes have written rows (tests and benchmarks)."""
        async with self._flushed:
            await self._flushed.wait_for(lambda: self.flushes >= count)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="probe-recorder")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self.flush()

    async def _run(self) -> None:
        while True:
            await sleep_or_wake(self._clock, self._flush_interval, self._full)
            try:
                await self.flush()
            except Exception:
                log.exception("writing probe results failed; kept for the next flush")
