"""Batches probe results into the store: one transaction per flush, not per probe.

At a thousand projects a row-per-commit store would spend more time committing than the
monitor spends probing; a flush every second (or every ``max_rows``) keeps writes cheap.

Rows that fail to write stay in the buffer, in order, and are retried on the next flush:
while the database is unreachable (issue 10.1) the buffer is the write buffer for probe
results, and the first flush after it is back writes them all, oldest first, in
transactions of ``max_rows``.  Bounded by ``max_buffer`` rows (probe results plus metric
samples; 500,000 is about 80 min of 1,000 projects probed every 10 s, each probe with its
health metrics); beyond it the oldest metric samples go first, then the oldest probe
results (which carry uptime), counted in ``dropped_samples`` / ``dropped_probes`` and
logged (``agents.write_buffer.Outage``: once when an outage starts, once when it ends).
"""

from __future__ import annotations

import asyncio
import logging

from agents.clock import Clock, SystemClock, sleep_or_wake
from agents.lifecycle import cancel_and_wait
from agents.probe_result import ProbeResult
from agents.write_buffer import Outage
from storage.base import MetricSample, ProbeRecord, Store
from storage.postgres_connect import unreachable

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
        self.dropped_probes = 0
        self.dropped_samples = 0
        # Its bound counts rows (probe results and metric samples): see the docstring.
        self.outage = Outage("probe recorder", "probe results", max_buffer, self._clock)
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
        if result.metrics:  # most probes scrape nothing (once per scrape_interval)
            self._samples.extend(
                MetricSample(result.project, result.ts, metric, value)
                for metric, value in result.metrics.items()
            )
        if len(self._probes) + len(self._samples) >= self._max_rows:
            self._full.set()

    @property
    def held(self) -> int:
        """Probe results waiting to be written (all of them, between two flushes)."""
        return len(self._probes)

    @property
    def dropped(self) -> int:
        return self.dropped_probes + self.dropped_samples

    async def flush(self) -> None:
        async with self._lock:
            probes, self._probes = self._probes, []
            samples, self._samples = self._samples, []
            late = self.outage.down
            wrote = 0  # probe results written by this flush
            rows = len(probes) + len(samples)
            try:
                # In chunks: a backlog from an outage is written (and encoded) a
                # transaction at a time, and what was written stays written.
                while probes:
                    chunk = probes[: self._max_rows]
                    await self._store.add_probes(chunk)
                    del probes[: len(chunk)]
                    self.written_probes += len(chunk)
                    wrote += len(chunk)
                while samples:
                    chunk_s = samples[: self._max_rows]
                    await self._store.add_metric_samples(chunk_s)
                    del samples[: len(chunk_s)]
                    self.written_samples += len(chunk_s)
                if late:
                    self.outage.wrote(wrote)
                if rows:
                    await self._announce_flush()
            except Exception as exc:
                if unreachable(exc):
                    self.outage.failed(exc, len(probes))
                raise
            finally:
                # Whatever was not written goes back in front, within the bound.
                self._probes[:0] = probes
                self._samples[:0] = samples
                self._trim()

    def _trim(self) -> None:
        overflow = len(self._probes) + len(self._samples) - self._max_buffer
        if overflow <= 0:
            return
        samples = min(overflow, len(self._samples))
        del self._samples[:samples]
        self.dropped_samples += samples
        probes = overflow - samples
        del self._probes[:probes]
        self.dropped_probes += probes
        self.outage.drop(overflow, "metric samples, then probe results")

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
            except Exception as exc:
                if not unreachable(exc):  # an outage is logged once, by self.outage
                    log.exception("writing probe results failed; kept for the next flush")
