"""Turn SIGINT/SIGTERM into an asyncio.Event, so every command stops the same way."""

from __future__ import annotations

import asyncio
import contextlib
import signal


def stop_event_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return stop


async def wait_for_stop(stop: asyncio.Event, seconds: float | None) -> None:
    """Until a signal arrives or ``seconds`` pass (forever when None)."""
    if seconds is None:
        await stop.wait()
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
