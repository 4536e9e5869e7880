"""Why probes start late: how long the event loop was away, and how much of that was
the garbage collector.

A ticker task asks to wake every ``TICK_S``; how much later than asked it woke is a loop
stall (a callback running long, the garbage collector, or the process not getting a
core on a busy machine).  ``gc.callbacks`` time every collection.  Both run in the
measured process during the window only.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from typing import Any

from bench.proc import percentile

TICK_S = 0.05


class Stalls:
    def __init__(self) -> None:
        self.stalls: list[float] = []
        self.gc_pauses: list[tuple[int, float]] = []  # (generation, seconds)
        self._gc_started = 0.0
        self._ticker: asyncio.Task[None] | None = None

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_pauses.append((info["generation"], time.perf_counter() - self._gc_started))

    async def _tick(self) -> None:
        while True:
            asked = time.monotonic()
            await asyncio.sleep(TICK_S)
            self.stalls.append(max(0.0, time.monotonic() - asked - TICK_S))

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)
        self._ticker = asyncio.create_task(self._tick())

    async def stop(self) -> dict[str, Any]:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        full = [s for gen, s in self.gc_pauses if gen == 2]
        return {
            "loop_stall_p99_s": percentile(self.stalls, 99),
            "loop_stall_max_s": max(self.stalls, default=0.0),
            "gc_pause_total_s": sum(s for _, s in self.gc_pauses),
            "gc_full_collections": len(full),
            "gc_full_pause_max_s": max(full, default=0.0),
        }
