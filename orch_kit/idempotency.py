"""Remember ``/control`` answers by idempotency key, so a retried call acts only once.

Bounded (least recently used keys are forgotten first): orch retries within seconds, so a
few thousand keys cover every realistic retry while memory stays constant.  A call still
running when its retry arrives is joined, not repeated.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Outcome:
    action: str
    answer: dict[str, Any]
    replayed: bool


class KeyConflict(Exception):
    """The key was already used for a different action."""

    def __init__(self, key: str, action: str) -> None:
        super().__init__(f"idempotency_key {key!r} was already used for action {action!r}")


class IdempotencyCache:
    def __init__(self, maxsize: int = 4096) -> None:
        self._done: OrderedDict[str, tuple[str, dict[str, Any]]] = OrderedDict()
        self._running: dict[str, tuple[str, asyncio.Future[dict[str, Any]]]] = {}
        self._maxsize = maxsize

    def __len__(self) -> int:
        return len(self._done)

    async def run(
        self, key: str, action: str, perform: Callable[[], Awaitable[dict[str, Any]]]
    ) -> Outcome:
        """``perform()`` once per key; later calls with the key get its answer back."""
        if key in self._done:
            done_action, answer = self._done[key]
            self._done.move_to_end(key)
            if done_action != action:
                raise KeyConflict(key, done_action)
            return Outcome(action, answer, replayed=True)
        if key in self._running:
            running_action, first = self._running[key]
            if running_action != action:
                raise KeyConflict(key, running_action)
            try:
                # shield: a retry giving up must not cancel the original call's future
                answer = await asyncio.shield(first)
            except asyncio.CancelledError:
                if first.cancelled():
                    raise RuntimeError("the first call with this key was interrupted") from None
                raise
            return Outcome(action, answer, replayed=True)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._running[key] = (action, future)
        try:
            answer = await perform()
        except BaseException as exc:
            # Failed calls are not remembered: a retry may try again.
            if isinstance(exc, Exception):
                future.set_exception(exc)
                future.exception()  # mark retrieved: no "never retrieved" warning
            else:
                future.cancel()
            raise
        finally:
            del self._running[key]
        future.set_result(answer)
        self._done[key] = (action, answer)
        while len(self._done) > self._maxsize:
            self._done.popitem(last=False)
        return Outcome(action, answer, replayed=False)
