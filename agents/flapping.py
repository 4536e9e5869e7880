"""Flap detection, Nagios style, as a pure state machine.

The input is the raw level of every probe (pass | warn | fail), not the debounced status:
hysteresis hides exactly the oscillation we want to see.  Over the last ``window``
observations (21 by default) a *state change* is any pair of consecutive observations
with different levels, so there are at most ``window - 1`` changes.  Like Nagios, newer
changes weigh more than older ones; the weight rises linearly from ``LOW_WEIGHT`` for the
oldest possible change to ``HIGH_WEIGHT`` for the newest::

    weight(i) = LOW_WEIGHT + (HIGH_WEIGHT - LOW_WEIGHT) * i / (window - 2)
                                        for change slot i = 0 (oldest) .. window - 2 (newest)

    percent   = sum(weight(i) for every slot i holding a change) / (window - 1)

(0.8 → 1.2 as the design asks; Nagios's own source uses 0.75 → 1.25, same shape).  A full
window of changes gives 1.0 (100 %); one change in the newest slot alone gives
1.2 / 20 = 6 %.  The divisor is always ``window - 1``: until the window has filled, the
missing older observations count as "same as the oldest one seen", which is what Nagios
does by seeding its history with the first state, so a freshly started project cannot
look like it is flapping on two or three probes.

Flapping starts when ``percent >= start`` and stops when ``percent <= stop``; in between
the previous verdict holds (hysteresis, so the flag itself does not flap).
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.probe_result import Level

LOW_WEIGHT = 0.8
HIGH_WEIGHT = 1.2


def percent_state_change(history: tuple[Level, ...], window: int) -> float:
    """Weighted share (0.0-1.0) of state changes in the newest ``window`` observations."""
    recent = history[-window:]
    slots = window - 1  # possible changes in a full window
    # Align to the newest end: the newest change always sits in the last (heaviest) slot.
    offset = slots - (len(recent) - 1)
    total = 0.0
    for j in range(1, len(recent)):
        if recent[j] != recent[j - 1]:
            slot = offset + j - 1
            total += LOW_WEIGHT + (HIGH_WEIGHT - LOW_WEIGHT) * slot / (slots - 1)
    return total / slots


@dataclass(frozen=True, slots=True)
class FlapState:
    history: tuple[Level, ...] = ()
    flapping: bool = False
    percent: float = 0.0


def step(
    state: FlapState, level: Level, *, window: int, start: float, stop: float
) -> tuple[FlapState, bool | None]:
    """Add one observation. Returns the new state and the edge: True (started flapping),
    False (stopped) or None (no change of verdict)."""
    history = state.history
    if not state.percent and not state.flapping and len(history) == window and history[-1] is level:
        # A full, steady window that this observation continues: nothing moves (the
        # common case, taken without rebuilding and rescanning the window).
        return state, None
    history = (*history, level)[-window:]
    percent = percent_state_change(history, window)
    flapping = state.flapping
    if not flapping and percent >= start:
        flapping = True
    elif flapping and percent <= stop:
        flapping = False
    edge = flapping if flapping != state.flapping else None
    return FlapState(history, flapping, percent), edge
