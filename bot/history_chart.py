"""``/orch history``'s chart: the project's status and key metrics over the window, posted
(through the Slack outbox, like the digest) in the channel of the project's group.

A slash command's answer goes through its response_url, which cannot carry a file, so
the chart is a message of its own in the group's channel (the bot is a member there, and
the project is that team's business), with the asker named.  A project in no group has
no channel: the text answer says so and no chart is drawn.

Key metrics are the project's thresholded ones and ``latency_p95_ms``, the first
``MAX_METRICS`` that have samples.  Over 24 h they are the raw samples averaged per
5 minutes; over 7 days the hourly roll-ups (``metric_hours``), with the raw samples of the
hours not rolled up yet averaged per hour, so the line reaches the present.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from bot.cards import slack_id_or_none
from bot.config import Config, Project
from bot.digest_chart import Series, render_history_chart
from bot.digest_maths import maintenance, timeline_of
from bot.digest_post import message_with_chart
from bot.render import render_blocks
from bot.slack.views import HistoryView
from storage.base import MetricSample, Store

KEY_METRICS: Final = ("error_rate", "latency_p95_ms", "memory_percent", "cpu_percent")
MAX_METRICS: Final = 4
FINE_STEP: Final = timedelta(minutes=5)
HOUR: Final = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class ChartCaption:
    """The message the chart follows (``templates/history_chart.json.j2``)."""

    history: HistoryView
    until: datetime
    metrics: tuple[str, ...]  # drawn, in order
    mention_id: str | None  # who asked, when a Slack user id


def key_metrics(project: Project) -> list[str]:
    extra = sorted(m for m in project.thresholds if m not in KEY_METRICS)
    return [*KEY_METRICS, *extra]


def averaged(samples: Iterable[MetricSample], step: timedelta, until: datetime) -> Series:
    """Finite samples before ``until``, averaged per ``step`` (each point at its bucket's
    middle), oldest first."""
    width = step.total_seconds()
    buckets: dict[float, list[float]] = {}
    for s in samples:
        if s.ts < until and math.isfinite(s.value):
            start = s.ts.timestamp() // width * width
            buckets.setdefault(start, []).append(s.value)
    return [
        (datetime.fromtimestamp(start + width / 2, UTC), sum(v) / len(v))
        for start, v in sorted(buckets.items())
    ]


async def metric_points(
    store: Store, project: str, metric: str, since: datetime, until: datetime
) -> Series:
    if until - since <= timedelta(hours=48):
        raw = await store.metric_series(project, metric, since)
        return averaged(raw, FINE_STEP, until)
    hours = await store.metric_hours(project, metric, since, until)
    points: list[tuple[datetime, float]] = [(h.hour + HOUR / 2, h.avg) for h in hours]
    tail = hours[-1].hour + HOUR if hours else since
    if tail < until:
        points += averaged(await store.metric_series(project, metric, tail), HOUR, until)
    return points


async def queue_history_chart(
    store: Store,
    config: Config,
    project: Project,
    view: HistoryView,
    since: datetime,
    until: datetime,
    asked_by: str,
) -> str | None:
    """Draw and queue the chart; the channel it goes to, or None (no group)."""
    group = config.orchestrators.get(project.orchestrator or "")
    if group is None:
        return None
    facts = await store.report_facts([project.name], since, until)
    holes = maintenance(facts.silences).get(project.name, [])
    timeline = timeline_of(project.name, facts, holes)
    metrics: dict[str, Series] = {}
    for metric in key_metrics(project):
        if len(metrics) >= MAX_METRICS:
            break
        points = await metric_points(store, project.name, metric, since, until)
        if points:
            metrics[metric] = points
    png = await asyncio.to_thread(
        render_history_chart, project.name, view.window, timeline, view.uptime_pct, metrics,
        since, until, group.digest.zone,
    )  # fmt: skip
    caption = ChartCaption(view, until, tuple(metrics), slack_id_or_none(asked_by))
    message = render_blocks("history_chart.json.j2", caption=caption)
    key = f"history:{project.name}:{uuid.uuid4().hex}"
    rows = message_with_chart(
        group.channel, key, message, png, filename=f"history-{project.name}-{view.window}.png",
        title=f"{project.name}: last {view.window}",
        alt_text=f"Status and key metrics of {project.name} over the last {view.window}.",
    )  # fmt: skip
    await store.slack_enqueue(rows)
    return group.channel
