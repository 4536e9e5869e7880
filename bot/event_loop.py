"""Which event loop ``orch`` runs on: uvloop where it is installed, asyncio's otherwise.

uvloop (libuv) does the same work as asyncio's default loop for roughly a third less CPU
per probe on a large fleet (docs/benchmarks.md), and orch relies on nothing the default
loop has that uvloop lacks.  It is a dependency on Linux and macOS; where it is missing
(Windows) orch simply runs on the default loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's ``new_event_loop``, or None (asyncio's default) when it is absent."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the fastest loop available."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
