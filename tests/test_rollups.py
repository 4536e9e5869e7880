"""Roll-ups, retention, uptime, downtime and MTTR on every backend of the contract suite.

Histories are synthetic with answers worked out by hand, or checked against
``storage.rollups.reference_coverage`` (the definition of uptime in plain Python over the
raw probes): whatever mix of roll-ups and raw rows a store reads, it must agree exactly.
"""

from __future__ import annotations

import asyncio
import math
import random
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agents.clock import FakeClock
from agents.events import INCIDENT_OPENED, INCIDENT_RESOLVED, Event
from agents.retention import RetentionJob
from storage.base import Incident, MetricSample, ProbeRecord, Store
from storage.migrate import load_migrations
from storage.rollups import reference_coverage, uptime_percent
from storage.sqlite import SQLiteStore
from storage.sqlite_codec import SQL, split_statements
from tests.support import eventually
from tests.test_store_contract import BACKENDS, opened_on

pytestmark = pytest.mark.timeout(60)

T = datetime(2026, 3, 2, tzinfo=UTC)  # an hour boundary
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@pytest.fixture(params=sorted(BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with opened_on(request.param, tmp_path) as opened:
        yield opened


def s(seconds: float) -> datetime:
    return T + timedelta(seconds=seconds)


def probe(project: str, at: datetime, level: str = "pass", latency: float = 10.0) -> ProbeRecord:
    return ProbeRecord(project, at, level, latency)


def steady(project: str, start: datetime, hours: int, fail_every: int = 0) -> list[ProbeRecord]:
    """A probe every 10 s; every ``fail_every``-th one fails (0: none)."""
    return [
        probe(
            project,
            start + timedelta(seconds=10 * i),
            "fail" if fail_every and i % fail_every == 0 else "pass",
        )
        for i in range(360 * hours)
    ]


def expected(probes: list[ProbeRecord], since: datetime, until: datetime) -> dict[str, float]:
    cover = reference_coverage(probes, since, until)
    return uptime_percent({p: [float(o), float(u)] for p, (o, u) in cover.items()})


# -- the definition, on hand-worked histories ---------------------------------------


async def test_two_hours_one_with_ten_percent_failed_is_95_percent(store: Store) -> None:
    await store.add_probes(steady("a", T, 1) + steady("a", T + HOUR, 1, fail_every=10))
    assert await store.uptime(None, T, T + 2 * HOUR) == {"a": 95.0}  # raw rows only

    assert await store.rollup_hours(T + 2 * HOUR) == 2
    assert await store.uptime(None, T, T + 2 * HOUR) == {"a": 95.0}  # roll-ups only
    assert await store.uptime(["a"], T + HOUR, T + 2 * HOUR) == {"a": 90.0}
    first, second = await store.probe_hours("a", T, T + 2 * HOUR)
    assert (first.hour, first.probes, first.failed, first.observed_s, first.up_s) == (
        T,
        360,
        0,
        3600.0,
        3600.0,
    )
    assert (second.probes, second.failed, second.observed_s, second.up_s) == (
        360,
        36,
        3600.0,
        3240.0,
    )
    assert second.latency_avg_ms == second.latency_max_ms == 10.0


async def test_time_weighted_with_recheck_and_gap(store: Store) -> None:
    """A failed probe stands only until the 1 s recheck; a long gap counts 5 min, no more."""
    await store.add_probes(
        [
            probe("a", s(0)),
            probe("a", s(60), "fail", latency=5000.0),  # a timeout: not in the latency stats
            probe("a", s(61)),  # recheck
            probe("a", s(3000)),  # after a 49-minute gap
        ]
    )
    # observed 60 + 1 + 300 (capped) + 300 (capped) = 661 s; up 660 s.
    want = {"a": 100.0 * 660 / 661}
    assert await store.uptime(None, T, T + HOUR) == want
    await store.rollup_hours(T + HOUR)
    assert await store.uptime(None, T, T + HOUR) == want
    (hour,) = await store.probe_hours("a", T, T + HOUR)
    assert (hour.probes, hour.failed, hour.observed_s, hour.up_s) == (4, 1, 661.0, 660.0)
    assert (hour.latency_avg_ms, hour.latency_max_ms) == (10.0, 10.0)


async def test_a_verdict_never_crosses_the_hour(store: Store) -> None:
    await store.add_probes([probe("a", s(3590), "fail"), probe("a", s(3700))])
    # 10 s of down before the hour ends; after it, the pass covers 5 min from 01:01:40.
    assert await store.uptime(None, T, T + 2 * HOUR) == {"a": 100.0 * 300 / 310}
    assert await store.uptime(None, T + HOUR, T + 2 * HOUR) == {"a": 100.0}


async def test_uptime_arguments(store: Store) -> None:
    await store.add_probes(steady("a", T, 1) + steady("b", T, 1, fail_every=2))
    assert await store.uptime(None, T, T + HOUR) == {"a": 100.0, "b": 50.0}
    assert await store.uptime(["b", "nobody"], T, T + HOUR) == {"b": 50.0}
    assert await store.uptime([], T, T + HOUR) == {}
    assert await store.uptime(None, T + HOUR, T + HOUR) == {}  # an empty window
    assert await store.uptime(None, T + DAY, T + 2 * DAY) == {}  # nothing observed
    with pytest.raises(ValueError, match="after"):
        await store.uptime(None, T + HOUR, T)
    with pytest.raises(ValueError, match="naive"):
        await store.uptime(None, datetime(2026, 3, 2), T)


# -- roll-ups ------------------------------------------------------------------------


async def test_rollup_is_idempotent_and_waits_for_the_hour_to_end(store: Store) -> None:
    await store.add_probes(steady("a", T, 3, fail_every=4) + steady("b", T, 2))
    await store.add_metric_samples(
        [MetricSample("a", s(i * 60), "cpu", float(i)) for i in range(120)]
    )

    assert await store.rollup_hours(T + 2 * HOUR + timedelta(minutes=30)) == 4  # a, b x 2 h
    hours = await store.probe_hours("a", T, T + DAY)
    metrics = await store.metric_hours("a", "cpu", T, T + DAY)
    assert [h.hour for h in hours] == [T, T + HOUR]  # 02:00 has not ended yet
    assert [(m.n, m.min, m.avg, m.max) for m in metrics] == [(60, 0, 29.5, 59), (60, 60, 89.5, 119)]

    assert await store.rollup_hours(T + 2 * HOUR + timedelta(minutes=30)) == 0
    assert await store.probe_hours("a", T, T + DAY) == hours
    assert await store.metric_hours("a", "cpu", T, T + DAY) == metrics
    assert await store.rollup_hours(T + 3 * HOUR) == 1  # now 02:00 of "a"
    assert await store.rollup_hours(T + 3 * HOUR) == 0


async def test_metric_rollup_skips_non_finite_samples(store: Store) -> None:
    values = [1.0, math.nan, 4.0, math.inf, -math.inf, -2.0]
    samples = [MetricSample("a", s(i), "x", v) for i, v in enumerate(values)]
    samples += [MetricSample("a", s(1), "only_nan", math.nan)]
    await store.add_metric_samples(samples)
    assert await store.rollup_hours(T + HOUR) == 1
    (x,) = await store.metric_hours("a", "x", T, T + HOUR)
    assert (x.hour, x.n, x.min, x.avg, x.max) == (T, 3, -2.0, 1.0, 4.0)
    assert await store.metric_hours("a", "only_nan", T, T + HOUR) == []
    assert await store.probe_hours("a", T, T + HOUR) == []  # samples but no probes


async def test_late_row_recomputes_its_hour_once(store: Store) -> None:
    probes = steady("a", T, 2)
    await store.add_probes(probes)
    await store.add_metric_samples([MetricSample("a", s(5), "cpu", 1.0)])
    await store.rollup_hours(T + 2 * HOUR)

    late = probe("a", s(1805), "fail")  # between 00:30:00 and 00:30:10
    await store.add_probes([late])
    await store.add_metric_samples([MetricSample("a", s(1805), "cpu", 3.0)])
    assert await store.uptime(None, T, T + 2 * HOUR) == expected([*probes, late], T, T + 2 * HOUR)
    assert await store.rollup_hours(T + 2 * HOUR) == 1
    assert await store.rollup_hours(T + 2 * HOUR) == 0

    first, second = await store.probe_hours("a", T, T + 2 * HOUR)
    assert (first.probes, first.failed, first.observed_s, first.up_s) == (361, 1, 3600.0, 3595.0)
    assert (second.probes, second.failed) == (360, 0)
    (cpu,) = await store.metric_hours("a", "cpu", T, T + HOUR)
    assert (cpu.n, cpu.avg, cpu.max) == (2, 2.0, 3.0)
    assert await store.uptime(None, T, T + 2 * HOUR) == {"a": 100.0 * 7195 / 7200}


def _history(seed: int, hours: int) -> list[ProbeRecord]:
    """Irregular probing for three projects: 10 s steps, 1 s rechecks after a failure,
    failure bursts, and gaps longer than the 5-minute cap; some equal timestamps."""
    rng = random.Random(seed)
    out: list[ProbeRecord] = []
    for project in ("a", "b", "c"):
        t, end, failing = 0.0, hours * 3600.0, False
        while t < end:
            if rng.random() < 0.02:
                failing = not failing
            level = (
                "fail" if failing or rng.random() < 0.01 else rng.choice(["pass"] * 9 + ["warn"])
            )
            out.append(probe(project, s(round(t, 3)), level))
            step = 1.0 if level == "fail" else 10.0
            if rng.random() < 0.003:
                step = rng.uniform(301, 1500)  # monitoring gap
            elif rng.random() < 0.01:
                step = 0.0  # a duplicate timestamp
            t += step
    return out


WINDOWS = [
    (T, T + 50 * HOUR),
    (T + 5 * HOUR, T + 45 * HOUR),
    (T + DAY, T + 2 * DAY),  # exactly one day
    (s(1234.5), s(50 * 3600 - 77)),
    (s(7 * 3600 + 100), s(7 * 3600 + 2000)),  # inside one hour
    (s(3 * 3600 + 3000), s(4 * 3600 + 10)),  # two partial hours, no whole one
    (T + 12 * HOUR, T + 12 * HOUR),
]


def _expect_all(probes: list[ProbeRecord]) -> list[dict[str, float]]:
    return [expected(probes, since, until) for since, until in WINDOWS]


async def _check_all(store: Store, want: list[dict[str, float]]) -> None:
    for (since, until), answer in zip(WINDOWS, want, strict=True):
        assert await store.uptime(None, since, until) == answer, (since, until)
    assert await store.uptime(["b"], *WINDOWS[3]) == {"b": want[3]["b"]}


async def test_rollups_plus_raw_equal_raw_alone(store: Store) -> None:
    """Exact agreement whatever the mix: raw rows only; hourly roll-ups then raw; daily
    sums, hourly roll-ups and edges; dirty hours inside rolled-up days; then all again."""
    probes = _history(7, 50)
    await store.add_probes(probes)
    want = _expect_all(probes)
    await _check_all(store, want)

    await store.rollup_hours(T + 17 * HOUR + timedelta(minutes=20))
    await _check_all(store, want)

    await store.rollup_hours(T + 50 * HOUR)
    await _check_all(store, want)

    late = [probe("a", s(3 * 3600 + 5.5), "fail"), probe("c", s(30 * 3600 + 20), "warn")]
    await store.add_probes(late)  # two rolled-up hours, in two rolled-up days, dirty again
    want = _expect_all([*probes, *late])
    await _check_all(store, want)

    assert await store.rollup_hours(T + 50 * HOUR) == 2
    await _check_all(store, want)


# -- the hours not rolled up: 5-minute buckets ----------------------------------------
# PostgreSQL keeps the spans of every 5-minute bucket (storage.postgres_buckets) and
# reads the current hour from them; SQLite reads it raw (its rollup_buckets does
# nothing).  Either way the answers are the definition's, exactly.

M = timedelta(minutes=1)


async def test_buckets_windows_ending_mid_hour_and_mid_bucket(store: Store) -> None:
    probes = _history(5, 2)
    await store.add_probes(probes)
    until = s(3600 + 37 * 60 + 20)  # 01:37:20: mid-hour, mid-bucket
    assert await store.rollup_hours(until) == 3  # 00:00 of the 3 projects
    await store.rollup_buckets(until - M)
    assert await store.rollup_buckets(until - M) == 0  # idempotent
    windows = [
        (T, until),
        (T + HOUR, until),  # the current hour so far
        (s(3600 + 20 * 60), s(3600 + 35 * 60)),  # whole buckets only
        (s(3600 + 21 * 60 + 7), s(3600 + 33 * 60 + 1)),  # partial buckets at both ends
        (s(3600 + 22 * 60), s(3600 + 24 * 60)),  # inside one bucket
        (s(3600 + 34 * 60), until),  # the last bucket rolled up, then the open one
        (s(25 * 60 + 3), s(3600 + 5 * 60 + 9)),  # across the hour, both edges partial
        (T + HOUR - 4 * M, T + HOUR + 4 * M),
    ]
    for since, upto in windows:
        assert await store.uptime(None, since, upto) == expected(probes, since, upto), (
            since,
            upto,
        )
    assert await store.uptime(["b"], T + HOUR, until) == {
        "b": expected(probes, T + HOUR, until)["b"]
    }


async def test_late_probe_in_a_rolled_up_bucket_is_read_raw_then_rolled_up(store: Store) -> None:
    probes = steady("a", T, 1) + steady("b", T, 1)
    await store.add_probes(probes)
    await store.rollup_buckets(T + 40 * M)  # buckets 00:00 to 00:35 rolled up
    late = [probe("a", s(12 * 60 + 3), "fail"), probe("b", s(34 * 60 + 59), "fail")]
    await store.add_probes(late)
    everything = [*probes, *late]
    for since, until in ((T, T + 40 * M), (T + 10 * M, T + 15 * M), (T + 35 * M, T + 36 * M)):
        assert await store.uptime(None, since, until) == expected(everything, since, until)
    rolled = await store.rollup_buckets(T + 40 * M)
    assert rolled in (0, 8)  # each late probe: its bucket and the next one, a and b
    assert await store.rollup_buckets(T + 40 * M) == 0
    for since, until in ((T, T + 40 * M), (T + 10 * M, T + 15 * M), (T + 35 * M, T + 36 * M)):
        assert await store.uptime(None, since, until) == expected(everything, since, until)
    assert await store.uptime(["a"], T + 10 * M, T + 15 * M) == {"a": 100.0 * 293 / 300}


async def test_a_probe_changes_the_next_buckets_spans(store: Store) -> None:
    """A span reaches into the next bucket: a late probe near a bucket's end changes the
    next bucket too, and one early in a bucket cuts the span of a probe from the bucket
    before.  Both buckets must be recomputed."""
    first = [probe("a", s(60)), probe("a", s(4 * 60), "fail"), probe("a", s(20 * 60))]
    await store.add_probes(first)
    await store.rollup_buckets(T + 30 * M)
    # The fail at 00:04 stands until 00:09: 60 s in bucket 00:00, 240 s in bucket 00:05.
    assert await store.uptime(None, T + 5 * M, T + 10 * M) == {"a": 0.0}

    cut = probe("a", s(6 * 60))  # cuts the fail at 00:06, up until 00:11
    await store.add_probes([cut])
    want = {"a": 100.0 * 240 / 300}
    assert await store.uptime(None, T + 5 * M, T + 10 * M) == want
    await store.rollup_buckets(T + 30 * M)
    assert await store.uptime(None, T + 5 * M, T + 10 * M) == want
    assert await store.uptime(None, T + 10 * M, T + 15 * M) == {"a": 100.0}  # 00:10-00:11

    reach = probe("a", s(14 * 60 + 50), "fail")  # 00:14:50 to 00:19:50: 290 s in 00:15
    await store.add_probes([reach])
    everything = [*first, cut, reach]
    for since, until in ((T + 15 * M, T + 20 * M), (T, T + 30 * M), (T + 14 * M, T + 16 * M)):
        assert await store.uptime(None, since, until) == expected(everything, since, until)
    await store.rollup_buckets(T + 30 * M)
    assert await store.uptime(None, T + 15 * M, T + 20 * M) == {"a": 0.0}
    for since, until in ((T, T + 30 * M), (T + 14 * M, T + 16 * M), (T, T + HOUR)):
        assert await store.uptime(None, since, until) == expected(everything, since, until)


async def test_buckets_never_carry_a_span_across_the_hour(store: Store) -> None:
    """The first bucket of an hour read raw: the last probe of the hour before must not
    reach into it, even when that earlier bucket is clean."""
    probes = [probe("a", s(59 * 60), "fail"), probe("a", s(3600 + 90)), probe("a", s(3600 + 900))]
    await store.add_probes(probes)
    await store.rollup_buckets(T + HOUR + 20 * M)
    late = probe("a", s(3600 + 60))  # the first two buckets of 01:00 are stale again
    await store.add_probes([late])
    everything = [*probes, late]
    for since, until in ((T + HOUR, T + HOUR + 17 * M), (T + 50 * M, T + HOUR + 3 * M)):
        assert await store.uptime(None, since, until) == expected(everything, since, until)
    assert await store.uptime(None, T + HOUR, T + HOUR + 7 * M) == {"a": 100.0}


async def test_buckets_follow_a_live_fleet_exactly(store: Store) -> None:
    """The production order: probes written about when they happen (a few minutes late
    now and then), the bucket job every minute a little behind, the hourly roll-up after
    each hour, and uptime up to "now" at every minute equal to the definition."""
    rng = random.Random(17)
    probes = _history(23, 2)
    arrival = {
        id(p): p.ts + timedelta(seconds=rng.choice([1] * 30 + [20, 200, 400])) for p in probes
    }
    waiting = sorted(probes, key=lambda p: arrival[id(p)])
    written: list[ProbeRecord] = []
    for minute in range(1, 2 * 60 + 8):
        now = T + minute * M + timedelta(seconds=17)
        batch = [p for p in waiting if arrival[id(p)] < now]
        waiting = waiting[len(batch) :]
        await store.add_probes(batch)
        written += batch
        await store.rollup_buckets(now - timedelta(seconds=rng.choice([5, 30, 70])))
        if minute % 60 == 3:
            await store.rollup_hours(now)
        starts = [T, now - 7 * M - timedelta(seconds=3), now - HOUR]
        for since in starts:
            got = await store.uptime(None, since, now)
            assert got == expected(written, since, now), (minute, since)
    assert not waiting


async def test_bucket_job_rolls_up_the_buckets_that_ended(store: Store) -> None:
    clock = FakeClock(T + 12 * M)
    probes = steady("a", T, 1, fail_every=7)
    await store.add_probes(probes)
    job = RetentionJob(store, clock)
    assert await job.roll_up_buckets() in (0, 2)  # 00:00, 00:05 (SQLite keeps no buckets)
    assert await job.roll_up_buckets() == 0
    for since, until in ((T, clock.now()), (T + 3 * M, T + 10 * M)):
        assert await store.uptime(None, since, until) == expected(probes, since, until)


async def test_postgres_bucket_roll_up_keeps_the_mark_of_a_probe_committed_meanwhile(
    tmp_path: Path,
) -> None:
    """A probe that commits while the bucket job runs leaves its bucket dirty (``gen``):
    read raw until the next run, never from the stale row."""
    from storage.postgres import PostgresStore
    from storage.postgres_buckets import mark_buckets
    from storage.postgres_rollups import mark_dirty

    async with BACKENDS["postgres"](tmp_path) as make:
        store = make()
        assert isinstance(store, PostgresStore)
        await store.open()
        try:
            probes = steady("a", T, 1)
            await store.add_probes(probes)
            late = probe("a", s(7 * 60 + 5), "fail")
            async with store.transaction() as writer:
                # Uncommitted: the late probe and its marks (gen bumped, rows locked).
                await writer.execute(
                    "INSERT INTO probes (project, ts, level, latency_ms)"
                    " VALUES ('a', $1, 'fail', 1)",
                    late.ts,
                )
                await mark_dirty(writer, [("a", late.ts)])
                await mark_buckets(writer, [late.ts])
                rollup = asyncio.ensure_future(store.rollup_buckets(T + 20 * M))
                await _until_waiting_on_a_lock(writer)
            assert await rollup == 4  # 00:00 to 00:15, computed without the late probe
            async with store.transaction() as conn:
                marks = await conn.fetch(
                    "SELECT bucket FROM bucket_dirty WHERE bucket < $1 ORDER BY bucket", T + 20 * M
                )
                stale = await conn.fetchval(
                    "SELECT failed FROM probe_bucket WHERE bucket = $1", T + 5 * M
                )
            assert [m["bucket"] for m in marks] == [T + 5 * M, T + 10 * M]  # kept: gen moved
            assert stale == 0
            everything = [*probes, late]
            for since, until in ((T, T + 20 * M), (T + 5 * M, T + 10 * M), (T, s(11 * 60 + 1))):
                assert await store.uptime(None, since, until) == expected(everything, since, until)
            assert await store.rollup_buckets(T + 20 * M) == 2
            assert await store.uptime(None, T + 5 * M, T + 10 * M) == {"a": 100.0 * 295 / 300}
        finally:
            await store.close()


async def test_postgres_buckets_go_with_the_raw_rows(tmp_path: Path) -> None:
    """Retention deletes the buckets before the raw horizon; the job drops marks there."""
    from storage.postgres import PostgresStore

    async with BACKENDS["postgres"](tmp_path) as make:
        store = make()
        assert isinstance(store, PostgresStore)
        await store.open()
        try:
            probes = _sparse("a", T, 3 * 24)
            await store.add_probes(probes)
            now = T + 3 * DAY
            await store.rollup_hours(now)
            assert await store.rollup_buckets(now) > 0
            await store.apply_retention(now, raw_days=1, rollup_days=3)
            late = probe("a", T + HOUR + 3 * M)  # before the horizon: never reconciled
            await store.add_probes([late])
            assert await store.rollup_buckets(now) == 0
            async with store.transaction() as conn:
                first = await conn.fetchval("SELECT min(bucket) FROM probe_bucket")
                marks = await conn.fetchval("SELECT count(*) FROM bucket_dirty")
            assert (first, marks) == (T + 2 * DAY, 0)
            since = now - DAY + 7 * M
            assert await store.uptime(None, since, now) == expected(probes, since, now)
        finally:
            await store.close()


async def test_postgres_migration_marks_existing_probes_for_buckets(tmp_path: Path) -> None:
    from agents.clock import SystemClock
    from storage.postgres import PostgresStore
    from storage.postgres_migrate import apply_migrations

    async with BACKENDS["postgres"](tmp_path) as make:
        store = make(auto_migrate=False)
        assert isinstance(store, PostgresStore)
        await store.open()
        try:
            async with store.transaction() as conn:
                schema = await conn.fetchval("SELECT current_schema()")
            before = [m for m in load_migrations("postgres") if m.version < 9]
            probes = steady("a", T, 1, fail_every=10)
            async with store.transaction() as conn:  # the schema as it was before 0009
                await apply_migrations(conn, before, schema=schema, clock=SystemClock())
                await conn.executemany(
                    "INSERT INTO probes (project, ts, level, latency_ms) VALUES ('a', $1, $2, 1)",
                    [(p.ts, p.level) for p in probes],
                )
            await store.migrate()
            assert await store.rollup_buckets(T + HOUR) == 12
            async with store.transaction() as conn:
                rows = await conn.fetch("SELECT probes, observed_us FROM probe_bucket")
            assert [tuple(r) for r in rows] == [(30, 300_000_000)] * 12
            since, until = T + 3 * M, s(47 * 60 + 5)
            assert await store.uptime(None, since, until) == expected(probes, since, until)
        finally:
            await store.close()


def test_split_buckets() -> None:
    from storage.postgres_buckets import floor_bucket, split_buckets

    assert floor_bucket(s(7 * 60 + 59.5)) == T + 5 * M
    assert split_buckets(T + 5 * M, T + 20 * M) == ((T + 5 * M, T + 20 * M), [])
    assert split_buckets(s(301), s(1199)) == (
        (T + 10 * M, T + 15 * M),
        [(s(301), T + 10 * M), (T + 15 * M, s(1199))],
    )
    assert split_buckets(s(301), s(599)) == (None, [(s(301), s(599))])
    assert split_buckets(s(301), s(601)) == (None, [(s(301), s(601))])
    assert split_buckets(s(300), s(300)) == (None, [])


# -- retention -----------------------------------------------------------------------


def _sparse(project: str, start: datetime, hours: int) -> list[ProbeRecord]:
    """Six probes an hour (every 10 min), alternately pass and fail in odd hours."""
    return [
        probe(
            project, start + timedelta(minutes=10 * i), "fail" if (i // 6) % 2 and i % 2 else "pass"
        )
        for i in range(6 * hours)
    ]


async def _incident_history(store: Store) -> None:
    opened = Incident("i1", "a:down", "a", "down", "critical", "a is down", T)
    await store.open_incident(opened, _announce(INCIDENT_OPENED))
    await store.resolve_incident("a:down", T + HOUR, _announce(INCIDENT_RESOLVED))


async def test_retention_prunes_handled_event_markers_and_job_claims_after_30_days(
    store: Store,
) -> None:
    """Bookkeeping does not grow for ever: a role's "handled" marker and a job's claim go
    after 30 days (both stamped by the store's or the database's own clock, now)."""
    assert await store.claim_event("notifier", "e1")
    assert await store.claim_job_run("retention", "2026-12-03T10", "r1")
    now = datetime.now(UTC)
    deleted = await store.apply_retention(now + 29 * DAY, raw_days=2, rollup_days=5)
    assert (deleted["consumed_events"], deleted["job_runs"]) == (0, 0)
    assert not await store.claim_event("notifier", "e1")  # still marked: a redelivery is skipped
    deleted = await store.apply_retention(now + 31 * DAY, raw_days=2, rollup_days=5)
    assert (deleted["consumed_events"], deleted["job_runs"]) == (1, 1)
    assert await store.claim_event("notifier", "e1")  # the marker is gone
    assert await store.claim_job_run("retention", "2026-12-03T10", "r2")  # so is the claim


async def test_retention_deletes_rolled_up_raw_rows_and_old_rollups(store: Store) -> None:
    now = T + 10 * DAY + timedelta(minutes=30)
    probes = _sparse("a", T, 10 * 24)
    await store.add_probes(probes)
    # Three samples per probe: both stores count deleted samples, not rows of their own.
    await store.add_metric_samples(
        [MetricSample("a", p.ts, m, 1.0) for p in probes for m in ("cpu", "mem", "rps")]
    )
    await _incident_history(store)
    before = await store.count_rows()
    last_2d = await store.uptime(None, now - 2 * DAY, now)
    last_4d = await store.uptime(None, now - 4 * DAY, now)

    assert await store.rollup_hours(now) == 240
    deleted = await store.apply_retention(now, raw_days=2, rollup_days=5)
    # Raw rows before floor(now - 2 d) = T + 8 d go: 8 days x 24 h x 6 probes; roll-ups of
    # the whole days before now - 5 d: 5 days of 24 hours.
    assert deleted == {
        "probes": 1152,
        "metric_samples": 3 * 1152,
        "probe_hourly": 120,
        "probe_daily": 5,
        "metric_hourly": 3 * 120,
        "consumed_events": 0,
        "job_runs": 0,
    }
    after = await store.count_rows()
    assert after == before | {"probes": 288, "metric_samples": 3 * 288}  # events, incidents kept
    assert min(p.ts for p in await store.recent_probes("a", limit=1000)) == T + 8 * DAY
    assert (await store.probe_hours("a", T, now))[0].hour == T + 5 * DAY
    assert await store.apply_retention(now, raw_days=2, rollup_days=5) == dict.fromkeys(deleted, 0)

    # The same answers from what is left: roll-ups for whole hours older than the raw
    # horizon, the partial edge hour scaled, raw rows after it.
    assert await store.uptime(None, now - 2 * DAY, now) == pytest.approx(last_2d, rel=1e-12)
    assert await store.uptime(None, now - 4 * DAY, now) == pytest.approx(last_4d, rel=1e-12)
    assert await store.downtime("a", T, now) == 3600.0  # incidents survive retention


async def test_retention_spares_hours_not_rolled_up(store: Store) -> None:
    now = T + 4 * DAY
    await store.add_probes(_sparse("a", T, 4 * 24))
    await store.rollup_hours(now)
    late = probe("a", T + DAY + timedelta(minutes=5), "fail")  # its hour is dirty again
    await store.add_probes([late])

    deleted = await store.apply_retention(now, raw_days=1, rollup_days=3)
    assert deleted["probes"] == 24 * 6  # day 0 only: stops at the first dirty hour
    assert (await store.count_rows())["probes"] == 3 * 24 * 6 + 1

    assert await store.rollup_hours(now) == 1
    (hour,) = await store.probe_hours("a", T + DAY, T + DAY + HOUR)
    assert (hour.probes, hour.failed) == (7, 1)
    deleted = await store.apply_retention(now, raw_days=1, rollup_days=3)
    assert deleted["probes"] == 2 * 24 * 6 + 1
    assert (await store.count_rows())["probes"] == 24 * 6

    # A row older than the raw horizon cannot be reconciled: the roll-up stays as it was.
    await store.add_probes([probe("a", T + DAY + timedelta(minutes=7), "fail")])
    assert await store.rollup_hours(now) == 0
    assert await store.probe_hours("a", T + DAY, T + DAY + HOUR) == [hour]
    assert (await store.apply_retention(now, raw_days=1, rollup_days=3))["probes"] == 1


async def test_partial_hour_beyond_the_raw_horizon_is_scaled(store: Store) -> None:
    await store.add_probes(steady("a", T, 1) + steady("a", T + HOUR, 1, fail_every=2))
    await store.rollup_hours(T + 2 * DAY)
    await store.apply_retention(T + 2 * DAY, raw_days=1, rollup_days=5)
    assert (await store.count_rows())["probes"] == 0
    # Half of a 100 % hour and half of a 50 % hour.
    got = await store.uptime(None, T + timedelta(minutes=30), T + timedelta(minutes=90))
    assert got == pytest.approx({"a": 75.0}, rel=1e-12)


async def test_retention_days_are_validated(store: Store) -> None:
    with pytest.raises(ValueError, match="raw_days"):
        await store.apply_retention(T, raw_days=10, rollup_days=5)
    with pytest.raises(ValueError, match="raw_days"):
        await store.apply_retention(T, raw_days=0)
    with pytest.raises(ValueError, match="raw_days"):
        RetentionJob(store, FakeClock(T), raw_days=-1)


async def test_retention_job_rolls_up_then_prunes(store: Store) -> None:
    clock = FakeClock(T + 2 * HOUR + timedelta(minutes=1))
    await store.add_probes(steady("a", T, 2, fail_every=10))
    job = RetentionJob(store, clock, raw_days=1, rollup_days=3)

    report = await job.run_once()
    assert (report.at, report.rolled_up, report.deleted["probes"]) == (clock.now(), 2, 0)
    await clock.advance(2 * 86400)
    report = await job.run_once()
    assert (report.rolled_up, report.deleted["probes"], report.deleted["probe_hourly"]) == (
        0,
        720,
        0,
    )
    assert await store.uptime(None, T, T + 2 * HOUR) == {"a": 90.0}  # from roll-ups only
    await clock.advance(86400)  # roll-ups go by whole days: day T is not 3 days old yet
    assert (await job.run_once()).deleted["probe_hourly"] == 0
    await clock.advance(86400)
    deleted = (await job.run_once()).deleted
    assert (deleted["probe_hourly"], deleted["probe_daily"]) == (2, 1)
    assert await store.uptime(None, T, T + 2 * HOUR) == {}


# -- incidents: downtime and MTTR ----------------------------------------------------


def _announce(type_: str) -> Any:
    def build(row: Incident) -> Event:
        return Event(type_, row.resolved_at or row.opened_at, "test", {}, row.project, row.id)

    return build


async def test_downtime_is_clipped_and_mttr_counts_resolved_down_incidents(store: Store) -> None:
    async def incident(fp: str, opened: float, resolved: float | None) -> None:
        project, condition = fp.split(":", 1)
        row = Incident(f"{fp}@{opened}", fp, project, condition, "critical", "x", s(opened))
        await store.open_incident(row, _announce(INCIDENT_OPENED))
        if resolved is not None:
            await store.resolve_incident(fp, s(resolved), _announce(INCIDENT_RESOLVED))

    await incident("a:down", -1800, 600)  # 40 min, starts before the window
    await incident("a:down", 3600, 3900)  # 5 min
    await incident("a:down", 7200, None)  # still open
    await incident("a:metric:error_rate", 0, 3000)  # not an outage
    await incident("b:down", 0, 5000)  # another project

    window = (T, s(9000))
    assert await store.downtime("a", *window) == 600 + 300 + 1800
    assert await store.mttr("a", *window) == (2400 + 300) / 2
    assert await store.downtime("a", s(1200), s(3600)) == 0.0
    assert await store.mttr("a", s(1200), s(3600)) is None
    assert await store.downtime("a", s(3720), s(10800)) == 180 + 3600
    assert await store.mttr("a", s(3720), s(10800)) == 300.0
    assert await store.downtime("b", *window) == 5000.0
    assert await store.downtime("nobody", *window) == 0.0


# -- backend specifics ---------------------------------------------------------------


async def test_sqlite_migration_marks_existing_rows_for_rollup(tmp_path: Path) -> None:
    """Rows written before the roll-up tables existed are rolled up on the first run."""
    path = tmp_path / "orch.db"
    with sqlite3.connect(path) as conn:
        conn.execute(SQL.create_schema_migrations)
        for m in load_migrations("sqlite")[:2]:
            for statement in split_statements(m.sql):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?, 'x')", (m.version, m.name))
        start = int((T - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) * 1_000_000
        conn.executemany(
            "INSERT INTO probes (project, ts_us, level, latency_ms) VALUES ('a', ?, ?, 1.0)",
            [(start + i * 10_000_000, "fail" if i % 10 == 0 else "pass") for i in range(360)],
        )
    conn.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        assert await store.rollup_hours(T + HOUR) == 1
        assert await store.uptime(None, T, T + HOUR) == {"a": 90.0}
    finally:
        await store.close()


async def test_postgres_migration_marks_existing_rows_for_rollup(tmp_path: Path) -> None:
    from agents.clock import SystemClock
    from storage.postgres import PostgresStore
    from storage.postgres_migrate import apply_migrations

    async with BACKENDS["postgres"](tmp_path) as make:
        store = make(auto_migrate=False)
        assert isinstance(store, PostgresStore)
        await store.open()
        try:
            async with store.transaction() as conn:
                schema = await conn.fetchval("SELECT current_schema()")
            async with store.transaction() as conn:  # the schema as it was before 0003
                await apply_migrations(
                    conn, load_migrations("postgres")[:2], schema=schema, clock=SystemClock()
                )
                await conn.executemany(
                    "INSERT INTO probes (project, ts, level, latency_ms) VALUES ('a', $1, $2, 1)",
                    [(s(10 * i), "fail" if i % 10 == 0 else "pass") for i in range(360)],
                )
            await store.migrate()
            assert await store.rollup_hours(T + HOUR) == 1
            assert await store.uptime(None, T, T + HOUR) == {"a": 90.0}
        finally:
            await store.close()


async def test_postgres_rollup_keeps_the_mark_of_a_row_committed_meanwhile(
    tmp_path: Path,
) -> None:
    """A write that commits while a roll-up runs must leave its hour dirty (``gen``)."""
    from storage.postgres import PostgresStore
    from storage.postgres_rollups import mark_dirty

    async with BACKENDS["postgres"](tmp_path) as make:
        store = make()
        assert isinstance(store, PostgresStore)
        await store.open()
        try:
            await store.add_probes(steady("a", T, 1))
            async with store.transaction() as writer:
                # Uncommitted: a late fail probe and its mark (gen bumped, row locked).
                await writer.execute(
                    "INSERT INTO probes (project, ts, level, latency_ms)"
                    " VALUES ('a', $1, 'fail', 1)",
                    s(5),
                )
                await mark_dirty(writer, [("a", s(5))])
                rollup = asyncio.ensure_future(store.rollup_hours(T + HOUR))
                await _until_waiting_on_a_lock(writer)
            # The writer committed; the roll-up finished without its row or clearing it.
            assert await rollup == 1
            (hour,) = await store.probe_hours("a", T, T + HOUR)
            assert hour.failed == 0
            assert await store.rollup_hours(T + HOUR) == 1
            (hour,) = await store.probe_hours("a", T, T + HOUR)
            assert (hour.probes, hour.failed) == (361, 1)
        finally:
            await store.close()


async def _until_waiting_on_a_lock(conn: Any) -> None:
    """Until another backend waits for a lock ``conn`` holds (polled: database state)."""
    pid = conn.get_server_pid()

    async def blocked() -> bool:
        # Activity is snapshotted once per transaction, and ``conn`` is inside one.
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        sql = "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))"
        return bool(await conn.fetchval(sql, pid))

    await eventually(blocked, "the roll-up to wait for the writer's lock", every=0.005)
