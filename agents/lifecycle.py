"""Small helpers for symmetric start/stop of background tasks."""

from __future__ import annotations

import asyncio
import contextlib


async def cancel_and_wait(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` and wait until it has really finished."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def cancel_all(tasks: list[asyncio.Task[None]], *, retry_every: float = 0.2) -> None:
    """Cancel ``tasks`` and wait until every one has finished.

    On Python 3.11 ``asyncio.wait_for`` (which redis-py wraps around every command) can
    swallow a cancellation that arrives just as the awaited call completes; the task then
    carries on.  So cancel again, every ``retry_every`` seconds, until it really stops.
    """
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=retry_every)
    # Collect the outcomes so no "exception was never retrieved" is left behind.
    await asyncio.gather(*tasks, return_exceptions=True)
