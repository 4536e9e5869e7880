"""Slow, bounded, reproducible wobble for simulated metrics.

A value is a pure function of (seed, time), so a FakeClock test sees the same numbers on
every run and a live demo sees them move like real gauges, never outside base ± amplitude.
"""

from __future__ import annotations

import math
import random

_WEIGHTS = (0.6, 0.3, 0.1)  # sum to 1, so the sum of sines stays within ±1


class Drift:
    def __init__(
        self,
        rng: random.Random,
        base: float,
        amplitude: float,
        periods: tuple[float, float] = (45.0, 900.0),
    ) -> None:
        self.base = base
        self.amplitude = amplitude
        self._waves = [
            (weight, 2 * math.pi / rng.uniform(*periods), rng.uniform(0, 2 * math.pi))
            for weight in _WEIGHTS
        ]

    def at(self, t: float) -> float:
        wobble = sum(w * math.sin(omega * t + phase) for w, omega, phase in self._waves)
        return self.base + self.amplitude * wobble

    @property
    def high(self) -> float:
        """The largest value :meth:`at` can return."""
        return self.base + self.amplitude
