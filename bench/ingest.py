"""Metric samples and probes ingested per second into PostgreSQL through the real
``PostgresStore``.

``python -m bench ingest``.  Metric samples go through ``add_metric_samples`` and probes
through ``add_probes``, in batches of ``--batch`` samples (probes) one after the other, as
the probe recorder writes them (one transaction per call: encode the rows, one COPY,
upsert the roll-ups' dirty marks).  ``metric_samples`` holds a row per probe instant with
that probe's samples in arrays (migrations/postgres/0008), so a batch of samples is far
fewer rows: samples are counted in samples/s, never rows.  The baseline is the least
PostgreSQL needs for the same data: ``copy_records_to_table`` of ready-made tuples (the
store's own wide rows, encoded before the clock starts, a COPY per batch) into an
identical table (same columns, identity, checks and indexes: ``CREATE TABLE ... (LIKE ...
INCLUDING ALL)``) with nothing else.  Two references for samples: the same wide COPY into
the table without its indexes, and a COPY of one row per sample into the old narrow layout
(``(project, metric, ts, value)``, btree on ``(project, metric, ts)``, BRIN on ``ts``).
Store and baselines alternate, ``--repeat`` rounds, and the figures are medians.  The data
look like a fleet's: ``--projects`` projects probed every 10 s at random phases, each
probe yielding ``--metrics`` samples, timestamps moving forward from round to round, so
the tables grow in time order as in production.  Everything lives in a fresh schema that
is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any

import asyncpg

from bench.backends import DATABASE_URL, Lines, finish, log, median, scratch_schema
from bench.proc import cpu_seconds
from storage.base import MetricSample, ProbeRecord
from storage.postgres import PostgresStore
from storage.postgres_connect import quote_ident
from storage.postgres_rollups import mark_dirty
from storage.postgres_sql import PROBE_COLUMNS, SAMPLE_COLUMNS, aware, probe_rows, sample_rows
from storage.rollups import floor_hour

GOAL_SAMPLES_PER_S = 200_000
INTERVAL_S = 10.0
METRIC_NAMES = (
    "cpu_percent",
    "memory_mb",
    "rps",
    "error_rate",
    "p95_latency_ms",
    "queue_depth",
    "open_connections",
    "gc_pause_ms",
    "disk_percent",
    "uptime_s",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rows", type=int, help="samples (probes) per round and kind (default 200,000)"
    )
    parser.add_argument(
        "--batch", type=int, default=10_000, help="samples (probes) per call (10,000)"
    )
    parser.add_argument("--repeat", type=int, help="rounds; figures are medians (default 3)")
    parser.add_argument("--projects", type=int, default=1000, help="projects (default 1,000)")
    parser.add_argument("--metrics", type=int, default=8, help="samples per probe (default 8)")
    parser.add_argument(
        "--writers", type=int, default=1, help="concurrent writers (default 1, like the recorder)"
    )


def finish_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.rows is None:
        args.rows = 50_000 if args.quick else 200_000
    if args.repeat is None:
        args.repeat = 2 if args.quick else 3
    if min(args.rows, args.batch, args.repeat, args.projects, args.writers) < 1:
        parser.error("--rows, --batch, --repeat, --projects and --writers must be positive")
    if not 1 <= args.metrics <= len(METRIC_NAMES):
        parser.error(f"--metrics must be 1..{len(METRIC_NAMES)}")


class Fleet:
    """Probe times of ``projects`` projects polled every 10 s, from ``start`` onwards."""

    def __init__(self, projects: int, start: datetime, seed: int = 7) -> None:
        rng = random.Random(seed)
        self.names = [f"project-{i:04d}" for i in range(projects)]
        self.phases = [timedelta(seconds=rng.uniform(0, INTERVAL_S)) for _ in range(projects)]
        self.rng = rng
        self.cursor = start  # the start of the next polling round
        self.pending: list[tuple[str, datetime]] = []  # generated, not handed out yet

    def probe_times(self, probes: int) -> list[tuple[str, datetime]]:
        """The next ``probes`` (project, ts) in time order."""
        while len(self.pending) < probes:
            tick = sorted(
                (self.cursor + phase, name)
                for name, phase in zip(self.names, self.phases, strict=True)
            )
            self.pending.extend((name, ts) for ts, name in tick)
            self.cursor += timedelta(seconds=INTERVAL_S)
        out, self.pending = self.pending[:probes], self.pending[probes:]
        return out

    def samples(self, rows: int, metrics: int) -> list[MetricSample]:
        names = METRIC_NAMES[:metrics]
        uniform = self.rng.uniform
        out = [
            MetricSample(project, ts, metric, uniform(0.0, 100.0))
            for project, ts in self.probe_times(-(-rows // metrics))
            for metric in names
        ]
        return out[:rows]

    def probes(self, rows: int) -> list[ProbeRecord]:
        out = []
        for project, ts in self.probe_times(rows):
            failed = self.rng.random() < 0.01
            out.append(
                ProbeRecord(
                    project,
                    ts,
                    "fail" if failed else "pass",
                    self.rng.uniform(5.0, 80.0),
                    "HTTP 503" if failed else "",
                    503 if failed else 200,
                )
            )
        return out


def batches(rows: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


async def timed(
    write: Callable[[Any], Awaitable[None]], chunks: list[Any], writers: int = 1
) -> tuple[float, float]:
    """Write the chunks, ``writers`` at a time (each writer one after the other, as the
    recorder does): (wall seconds, this process's CPU seconds)."""
    queue = iter(chunks)

    async def writer() -> None:
        for chunk in queue:
            await write(chunk)

    t0, c0 = time.perf_counter(), cpu_seconds()
    await asyncio.gather(*(writer() for _ in range(writers)))
    return time.perf_counter() - t0, cpu_seconds() - c0


# The layout before migrations/postgres/0008, a row per sample, for the reference figure.
NARROW_COLUMNS = ("project", "metric", "ts", "value")
_narrow_fields = attrgetter(*NARROW_COLUMNS)


def narrow_rows(samples: Sequence[MetricSample]) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = list(map(_narrow_fields, samples))
    for row in rows:
        aware(row[2])
    return rows


def dirty_pairs_seconds(samples: Sequence[MetricSample]) -> float:
    """The Python part of ``mark_dirty`` on one batch, alone: the (project, hour) pairs."""
    rows = sample_rows(samples)
    t0 = time.perf_counter()
    sorted({(project, floor_hour(ts)) for project, ts in set((r[0], r[1]) for r in rows)})
    return time.perf_counter() - t0


async def breakdown(store: PostgresStore, chunks: list[Sequence[MetricSample]]) -> dict[str, float]:
    """Where ``add_metric_samples``'s time goes, from the store's own pieces timed one by
    one: seconds per batch (medians)."""
    steps: dict[str, list[float]] = {}
    for chunk in chunks:
        t0 = time.perf_counter()
        rows = sample_rows(chunk)
        t1 = time.perf_counter()
        async with store.transaction() as conn:
            t2 = time.perf_counter()
            await conn.copy_records_to_table(
                "metric_samples", records=rows, columns=list(SAMPLE_COLUMNS)
            )
            t3 = time.perf_counter()
            await mark_dirty(conn, ((r[0], r[1]) for r in rows))
            t4 = time.perf_counter()
        t5 = time.perf_counter()
        for step, seconds in (
            ("encode", t1 - t0),
            ("begin", t2 - t1),
            ("copy", t3 - t2),
            ("mark_dirty", t4 - t3),
            ("commit", t5 - t4),
        ):
            steps.setdefault(step, []).append(seconds)
    out = {step: median(values) for step, values in steps.items()}
    out["mark_dirty_python"] = median([dirty_pairs_seconds(c) for c in chunks])
    return out


async def run(args: argparse.Namespace, lines: Lines) -> dict[str, Any]:
    dsn = DATABASE_URL
    fleet = Fleet(args.projects, floor_hour(datetime.now(UTC)) - timedelta(hours=6))
    figures: dict[str, list[float]] = {}

    async def measure(
        key: str, write: Callable[[Any], Awaitable[None]], chunks: list[Any], count: int
    ) -> float:
        """Write ``chunks`` (``count`` samples or probes in all); record ``count``/s."""
        wall, cpu = await timed(write, chunks, args.writers)
        unit = "samples" if key.endswith(".samples") else "rows"
        figures.setdefault(f"{key}.{unit}_per_s", []).append(count / wall)
        figures.setdefault(f"{key}.client_cpu_share", []).append(cpu / wall)
        return count / wall

    def sample_chunks(encode: Callable[[Sequence[MetricSample]], Any]) -> list[Any]:
        """A round of samples, batched as the store gets them, each batch encoded."""
        return [encode(c) for c in batches(fleet.samples(args.rows, args.metrics), args.batch)]

    async with scratch_schema("ingest", dsn) as schema:
        store = PostgresStore(dsn, schema=schema, min_size=1, max_size=args.writers + 1)
        await store.open()
        bare = await asyncpg.create_pool(
            dsn,
            min_size=args.writers,
            max_size=args.writers,
            server_settings={"search_path": quote_ident(schema)},
        )
        try:
            for table in ("metric_samples", "probes"):
                await bare.execute(f"CREATE TABLE bare_{table} (LIKE {table} INCLUDING ALL)")
            # DESIGN §9's "COPY alone": the same table without its two indexes.
            await bare.execute(
                "CREATE TABLE bare_noindex_metric_samples (LIKE metric_samples"
                " INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING CONSTRAINTS)"
            )
            # The layout before migrations/postgres/0008, with its indexes, for reference.
            await bare.execute(
                "CREATE TABLE bare_narrow_metric_samples ("
                " id bigint GENERATED ALWAYS AS IDENTITY, project text NOT NULL,"
                " metric text NOT NULL, ts timestamptz NOT NULL, value double precision NOT NULL);"
                " CREATE INDEX ON bare_narrow_metric_samples (project, metric, ts);"
                " CREATE INDEX ON bare_narrow_metric_samples USING brin (ts)"
            )

            def copier(table: str, columns: Sequence[str]) -> Callable[[Any], Awaitable[None]]:
                async def copy(chunk: list[tuple[Any, ...]]) -> None:
                    async with bare.acquire() as conn:
                        await conn.copy_records_to_table(
                            table, records=chunk, columns=list(columns)
                        )

                return copy

            copy_samples = copier("bare_metric_samples", SAMPLE_COLUMNS)
            copy_noindex = copier("bare_noindex_metric_samples", SAMPLE_COLUMNS)
            copy_narrow = copier("bare_narrow_metric_samples", NARROW_COLUMNS)
            copy_probes = copier("bare_probes", PROBE_COLUMNS)
            n = args.rows
            for round_ in range(args.repeat):
                counter = f"round {round_ + 1}/{args.repeat}"
                # Each side gets samples of its own, of the same shape, so that every table
                # grows in time order, as it would in production.
                chunks = sample_chunks(list)  # MetricSample objects: the store encodes
                store_rate = await measure("store.samples", store.add_metric_samples, chunks, n)
                chunks = sample_chunks(sample_rows)
                wide_rows = sum(map(len, chunks))
                copy_rate = await measure("copy.samples", copy_samples, chunks, n)
                chunks = sample_chunks(sample_rows)
                bare_rate = await measure("copy_noindex.samples", copy_noindex, chunks, n)
                chunks = sample_chunks(narrow_rows)
                narrow_rate = await measure("copy_narrow.samples", copy_narrow, chunks, n)
                log(
                    f"ingest {counter}: samples/s: store {store_rate:,.0f}, "
                    f"COPY {copy_rate:,.0f} ({wide_rows:,} rows), COPY without indexes "
                    f"{bare_rate:,.0f}, COPY of a row per sample (narrow) {narrow_rate:,.0f}"
                )
                chunks = batches(fleet.probes(n), args.batch)
                store_rate = await measure("store.probes", store.add_probes, chunks, n)
                chunks = [probe_rows(c) for c in batches(fleet.probes(n), args.batch)]
                copy_rate = await measure("copy.probes", copy_probes, chunks, n)
                log(f"ingest {counter}: probes/s:  store {store_rate:,.0f}, COPY {copy_rate:,.0f}")
            # Off the clock: the store's steps, one by one, on 10 more batches.
            steps = await breakdown(
                store, batches(fleet.samples(10 * args.batch, args.metrics), args.batch)
            )
            dirty = await bare.fetchval("SELECT count(*) FROM rollup_dirty")
        finally:
            await bare.close()
            await finish(store.close())

    result: dict[str, Any] = {key: median(values) for key, values in figures.items()}
    for step, seconds in steps.items():
        result[f"store.samples.step.{step}_per_batch_s"] = seconds
    for key, value in result.items():
        lines.add(f"ingest.{key}", value, _unit(key))
    ratio = result["store.samples.samples_per_s"] / result["copy.samples.samples_per_s"]
    lines.add("ingest.samples_store_over_copy", ratio, "x")
    ok = result["store.samples.samples_per_s"] >= GOAL_SAMPLES_PER_S
    lines.add("ingest.goal.samples_at_least_200k_per_s", ok, "bool")
    result.update(dirty_marks=dirty, goal_ok=ok)
    return result


def _unit(key: str) -> str:
    if key.endswith("_per_s"):
        return key.rsplit(".", 1)[-1].removesuffix("_per_s") + "/s"  # samples/s, rows/s
    return "cores" if key.endswith("cpu_share") else "s"


def summary(result: dict[str, Any], args: argparse.Namespace) -> str:
    rows = [
        f"ingest ({args.rows:,} samples and probes per round, batches of {args.batch:,}, "
        f"{args.writers} writer(s), {args.repeat} rounds, medians):"
    ]
    for kind, unit in (("samples", "samples"), ("probes", "rows")):
        store = result[f"store.{kind}.{unit}_per_s"]
        copy = result[f"copy.{kind}.{unit}_per_s"]
        rows.append(
            f"  {kind:>7}: store {store:>9,.0f} {unit}/s   bare COPY {copy:>9,.0f} {unit}/s   "
            f"store/COPY {store / copy:4.2f}   client CPU store "
            f"{result[f'store.{kind}.client_cpu_share'] * 100:3.0f} % / COPY "
            f"{result[f'copy.{kind}.client_cpu_share'] * 100:3.0f} %"
        )
    rows.append(
        f"  bare COPY of samples into the same table without its indexes: "
        f"{result['copy_noindex.samples.samples_per_s']:,.0f} samples/s; into the narrow "
        f"layout (a row per sample, btree on project, metric, ts): "
        f"{result['copy_narrow.samples.samples_per_s']:,.0f} samples/s"
    )
    steps = {
        key.split(".")[-1].removesuffix("_per_batch_s"): value * 1000
        for key, value in result.items()
        if ".step." in key
    }
    rows.append(
        f"  add_metric_samples, step by step, ms per batch of {args.batch:,}: "
        + ", ".join(f"{step} {ms:.1f}" for step, ms in steps.items() if step != "mark_dirty_python")
        + f" (of which mark_dirty's Python: {steps['mark_dirty_python']:.1f})"
    )
    verdict = "met" if result["goal_ok"] else "MISSED"
    rows.append(f"  goal ≥ {GOAL_SAMPLES_PER_S:,} samples/s through the store: {verdict}")
    return "\n".join(rows)


def budget(args: argparse.Namespace) -> float:
    """Seconds before the suite gives up: generous (the rates measured are ~100× this)."""
    return 120.0 + args.repeat * args.rows * 5 / 5_000
