"""A bounded, in-memory tail of a service's log for ``/logs``.

A service that already ships logs elsewhere can answer ``/logs`` from there instead; this
is the simple case: keep the last N lines, newest last.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

from orch_kit.model import LEVEL_ALIASES, LEVELS, LogEntry, LogQuery


class LogBuffer:
    def __init__(
        self, maxlen: int = 5000, now: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._entries: deque[LogEntry] = deque(maxlen=maxlen)
        self._now = now

    def append(self, level: str, message: str, ts: datetime | None = None) -> LogEntry:
        level = LEVEL_ALIASES.get(level, level)
        if level not in LEVELS:
            raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}")
        entry = LogEntry(ts or self._now(), level, message)
        self._entries.append(entry)
        return entry

    def query(self, query: LogQuery) -> list[LogEntry]:
        """The newest ``query.limit`` matching entries, oldest first."""
        picked: list[LogEntry] = []
        for entry in reversed(self._entries):
            if query.since is not None and entry.ts <= query.since:
                break  # entries are in time order: nothing older can match
            if query.wants(entry):
                picked.append(entry)
                if len(picked) >= query.limit:
                    break
        picked.reverse()
        return picked

    def __len__(self) -> int:
        return len(self._entries)
