"""A cap on calls per sliding window, on the injected clock.

Claude's token budgets (``analysis_daily_tokens``, ``analysis_incident_tokens``) bound
what a day costs, not how fast it is spent: in an alert storm hundreds of incidents
escalate within a minute, and each would be one request.  ``CallCap`` says whether one
more call fits in the last ``window_s`` seconds; the caller answers otherwise (for
Claude: the rule engine explains the incident, and says why).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from agents.clock import Clock


class CallCap:
    def __init__(
        self, clock: Clock, limit: int | Callable[[], int], window_s: float = 60.0
    ) -> None:
        """``limit``: a number, or a function read at each call (a config reload then
        changes the cap at once)."""
        if window_s <= 0 or (isinstance(limit, int) and limit < 0):
            raise ValueError("a call cap needs limit >= 0 and window_s > 0")
        self._clock = clock
        self._limit = limit if callable(limit) else (lambda: limit)
        self.window_s = window_s
        self._calls: deque[float] = deque()  # monotonic start of each call in the window

    @property
    def limit(self) -> int:
        return max(0, self._limit())

    def take(self) -> bool:
        """Count one call now if it fits under the cap; False (nothing counted) if not."""
        now = self._clock.monotonic()
        while self._calls and self._calls[0] <= now - self.window_s:
            self._calls.popleft()
        if len(self._calls) >= self.limit:
            return False
        self._calls.append(now)
        return True

    @property
    def retry_in_s(self) -> float:
        """Seconds until the oldest call in the window leaves it (0 when there is room)."""
        if len(self._calls) < self.limit or not self._calls:
            return 0.0
        return max(0.0, self._calls[0] + self.window_s - self._clock.monotonic())
