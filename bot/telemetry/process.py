"""This process's CPU and memory as the contract's ``cpu_percent`` and ``memory_percent``.

CPU is the share of the machine's cores the process used between two readings (so it
stays within 0–100 however many cores there are); a reading less than a second after the
previous one repeats it rather than measuring a window too short to mean anything.
Memory is the resident set over physical memory, from ``/proc`` where there is one.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Callable

MIN_WINDOW_S = 1.0


class ProcessMeter:
    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._cores = os.cpu_count() or 1
        self._at = monotonic()
        self._cpu = time.process_time()
        self._last_percent = 0.0

    def cpu_percent(self) -> float:
        now, cpu = self._monotonic(), time.process_time()
        elapsed = now - self._at
        if elapsed >= MIN_WINDOW_S:
            share = (cpu - self._cpu) / elapsed / self._cores
            self._last_percent = round(min(100.0, max(0.0, share * 100.0)), 2)
            self._at, self._cpu = now, cpu
        return self._last_percent

    def memory_percent(self) -> float:
        total = _physical_memory()
        if not total:
            return 0.0
        return round(min(100.0, resident_bytes() * 100.0 / total), 2)


def resident_bytes() -> int:
    """The resident set now (Linux), else the peak so far (what getrusage knows)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # macOS bytes, Linux KiB


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0
