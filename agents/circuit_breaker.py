"""A circuit breaker for calls to something that may be down (Claude, DESIGN §6).

Closed: calls go through and consecutive failures are counted; ``threshold`` of them in
a row (default 3) open it.  Open: no call goes through for ``cooldown_s`` (default
5 min).  Then half-open: exactly one call goes through as a probe; its success closes the
breaker, its failure opens it for another cool-down.  A probe that ends without a verdict
(cancelled) hands its turn back with ``release``.

Time comes from the injected clock (``monotonic``), so tests drive the cool-down with a
FakeClock.  Not thread-safe; one event loop.
"""

from __future__ import annotations

from typing import Final, Literal

from agents.clock import Clock

State = Literal["closed", "open", "half_open"]

THRESHOLD: Final = 3
COOLDOWN_S: Final = 300.0


class CircuitBreaker:
    def __init__(
        self, clock: Clock, *, threshold: int = THRESHOLD, cooldown_s: float = COOLDOWN_S
    ) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        if cooldown_s < 0:
            raise ValueError("cooldown_s must not be negative")
        self.clock = clock
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.failures = 0  # consecutive, while closed
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return "closed"
        if self.clock.monotonic() - self._opened_at < self.cooldown_s:
            return "open"
        return "half_open"

    @property
    def ready(self) -> bool:
        """Whether a call would be let through now (without taking the half-open turn)."""
        state = self.state
        return state == "closed" or (state == "half_open" and not self._probing)

    @property
    def retry_in_s(self) -> float:
        """Seconds until the half-open probe may go (0 when not open)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown_s - self.clock.monotonic())

    def allow(self) -> bool:
        """Whether this call may go; in half-open, the first caller takes the one probe."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def success(self) -> None:
        self.failures = 0
        self._opened_at = None
        self._probing = False

    def failure(self) -> None:
        if self._probing or self._opened_at is not None:
            self._open()  # the probe failed: another cool-down
            return
        self.failures += 1
        if self.failures >= self.threshold:
            self._open()

    def release(self) -> None:
        """The probe ended without a verdict (cancelled): let the next caller probe."""
        self._probing = False

    def _open(self) -> None:
        self._opened_at = self.clock.monotonic()
        self._probing = False
        self.failures = 0
