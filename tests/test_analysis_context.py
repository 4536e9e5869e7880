"""The context an analysis reads, gathered from the store and a real service's /logs:
bounded, and redacted before anything else sees it."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
import pytest

from agents.analysis_context import LOG_BUDGET_CHARS, LOG_TAIL, PROBES, gather_context, summarise
from agents.events import INCIDENT_OPENED, Event
from bot.config import Config
from demo.fleet import Fleet
from storage.base import Incident, MetricSample, ProbeRecord
from tests.acting_fleet import acting_config, running_fleet
from tests.support import Stack

EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    async with running_fleet(["email-blast"]) as fleet:
        yield fleet


async def opened(stack: Stack, name: str = "email-blast") -> Incident:
    row = Incident(uuid.uuid4().hex, f"{name}:down", name, "down", "critical",
                   f"{name} is down: No space left on device", stack.clock.now())  # fmt: skip
    incident = await stack.store.open_incident(
        row, lambda i: Event(INCIDENT_OPENED, i.opened_at, "test", {}, i.project, i.id)
    )
    assert incident is not None
    return incident


async def test_a_full_disk_seen_through_the_services_own_logs(stack: Stack, fleet: Fleet) -> None:
    config: Config = acting_config(fleet, ["email-blast"])
    project = config.project("email-blast")
    await fleet.inject("email-blast", "disk_full")
    now = stack.clock.now()
    await stack.store.add_probes(
        [ProbeRecord("email-blast", now - timedelta(seconds=10 * i), "fail", 3.0,
                     "GET /health: No space left on device", 503) for i in range(30)]
    )  # fmt: skip
    await stack.store.add_metric_samples(
        [MetricSample("email-blast", now - timedelta(minutes=30 - i), "memory_percent", 40.0 + i)
         for i in range(30)]
    )  # fmt: skip
    incident = await opened(stack)

    async with aiohttp.ClientSession() as session:
        ctx = await gather_context(stack.store, project, incident, lambda: session, now)

    assert len(ctx.probes) == PROBES and ctx.probes[0]["level"] == "fail"
    assert ctx.incident is not None and ctx.incident["id"] == incident.id
    assert ctx.allowed_actions == ("restart", "clear_cache", "pause", "resume")
    [memory] = [m for m in ctx.metrics if m.metric == "memory_percent"]
    assert (memory.samples, memory.trend, memory.low, memory.high) == (30, "rising", 40.0, 69.0)
    lines = ctx.all_log_lines()
    assert lines and len(ctx.logs) <= LOG_TAIL
    assert any("No space left" in line.message for line in lines)
    assert sum(len(line.message) for line in lines) <= LOG_BUDGET_CHARS
    # The mailer's log names its recipients: none reaches the context.
    assert not [line for line in lines if EMAIL.search(line.message)]


async def test_a_project_that_cannot_answer_still_gets_a_context(stack: Stack) -> None:
    config = Config.model_validate(
        {"projects": [{"name": "gone", "url": "http://127.0.0.1:9", "allowed_actions": []}]}
    )
    incident = await opened(stack, "gone")
    async with aiohttp.ClientSession() as session:
        ctx = await gather_context(
            stack.store, config.project("gone"), incident, lambda: session, stack.clock.now()
        )
    assert ctx.logs == () and ctx.error_lines == ()
    assert ctx.notes and "/logs could not be read" in ctx.notes[0]


def test_metric_summary_says_when_it_crossed_its_level(stack: Stack) -> None:
    now = stack.clock.now()
    series = [MetricSample("p", now + timedelta(seconds=i), "error_rate", v)
              for i, v in enumerate([0.01, 0.02, 0.09, 0.2, float("nan")])]  # fmt: skip
    summary = summarise("error_rate", series, 0.05)
    assert summary is not None
    assert summary.crossed_at == (now + timedelta(seconds=2)).isoformat(timespec="seconds")
    assert (summary.samples, summary.trend) == (4, "rising")  # NaN is not a sample
    assert summarise("error_rate", [], 0.05) is None
