"""How both stores answer ``uptime_hours`` (``storage.activity_store``): the hours of the
window, and the merge of clean hourly roll-ups with ``uptime`` for the hours not rolled
up yet.  Kept apart from the protocol because it needs ``storage.rollups``, which needs
``storage.base``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime

from storage.activity_store import HourlyUptime
from storage.rollups import HOUR, check_aware, floor_hour


def window_hours(first_hour: datetime, until: datetime) -> list[datetime]:
    """The starts of the UTC hours from ``first_hour``'s to the one holding ``until``
    (excluded when ``until`` is exactly its start)."""
    hour, until = floor_hour(first_hour), check_aware(until)
    out: list[datetime] = []
    while hour < until:
        out.append(hour)
        hour += HOUR
    return out


async def merge_hours(
    projects: Sequence[str],
    hours: list[datetime],
    until: datetime,
    rolled: Iterable[tuple[str, datetime, float, float]],
    fresh: set[datetime],
    uptime: Callable[[Sequence[str], datetime, datetime], Awaitable[dict[str, float]]],
) -> HourlyUptime:
    """The answer of ``uptime_hours`` from the clean roll-ups ``rolled`` (project, hour,
    observed, up) and, for the hours in ``fresh`` (not rolled up, or stale) and a partial
    last hour, ``uptime`` asked once per such hour for every project."""
    table: dict[tuple[str, datetime], float | None] = {}
    for project, hour, observed, up in rolled:
        table[(project, hour)] = 100.0 * up / observed if observed > 0 else None
    until = check_aware(until)
    for hour in hours:
        end = min(hour + HOUR, until)
        if hour in fresh or end < hour + HOUR:
            answered = await uptime(projects, hour, end)
            for project in projects:
                table[(project, hour)] = answered.get(project)
    return {p: [(h, table.get((p, h))) for h in hours] for p in projects}
