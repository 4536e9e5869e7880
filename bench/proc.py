"""Process-level helpers shared by the bench's processes: limits, CPU, memory, percentiles."""

from __future__ import annotations

import asyncio
import math
import resource
import sys
import time
from collections.abc import Sequence


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard one; returns the new soft limit.

    A thousand keep-alive connections plus as many listening sockets overrun the usual
    soft limit of 1024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def cpu_seconds() -> float:
    """CPU time (user + system) of every thread of this process, in seconds."""
    return time.process_time()


def kernel_seconds() -> float:
    """System CPU time of every thread of this process, in seconds."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); NaN for no samples."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


async def stdin_closed() -> None:
    """Return when stdin reaches end of file: the parent is gone or let go of us."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass
