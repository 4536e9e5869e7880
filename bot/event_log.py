"""``--events-jsonl``: every bus event as one JSON line, flushed as it arrives."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from agents.bus import EventBus
from agents.events import Event


class JsonlEventLog:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._file: TextIO | None = None

    def register(self, bus: EventBus) -> None:
        bus.subscribe("jsonl-log", self.write)

    def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self._path.open("a", encoding="utf-8")

    async def write(self, event: Event) -> None:
        if self._file is not None:
            self._file.write(event.to_json() + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
