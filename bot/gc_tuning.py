"""Garbage-collector settings for a long-running ``orch run`` process.

Every probe allocates a few hundred short-lived objects (futures, coroutine frames,
results, parsed headers).  With CPython's default thresholds (700, 10, 10) the young
generation is collected every few probes, so objects that merely live across one await
are traced and promoted, and promoted objects make the full collections come sooner; at
5,000 projects a full collection traced everything orch holds (about 0.25 s, once a
minute) and the collector took about 2 % of a core in all (docs/benchmarks.md).

Almost everything orch allocates is freed by reference counting; the collector is only
for cycles, so it can run far less often:
- the young generation is collected every ``YOUNG_THRESHOLD`` allocations instead of 700
  (cyclic garbage waits a little longer; nothing else changes);
- what start-up built (modules, the config, the polling tasks) is frozen out of the
  collector's generations, so full collections no longer trace it each time.

Off in tests and libraries (a test process starts many runtimes): ``orch run`` and the
benchmarks turn it on (``RuntimeOptions.tune_gc``).
"""

from __future__ import annotations

import gc
from typing import Final

YOUNG_THRESHOLD: Final = 20_000


def tune_for_service() -> None:
    """Freeze what exists now and collect the young generation less often."""
    gc.collect()  # start-up's own garbage goes first, not into the frozen set
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
