"""orch's commands run on uvloop where it is installed (bot.event_loop)."""

from __future__ import annotations

import asyncio

import pytest

from bot import event_loop


def test_commands_run_on_uvloop_and_return_the_result() -> None:
    pytest.importorskip("uvloop")  # a dependency on Linux and macOS; not on Windows

    async def which_loop() -> str:
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop()).__module__

    assert event_loop.run(which_loop()).startswith("uvloop")
