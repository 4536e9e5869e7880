"""A cap on calls per sliding window, on the injected clock.

Claude's token budgets (``analysis_daily_tokens``, ``analysis_incident_tokens``) bound
what a day costs, not how fast it is spent: in an alert storm hundreds of incidents
escalate within a minute, and each would be one request.  ``CallCap`` says whether one
more call fits in the last ``window_s`` seconds; the caller answers otherwise (for
Claude: the rule engine explains the incident, and says why).
"""

from __future__ import annotations

from collections import deque

from agents.clock import Clock


class CallCap:
    def __init__(self, clock: Clock, limit: int, window_s: float = 60.0) -> None:
        if limit < 0 or window_s <= 0:
            raise ValueError("a call cap needs limit >= 0 and window_s > 0")
        self._clock = clock
        self.limit = limit
        self.window_s = window_s
        self._calls: deque[float] = deque()  # monotonic start of each call in the window

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
