"""Turn SIGINT/SIGTERM into an asyncio.Event, so every command stops the same way; SIGHUP
reloads the configuration (``orch run``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


def stop_event_on_signals() -> asyncio.Event:
    """The event a SIGINT or SIGTERM sets.  The stop is graceful (``Runtime.stop``): work
    in flight finishes or is handed back, so a second signal only says so again."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning("%s received again: still stopping gracefully", sig.name)
            return
        log.info("%s received: stopping gracefully (work in flight finishes or is handed"
                 " back to another replica)", sig.name)  # fmt: skip
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal, sig)
    return stop


async def wait_for_stop(stop: asyncio.Event, seconds: float | None) -> None:
    """Until a signal arrives or ``seconds`` pass (forever when None)."""
    if seconds is None:
        await stop.wait()
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


def reload_on_sighup(reload: Callable[[], Awaitable[object]]) -> Callable[[], None]:
    """SIGHUP reloads the configuration (the Unix convention for daemons): install a
    handler that runs ``reload`` in a task, and return that handler."""
    loop = asyncio.get_running_loop()
    running: set[asyncio.Task[None]] = set()  # a reference, so the task is not collected

    async def guarded() -> None:
        try:
            await reload()
        except Exception:  # a failed apply is logged; the process keeps running
            log.exception("reloading the configuration on SIGHUP failed")

    def handler() -> None:
        task = loop.create_task(guarded(), name="sighup-reload")
        running.add(task)
        task.add_done_callback(running.discard)

    sighup = getattr(signal, "SIGHUP", None)  # not on Windows
    if sighup is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sighup, handler)
    return handler


async def wait_for_any(*events: asyncio.Event) -> None:
    """Until one of ``events`` is set (a stop signal, or a restart asked over /control)."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
