"""``SilenceBoard``: "is this project silenced?" answered without a store round trip.

The notifier asks for every incident event (``SlackNotifier(is_silenced=...)`` takes a
plain function), so the active silences are kept in memory: loaded at start, reloaded on
every ``silence.created`` / ``silence.ended`` this replica handles and every
``refresh_s`` (silences set through another replica whose events this one does not
handle).  A silence that runs out needs no event: ``is_silenced`` compares its end with
the clock at each call.

Wiring (Runtime)::

    silences = SilenceBoard(store, clock)
    silences.register(bus)                 # before bus.start()
    await silences.start()                 # after store.open()
    SlackNotifier(..., is_silenced=silences.is_silenced)
    ...
    await silences.stop()
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from agents.bus import EventBus
from agents.clock import Clock
from agents.events import SILENCE_CREATED, SILENCE_ENDED, Event
from storage.base import Store
from storage.operations_store import Silence

log = logging.getLogger(__name__)

ROLE: Final = "silence-board"
REFRESH_S: Final = 15.0


class SilenceBoard:
    def __init__(self, store: Store, clock: Clock, *, refresh_s: float = REFRESH_S) -> None:
        self._store = store
        self._clock = clock
        self._refresh_s = refresh_s
        self._by_project: dict[str, Silence] = {}
        self._task: asyncio.Task[None] | None = None

    def is_silenced(self, project: str) -> bool:
        silence = self._by_project.get(project)
        return silence is not None and silence.active_at(self._clock.now())

    def silence(self, project: str) -> Silence | None:
        """The project's active silence as last loaded, if it is still running."""
        return self._by_project.get(project) if self.is_silenced(project) else None

    def register(self, bus: EventBus, role: str = ROLE) -> None:
        bus.subscribe(role, self.handle, types=[SILENCE_CREATED, SILENCE_ENDED])

    async def handle(self, event: Event) -> None:
        await self.reload()

    async def reload(self) -> None:
        self._by_project = {s.project: s for s in await self._store.active_silences()}

    async def start(self) -> None:
        await self.reload()
        self._task = asyncio.create_task(self._keep_fresh(), name="silence-board")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _keep_fresh(self) -> None:
        while True:
            await self._clock.sleep(self._refresh_s)
            try:
                await self.reload()
            except Exception:  # the store is away: keep the last known silences
                log.warning("reloading silences failed; keeping the last known ones")
