"""Shared test fixtures. Fixtures specific to one area live in that area's test module."""

from __future__ import annotations

import pytest

from agents.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
