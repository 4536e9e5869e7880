"""The store contract: every backend must pass these tests unchanged.

Backends are listed once, in ``BACKENDS``.  Each entry sets up an empty database for one
test and yields a ``MakeStore`` that builds a new, unopened store on that same database;
calling it twice gives two connections to one database, which is how the tests reopen a
store and stand in for two replicas.  The key is also the backend's migrations folder
(``storage/migrations/<key>/``).

The last section holds tests of SQLite-only behaviour and of the storage helpers.
"""

from __future__ import annotations

import asyncio
import math
import socket
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import asyncpg
import pytest

from agents.clock import FakeClock
from agents.events import (
    ACTION_REQUESTED,
    ACTION_STARTED,
    ANALYSIS_COMPLETED,
    APPROVAL_DENIED,
    APPROVAL_EXPIRED,
    APPROVAL_GRANTED,
    APPROVAL_REQUESTED,
    INCIDENT_OPENED,
    INCIDENT_RESOLVED,
    INCIDENT_UPDATED,
    METRIC_ANOMALY,
    PROJECT_STATUS_CHANGED,
    REMEDIATION_SUSPENDED,
    SILENCE_CREATED,
    SILENCE_ENDED,
    Event,
)
from storage.autonomy_store import (
    ACTION_STATE,
    AWAITING_APPROVAL,
    Approval,
    ApprovalEventFor,
    AuditEntry,
    AuditRecord,
)
from storage.base import EventFor, Incident, MetricSample, ProbeRecord, Store
from storage.budget_store import Analysis, AnalysisEventFor, NewAnalysis, Suspension
from storage.factory import open_store
from storage.migrate import load_migrations, pending
from storage.operations_store import (
    ActionRequest,
    AmbiguousIncident,
    IncidentAck,
    Silence,
    SilenceEventFor,
)
from storage.postgres import PostgresStore
from storage.postgres_connect import PostgresUnavailable
from storage.postgres_sql import EVENTS_LOCK_CLASS, insert_events
from storage.slack_store import Kind, NewSlackMessage, SlackCard, card_key
from storage.sqlite import SQLiteStore
from storage.sqlite_codec import split_statements
from tests import services

pytestmark = pytest.mark.timeout(30)

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


class MakeStore(Protocol):
    def __call__(self, *, auto_migrate: bool = True) -> Store: ...


Backend = Callable[[Path], AbstractAsyncContextManager[MakeStore]]


@asynccontextmanager
async def sqlite_backend(tmp_path: Path) -> AsyncIterator[MakeStore]:
    path = tmp_path / "orch.db"

    def make(*, auto_migrate: bool = True) -> Store:
        return SQLiteStore(path, auto_migrate=auto_migrate)

    yield make


@asynccontextmanager
async def postgres_backend(tmp_path: Path) -> AsyncIterator[MakeStore]:
    """A fresh schema per test on the test server (``tests.services``: skipped when it is
    away, a failure under CI=true), dropped with everything in it afterwards; tests stay
    isolated and may run in parallel against one database."""
    url = services.database_url()
    schema = f"orch_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')

        def make(*, auto_migrate: bool = True) -> Store:
            return PostgresStore(url, schema=schema, auto_migrate=auto_migrate, max_size=10)

        yield make
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


BACKENDS: dict[str, Backend] = {
    "sqlite": sqlite_backend,
    "postgres": postgres_backend,
}

OpenStore = Callable[..., Awaitable[Store]]


@asynccontextmanager
async def opened_on(backend: str, tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh store of ``backend``, opened, and closed afterwards (other store suites'
    per-backend fixtures)."""
    async with BACKENDS[backend](tmp_path) as make:
        opened = make()
        await opened.open()
        try:
            yield opened
        finally:
            await opened.close()


@pytest.fixture(params=sorted(BACKENDS))
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def open_new(backend_name: str, tmp_path: Path) -> AsyncIterator[OpenStore]:
    """Open another store on this test's database; all are closed at teardown."""
    opened: list[Store] = []
    async with BACKENDS[backend_name](tmp_path) as make:

        async def _open(*, auto_migrate: bool = True) -> Store:
            store = make(auto_migrate=auto_migrate)
            await store.open()
            opened.append(store)
            return store

        try:
            yield _open
        finally:
            for store in reversed(opened):
                await store.close()


@pytest.fixture
async def store(open_new: OpenStore) -> Store:
    return await open_new()


# -- helpers ---------------------------------------------------------------------------


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def probe(project: str, seconds: float, level: str = "pass", **kw: Any) -> ProbeRecord:
    return ProbeRecord(project=project, ts=at(seconds), level=level, latency_ms=12.5, **kw)


def event(type_: str = PROJECT_STATUS_CHANGED, seconds: float = 0, **kw: Any) -> Event:
    return Event(type=type_, ts=at(seconds), source="test", **kw)


def incident(fingerprint: str = "email-blast:down", seconds: float = 0, **kw: Any) -> Incident:
    project, condition = fingerprint.split(":", 1)
    fields: dict[str, Any] = {
        "id": f"inc-{fingerprint}-{seconds}",
        "fingerprint": fingerprint,
        "project": project,
        "condition": condition,
        "severity": "critical",
        "summary": f"{project} is down",
        "opened_at": at(seconds),
    }
    fields.update(kw)
    return Incident(**fields)


def announce(type_: str, calls: list[Incident] | None = None) -> EventFor:
    """An event_for that builds the event the way agents will, and records its calls."""

    def build(row: Incident) -> Event:
        if calls is not None:
            calls.append(row)
        payload: dict[str, Any] = {"fingerprint": row.fingerprint, "severity": row.severity}
        payload |= {"summary": row.summary, "duration_s": row.duration_s}
        return Event(
            type=type_,
            ts=row.resolved_at or row.opened_at,
            source="test",
            project=row.project,
            incident_id=row.id,
            payload=payload,
        )

    return build


def explode(row: Incident) -> Event:
    raise RuntimeError("event_for failed")


# -- migrations and lifecycle ----------------------------------------------------------


async def test_migrate_from_empty_then_noop(open_new: OpenStore, backend_name: str) -> None:
    store = await open_new(auto_migrate=False)
    expected = [m.version for m in load_migrations(backend_name)]
    assert expected
    assert await store.migrate() == expected
    assert await store.migrate() == []
    assert await store.count_rows() == {
        "probes": 0,
        "metric_samples": 0,
        "events": 0,
        "incidents": 0,
    }


async def test_open_migrates_and_close_is_idempotent(open_new: OpenStore) -> None:
    store = await open_new()
    assert await store.migrate() == []
    await store.close()
    await store.close()


async def test_reopen_keeps_data(open_new: OpenStore) -> None:
    first = await open_new()
    await first.add_probes([probe("a", 1)])
    await first.append_events([event(id="e1")])
    await first.open_incident(incident(), announce(INCIDENT_OPENED))
    await first.close()

    second = await open_new()
    assert await second.migrate() == []
    assert await second.recent_probes("a") == [probe("a", 1)]
    assert await second.count_rows() == {
        "probes": 1,
        "metric_samples": 0,
        "events": 2,
        "incidents": 1,
    }
    assert await second.get_open_incident("email-blast:down") == incident()


# -- probes and samples ----------------------------------------------------------------


async def test_probes_round_trip_newest_first(store: Store) -> None:
    probes = [probe("a", s) for s in (3, 1, 2)]
    probes.append(probe("a", 4, "fail", reason="timeout", http_status=503, probe="http"))
    probes.append(probe("b", 9))
    await store.add_probes(probes)

    got = await store.recent_probes("a")
    assert [p.ts for p in got] == [at(4), at(3), at(2), at(1)]
    assert got[0] == probe("a", 4, "fail", reason="timeout", http_status=503, probe="http")
    assert all(p.ts.utcoffset() == timedelta(0) for p in got)
    assert [p.ts for p in await store.recent_probes("a", limit=2)] == [at(4), at(3)]
    assert await store.recent_probes("nobody") == []


async def test_timestamps_exact_and_returned_in_utc(store: Store) -> None:
    plus2 = timezone(timedelta(hours=2))
    ts = datetime(2026, 3, 1, 14, 0, 0, 999999, tzinfo=plus2)
    await store.add_probes([ProbeRecord("a", ts, "pass", 1.0)])
    (got,) = await store.recent_probes("a")
    assert got.ts == ts
    assert got.ts.tzinfo is not None and got.ts.utcoffset() == timedelta(0)
    assert got.ts.microsecond == 999999


async def test_naive_datetime_is_refused_and_writes_nothing(store: Store) -> None:
    naive = datetime(2026, 3, 1, 12, 0)
    with pytest.raises(ValueError, match="naive"):
        await store.add_probes([probe("a", 1), ProbeRecord("a", naive, "pass", 1.0)])
    assert (await store.count_rows())["probes"] == 0


async def test_large_probe_batch(store: Store) -> None:
    await store.add_probes([probe(f"p{i % 7}", i * 0.001) for i in range(700)])
    assert (await store.count_rows())["probes"] == 700
    assert len(await store.recent_probes("p3", limit=1000)) == 100


async def test_metric_series_oldest_first_since_inclusive(store: Store) -> None:
    samples = [MetricSample("a", at(s), "error_rate", s / 100) for s in (5, 1, 3, 2)]
    samples.append(MetricSample("a", at(4), "cpu_percent", 50.0))
    samples.append(MetricSample("b", at(4), "error_rate", 0.9))
    await store.add_metric_samples(samples)

    got = await store.metric_series("a", "error_rate", since=at(2))
    assert got == [MetricSample("a", at(s), "error_rate", s / 100) for s in (2, 3, 5)]
    assert await store.metric_series("a", "error_rate", since=at(6)) == []


async def test_metric_special_values_round_trip(store: Store) -> None:
    await store.add_metric_samples(
        [
            MetricSample("a", at(1), "x", math.nan),
            MetricSample("a", at(2), "x", math.inf),
            MetricSample("a", at(3), "x", -0.5),
        ]
    )
    values = [s.value for s in await store.metric_series("a", "x", since=at(0))]
    assert math.isnan(values[0]) and values[1:] == [math.inf, -0.5]


async def test_metric_samples_keep_duplicates_and_insertion_order(store: Store) -> None:
    """Samples of one instant come back in the order written, duplicates included, however
    batches interleave them (PostgreSQL stores a row per (project, ts), SQLite a row each)."""
    plus2 = timezone(timedelta(hours=2))
    await store.add_metric_samples(
        [
            MetricSample("a", at(1), "cpu", 1.0),
            MetricSample("a", at(1), "mem", 10.0),
            MetricSample("b", at(1), "cpu", 99.0),
            MetricSample("a", at(1), "cpu", 2.0),  # (project, metric, ts) once more
            MetricSample("a", at(0), "cpu", 0.5),
            MetricSample("a", at(1).astimezone(plus2), "cpu", 3.0),  # the same instant
        ]
    )
    await store.add_metric_samples([MetricSample("a", at(1), "cpu", 4.0)] * 2)
    got = await store.metric_series("a", "cpu", since=at(0))
    assert [(s.ts, s.value) for s in got] == [(at(0), 0.5)] + [
        (at(1), v) for v in (1.0, 2.0, 3.0, 4.0, 4.0)
    ]
    assert all(s.ts.utcoffset() == timedelta(0) for s in got)
    assert [s.value for s in await store.metric_series("a", "mem", since=at(1))] == [10.0]
    assert (await store.count_rows())["metric_samples"] == 8


# -- events (the outbox) ---------------------------------------------------------------


async def test_events_round_trip(store: Store) -> None:
    full = event(
        METRIC_ANOMALY,
        1,
        project="a",
        incident_id="inc-1",
        payload={"metric": "error_rate", "value": 0.2, "nested": {"l": [1, "ü", None]}},
    )
    bare = event(seconds=2)
    await store.append_events([full, bare])
    assert await store.unpublished_events() == [full, bare]
    assert bare.project is None and bare.incident_id is None and bare.payload == {}


async def test_duplicate_event_ids_are_ignored(store: Store) -> None:
    first = event(seconds=1, id="dup", payload={"v": 1})
    await store.append_events([first, event(seconds=2, id="dup", payload={"v": 2})])
    await store.append_events([event(seconds=3, id="dup", payload={"v": 3})])
    assert await store.unpublished_events() == [first]
    assert (await store.count_rows())["events"] == 1


async def test_unpublished_in_commit_order_and_mark_published(store: Store) -> None:
    # Timestamps deliberately out of order: the relay follows commit order, not ts.
    batch1 = [event(seconds=9, id="a"), event(seconds=1, id="b")]
    batch2 = [event(seconds=5, id="c")]
    await store.append_events(batch1)
    await store.append_events(batch2)
    assert [e.id for e in await store.unpublished_events()] == ["a", "b", "c"]
    assert [e.id for e in await store.unpublished_events(limit=2)] == ["a", "b"]

    await store.mark_published(["a", "c", "unknown"])
    assert [e.id for e in await store.unpublished_events()] == ["b"]
    await store.mark_published(["b"])
    await store.mark_published([])
    assert await store.unpublished_events() == []
    # Publishing changes what the relay sees, not the history.
    assert [e.id for e in await store.list_events()] == ["b", "c", "a"]


async def test_list_events_filters_and_limit(store: Store) -> None:
    await store.append_events(
        [
            event(PROJECT_STATUS_CHANGED, 1, id="e1", project="a"),
            event(METRIC_ANOMALY, 2, id="e2", project="a"),
            event(PROJECT_STATUS_CHANGED, 3, id="e3", project="b"),
            event(ACTION_STARTED, 4, id="e4", project="a"),
            event(PROJECT_STATUS_CHANGED, 5, id="e5"),
        ]
    )

    async def ids(**kw: Any) -> list[str]:
        return [e.id for e in await store.list_events(**kw)]

    assert await ids() == ["e1", "e2", "e3", "e4", "e5"]
    assert await ids(project="a") == ["e1", "e2", "e4"]
    assert await ids(types=[PROJECT_STATUS_CHANGED]) == ["e1", "e3", "e5"]
    assert await ids(types=[METRIC_ANOMALY, ACTION_STARTED]) == ["e2", "e4"]
    assert await ids(types=[]) == []
    assert await ids(since=at(3)) == ["e3", "e4", "e5"]
    assert await ids(limit=2) == ["e4", "e5"]
    assert await ids(project="a", types=[PROJECT_STATUS_CHANGED, METRIC_ANOMALY]) == ["e1", "e2"]
    assert await ids(project="a", since=at(2), limit=1) == ["e4"]


# -- incidents -------------------------------------------------------------------------


async def test_open_incident_once_per_fingerprint(store: Store) -> None:
    calls: list[Incident] = []
    opened = await store.open_incident(incident(), announce(INCIDENT_OPENED, calls))
    assert opened == incident() and calls == [incident()]
    assert opened is not None and opened.opened_at.utcoffset() == timedelta(0)

    again = incident(seconds=5, id="other")
    assert await store.open_incident(again, announce(INCIDENT_OPENED, calls)) is None
    assert len(calls) == 1  # not even asked to build an event

    (ev,) = await store.unpublished_events()
    assert (ev.type, ev.incident_id, ev.project) == (INCIDENT_OPENED, opened.id, "email-blast")
    assert ev.payload["fingerprint"] == "email-blast:down"
    assert await store.count_rows() == {
        "probes": 0,
        "metric_samples": 0,
        "events": 1,
        "incidents": 1,
    }
    assert await store.get_open_incident("email-blast:down") == opened
    assert await store.get_open_incident("chatbot:down") is None


async def test_update_incident(store: Store) -> None:
    assert await store.update_incident("a:down", "warning", "x", announce(INCIDENT_UPDATED)) is None
    assert await store.count_rows() == dict.fromkeys(
        ("probes", "metric_samples", "events", "incidents"), 0
    )

    await store.open_incident(incident("a:down"), announce(INCIDENT_OPENED))
    updated = await store.update_incident(
        "a:down", "warning", "a is slow", announce(INCIDENT_UPDATED)
    )
    assert updated == incident("a:down", severity="warning", summary="a is slow")
    assert await store.get_open_incident("a:down") == updated
    last = (await store.list_events())[-1]
    assert (last.type, last.payload["severity"], last.payload["summary"]) == (
        INCIDENT_UPDATED,
        "warning",
        "a is slow",
    )


async def test_resolve_incident_exact_duration_then_reopen(store: Store) -> None:
    opened = await store.open_incident(incident("a:down"), announce(INCIDENT_OPENED))
    assert opened is not None
    resolved_at = opened.opened_at + timedelta(seconds=125, microseconds=250001)
    calls: list[Incident] = []
    resolved = await store.resolve_incident(
        "a:down", resolved_at, announce(INCIDENT_RESOLVED, calls)
    )

    assert resolved is not None and calls == [resolved]
    assert resolved.state == "resolved" and resolved.resolved_at == resolved_at
    assert resolved.duration_s == (resolved_at - opened.opened_at).total_seconds() == 125.250001
    assert await store.get_open_incident("a:down") is None
    last = (await store.list_events())[-1]
    assert (last.type, last.payload["duration_s"]) == (INCIDENT_RESOLVED, 125.250001)

    assert await store.resolve_incident("a:down", resolved_at, announce(INCIDENT_RESOLVED)) is None
    assert (await store.count_rows())["events"] == 2

    reopened = await store.open_incident(incident("a:down", 200), announce(INCIDENT_OPENED))
    assert reopened is not None and reopened.id != opened.id and reopened.state == "open"
    assert await store.get_open_incident("a:down") == reopened


async def test_list_incidents_filters_and_order(store: Store) -> None:
    await store.open_incident(incident("a:down", 1), announce(INCIDENT_OPENED))
    await store.open_incident(incident("b:down", 2), announce(INCIDENT_OPENED))
    await store.open_incident(incident("a:metric:error_rate", 3), announce(INCIDENT_OPENED))
    await store.resolve_incident("a:down", at(10), announce(INCIDENT_RESOLVED))

    async def fps(**kw: Any) -> list[str]:
        return [i.fingerprint for i in await store.list_incidents(**kw)]

    assert await fps() == ["a:metric:error_rate", "b:down", "a:down"]
    assert await fps(project="a") == ["a:metric:error_rate", "a:down"]
    assert await fps(open_only=True) == ["a:metric:error_rate", "b:down"]
    assert await fps(project="a", open_only=True) == ["a:metric:error_rate"]
    assert await fps(limit=1) == ["a:metric:error_rate"]
    resolved = (await store.list_incidents(project="a"))[-1]
    assert (resolved.state, resolved.duration_s) == ("resolved", 10 - 1)


async def test_failing_event_for_rolls_back(store: Store) -> None:
    with pytest.raises(RuntimeError, match="event_for failed"):
        await store.open_incident(incident("a:down"), explode)
    assert await store.count_rows() == dict.fromkeys(
        ("probes", "metric_samples", "events", "incidents"), 0
    )
    # Nothing half-done is left behind: the fingerprint is free and the store usable.
    opened = await store.open_incident(incident("a:down"), announce(INCIDENT_OPENED))
    assert opened is not None

    with pytest.raises(RuntimeError):
        await store.update_incident("a:down", "warning", "changed", explode)
    with pytest.raises(RuntimeError):
        await store.resolve_incident("a:down", at(60), explode)
    assert await store.get_open_incident("a:down") == opened
    assert (await store.count_rows())["events"] == 1


async def test_concurrent_open_same_fingerprint(store: Store) -> None:
    results = await asyncio.gather(
        *(
            store.open_incident(incident("a:down", i, id=f"inc-{i}"), announce(INCIDENT_OPENED))
            for i in range(10)
        )
    )
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    counts = await store.count_rows()
    assert (counts["incidents"], counts["events"]) == (1, 1)
    (ev,) = await store.unpublished_events()
    assert ev.incident_id == winners[0].id


async def test_concurrent_open_across_connections(open_new: OpenStore) -> None:
    """Several replicas (separate connections) racing on one fingerprint."""
    stores = [await open_new() for _ in range(3)]
    results = await asyncio.gather(
        *(
            s.open_incident(incident("a:down", i, id=f"inc-{i}"), announce(INCIDENT_OPENED))
            for i, s in enumerate(stores * 3)
        )
    )
    assert sum(r is not None for r in results) == 1
    counts = await stores[0].count_rows()
    assert (counts["incidents"], counts["events"]) == (1, 1)


async def test_concurrent_migrate_applies_each_version_once(
    open_new: OpenStore, backend_name: str
) -> None:
    stores = [await open_new(auto_migrate=False) for _ in range(3)]
    results = await asyncio.gather(*(s.migrate() for s in stores))
    assert sorted(v for r in results for v in r) == [
        m.version for m in load_migrations(backend_name)
    ]


async def test_negative_limit_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="limit"):
        await store.recent_probes("a", limit=-1)
    with pytest.raises(ValueError, match="limit"):
        await store.list_events(limit=-1)


async def test_count_rows(store: Store) -> None:
    await store.add_probes([probe("a", 1), probe("a", 2)])
    await store.add_metric_samples([MetricSample("a", at(1), "cpu_percent", 1.0)])
    await store.append_events([event()])
    await store.open_incident(incident(), announce(INCIDENT_OPENED))
    assert await store.count_rows() == {
        "probes": 2,
        "metric_samples": 1,
        "events": 2,
        "incidents": 1,
    }


# -- SQLite specifics and helpers (not part of the backend contract) -------------------


async def test_sqlite_memory_database() -> None:
    store = SQLiteStore(":memory:")
    await store.open()
    try:
        await store.add_probes([probe("a", 1)])
        assert await store.recent_probes("a") == [probe("a", 1)]
    finally:
        await store.close()


async def test_sqlite_file_uses_wal(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "orch.db")
    await store.open()
    await store.close()
    with sqlite3.connect(tmp_path / "orch.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        (version, name, applied_at) = conn.execute("SELECT * FROM schema_migrations").fetchone()
    conn.close()
    assert (version, name) == (1, "initial")
    assert datetime.fromisoformat(applied_at).utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("statement", "committed"),
    [
        ("BEGIN IMMEDIATE", False),
        ("INSERT INTO incidents", False),
        ("INSERT INTO events", False),
        ("COMMIT", True),  # the cancel raced the commit: all, never half
    ],
)
async def test_sqlite_cancel_mid_transaction(
    tmp_path: Path, statement: str, committed: bool
) -> None:
    """Cancel the caller while a given statement runs on aiosqlite's thread (the trace
    callback fires as it starts): the transaction is whole or absent, the store usable."""
    store = SQLiteStore(tmp_path / "orch.db")
    await store.open()
    try:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(
            store.open_incident(incident("a:down"), announce(INCIDENT_OPENED))
        )

        def trace(sql: str) -> None:
            if sql.startswith(statement):  # cancelling a finished task is a no-op
                loop.call_soon_threadsafe(task.cancel)

        db = store._db
        assert db is not None
        await db.set_trace_callback(trace)  # queued before the task's first statement
        with pytest.raises(asyncio.CancelledError):
            await task

        counts = await store.count_rows()
        assert (counts["incidents"], counts["events"]) == ((1, 1) if committed else (0, 0))
        again = await store.open_incident(incident("a:down", 5), announce(INCIDENT_OPENED))
        assert (again is None) == committed
        await store.add_probes([probe("a", 1)])
    finally:
        await store.close()


async def test_sqlite_store_refuses_use_before_open() -> None:
    store = SQLiteStore(":memory:")
    with pytest.raises(RuntimeError, match="not open"):
        await store.count_rows()


async def test_factory(tmp_path: Path) -> None:
    store = open_store(None, tmp_path / "x.db", auto_migrate=False)
    assert isinstance(store, SQLiteStore)
    await store.open()
    try:
        assert await store.migrate() == [m.version for m in load_migrations("sqlite")]
    finally:
        await store.close()
    for url in ("postgresql://u:secret@db/orch", "postgres://u:secret@db/orch"):
        # Not connected yet: building the store needs no server.
        assert isinstance(open_store(url, tmp_path / "x.db"), PostgresStore)
    with pytest.raises(ValueError, match="'mysql'") as err:
        open_store("mysql://u:secret@db/orch", tmp_path / "x.db")
    assert "secret" not in str(err.value)


def test_load_migrations_orders_and_validates(tmp_path: Path) -> None:
    (tmp_path / "0010_later.sql").write_text("SELECT 2;")
    (tmp_path / "0002_first.sql").write_text("SELECT 1;")
    (tmp_path / "README.md").write_text("not a migration")
    migrations = load_migrations("test", tmp_path)
    assert [(m.version, m.name) for m in migrations] == [(2, "first"), (10, "later")]
    assert [m.version for m in pending(migrations, [2])] == [10]

    (tmp_path / "0002_again.sql").write_text("SELECT 3;")
    with pytest.raises(ValueError, match="duplicate"):
        load_migrations("test", tmp_path)
    (tmp_path / "0002_again.sql").unlink()
    (tmp_path / "3_bad-name.sql").write_text("SELECT 3;")
    with pytest.raises(ValueError, match="NNNN_name"):
        load_migrations("test", tmp_path)
    with pytest.raises(FileNotFoundError):
        load_migrations("no-such-backend")


def test_split_statements() -> None:
    script = """
    -- leading comment; with a semicolon
    CREATE TABLE t (v TEXT DEFAULT 'a;b'); CREATE INDEX i ON t (v);
    CREATE TRIGGER tr AFTER INSERT ON t BEGIN
        UPDATE t SET v = 'x;y';
    END;
    /* trailing; comment */
    """
    statements = split_statements(script)
    assert len(statements) == 3
    assert statements[1] == "CREATE INDEX i ON t (v);"
    assert statements[2].startswith("CREATE TRIGGER") and statements[2].endswith("END;")
    with pytest.raises(ValueError, match="incomplete"):
        split_statements("CREATE TABLE t (v TEXT)")


async def test_claim_event_is_true_once_per_role(store: Store) -> None:
    assert await store.claim_event("incidents", "e1") is True
    assert await store.claim_event("incidents", "e1") is False
    assert await store.claim_event("slack", "e1") is True  # another role has its own record
    results = await asyncio.gather(*(store.claim_event("digest", "e2") for _ in range(10)))
    assert sorted(results) == [False] * 9 + [True]


async def test_claimed_ids_and_unclaimed_events(store: Store) -> None:
    assert await store.claimed_ids("r", []) == set()
    await store.append_events(
        [
            event(PROJECT_STATUS_CHANGED, 5, id="a"),
            event(METRIC_ANOMALY, 1, id="b"),
            event(PROJECT_STATUS_CHANGED, 3, id="c"),
            event(PROJECT_STATUS_CHANGED, 9, id="unpublished"),
        ]
    )
    await store.mark_published(["a", "b", "c"])
    await store.claim_event("r", "b")
    assert await store.claimed_ids("r", ["a", "b", "b", "zzz"]) == {"b"}
    assert await store.claimed_ids("other", ["a", "b"]) == set()

    async def ids(role: str = "r", since: float = 0, **kw: Any) -> list[str]:
        return [e.id for e in await store.unclaimed_events(role, at(since), **kw)]

    assert await ids() == ["a", "c"]  # commit order, not ts; unpublished left to the relay
    assert await ids("other") == ["a", "b", "c"]
    assert await ids(since=3) == ["a", "c"]  # inclusive
    assert await ids(since=4) == ["a"]
    assert await ids(types=[METRIC_ANOMALY]) == []
    assert await ids("other", types=[METRIC_ANOMALY]) == ["b"]
    assert await ids(types=[]) == []
    assert await ids(limit=1) == ["a"]
    assert await ids(published_before=datetime(2000, 1, 1, tzinfo=UTC)) == []
    with pytest.raises(ValueError, match="limit"):
        await store.unclaimed_events("r", at(0), limit=-1)


# -- PostgreSQL specifics (not part of the backend contract) ---------------------------


@pytest.fixture
async def pg(tmp_path: Path) -> AsyncIterator[PostgresStore]:
    async with postgres_backend(tmp_path) as make:
        store = make()
        assert isinstance(store, PostgresStore)
        await store.open()
        try:
            yield store
        finally:
            await store.close()


async def _wait_for_event_lock_waiters(store: PostgresStore, count: int) -> None:
    """Until ``count`` sessions wait on this schema's event lock (polled, no fixed sleep)."""
    sql = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND classid = $1 AND objid = 'events'::regclass::oid AND objsubid = 2"
    )
    async with asyncio.timeout(10):
        while True:
            async with store.transaction() as conn:
                if await conn.fetchval(sql, EVENTS_LOCK_CLASS) >= count:
                    return
            await asyncio.sleep(0.01)


async def _seqs(store: PostgresStore) -> dict[str, int]:
    async with store.transaction() as conn:
        return {r["id"]: r["seq"] for r in await conn.fetch("SELECT id, seq FROM events")}


async def test_postgres_event_seq_order_is_commit_order(pg: PostgresStore) -> None:
    """The outbox hazard and its fix.  A sequence value is drawn at INSERT, visibility
    comes at COMMIT: unchecked, T1 (seq n) could commit after T2 (seq n+1) and the relay,
    reading "unpublished ORDER BY seq", would publish n+1 first.  Event-inserting
    transactions take an advisory lock first, so T2 cannot even draw its seq before T1
    has committed: seq order is commit order and the relay never sees a gap."""
    async with pg.transaction() as conn:  # T1: draws the lower seq, then stays open
        await insert_events(conn, [event(seconds=1, id="first")])
        second = asyncio.create_task(pg.append_events([event(seconds=0, id="second")]))
        await _wait_for_event_lock_waiters(pg, 1)  # T2 is blocked before its INSERT
        assert not second.done()
        assert await pg.unpublished_events() == []  # the relay sees nothing uncommitted
    await second  # T1 committed on leaving the block; T2 proceeds
    assert [e.id for e in await pg.unpublished_events()] == ["first", "second"]
    seqs = await _seqs(pg)
    assert seqs["first"] < seqs["second"]


async def test_postgres_without_the_lock_seq_is_not_commit_order(pg: PostgresStore) -> None:
    """Control for the test above: the same two transactions inserting directly, without
    the lock, commit the lower seq last.  This is why every event insert goes through
    ``insert_events``."""
    raw = (
        "INSERT INTO events (id, type, ts, source, payload)"
        " VALUES ($1, 'project.status_changed', now(), 'test', '{}')"
    )
    async with pg.transaction() as t1:
        await t1.execute(raw, "low")
        async with pg.transaction() as t2:
            await t2.execute(raw, "high")
        # T2 committed: a relay now reads "high" although "low" (lower seq) is in flight.
        assert [e.id for e in await pg.unpublished_events()] == ["high"]
    seqs = await _seqs(pg)
    assert seqs["low"] < seqs["high"]


async def test_postgres_relay_always_sees_a_prefix_of_commit_order(pg: PostgresStore) -> None:
    """Many writers (plain appends and incidents) against a reader polling like the relay:
    every read must be a prefix of the final seq order, i.e. nothing committed late ever
    appears before something the reader has already been shown."""
    reads: list[list[str]] = []
    writers_done = asyncio.Event()

    async def writer(n: int) -> None:
        for i in range(8):
            if i % 4 == 3:
                fp = f"p{n}-{i}:down"
                await pg.open_incident(incident(fp, i, id=f"i{n}-{i}"), announce(INCIDENT_OPENED))
            else:
                await pg.append_events([event(seconds=i, id=f"w{n}-{i}-{j}") for j in range(2)])

    async def reader() -> None:
        while not writers_done.is_set():
            reads.append([e.id for e in await pg.unpublished_events(limit=10_000)])
            await asyncio.sleep(0)

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer(n) for n in range(6)))
    writers_done.set()
    await reading
    final = [e.id for e in await pg.unpublished_events(limit=10_000)]
    assert len(final) == 6 * (6 * 2 + 2)
    assert len(reads) > 1
    for seen in reads:
        assert seen == final[: len(seen)]


async def test_postgres_unreachable_server_error_is_clear_without_password() -> None:
    with socket.socket() as sock:  # a port nobody listens on once this socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for dsn in (
        f"postgresql://orch:pa%24%24word-xyz@127.0.0.1:{port}/orch",
        f"postgresql://orch@127.0.0.1:{port}/orch?password=pa$$word-xyz",
    ):
        store = PostgresStore(dsn, connect_timeout=5)
        with pytest.raises(PostgresUnavailable) as err:
            await store.open()
        message = str(err.value)
        assert f"orch@127.0.0.1:{port}/orch" in message and "refused" in message.lower()
        assert "pa$$word" not in message and "pa%24%24word" not in message
        assert err.value.__cause__ is None and err.value.__suppress_context__
        with pytest.raises(RuntimeError, match="not open"):
            await store.count_rows()
        await store.close()


async def test_postgres_server_refusal_error_is_clear_without_password() -> None:
    url = urlsplit(services.database_url())
    dsn = url._replace(
        netloc=f"{url.username or 'postgres'}:hunter2-xyz@{url.hostname}:{url.port or 5432}",
        path="/orch_no_such_database",
    ).geturl()
    with pytest.raises(PostgresUnavailable, match="orch_no_such_database") as err:
        await PostgresStore(dsn).open()
    assert "does not exist" in str(err.value) and "hunter2" not in str(err.value)


async def test_postgres_session_time_zone_does_not_leak(tmp_path: Path) -> None:
    """A server or role with another TimeZone changes nothing: instants go in aware and
    come back in UTC (asyncpg's binary timestamptz is UTC on the wire)."""
    async with postgres_backend(tmp_path) as make:
        schema = make()._schema  # type: ignore[attr-defined]
        url = services.database_url()
        dsn = f"{url}{'&' if '?' in url else '?'}TimeZone=Asia/Kathmandu"
        store = PostgresStore(dsn, schema=schema)
        await store.open()
        try:
            plus2 = timezone(timedelta(hours=2))
            ts = datetime(2026, 3, 1, 14, 0, 0, 999999, tzinfo=plus2)
            await store.add_probes([ProbeRecord("a", ts, "pass", 1.0)])
            (got,) = await store.recent_probes("a")
            assert got.ts == ts and got.ts.tzinfo is UTC
            async with store.transaction() as conn:
                assert await conn.fetchval("SHOW TimeZone") == "Asia/Kathmandu"
        finally:
            await store.close()


async def test_postgres_schema_shape(pg: PostgresStore) -> None:
    """NaN is stored as a float8 NaN (not NULL); the time series have BRIN indexes."""
    await pg.add_metric_samples([MetricSample("a", at(1), "x", math.nan)])
    async with pg.transaction() as conn:
        assert await conn.fetchval("SELECT vals = '{NaN}'::float8[] FROM metric_samples")
        brin = await conn.fetch(
            "SELECT tablename FROM pg_indexes WHERE schemaname = current_schema()"
            " AND indexdef LIKE '%USING brin%' ORDER BY tablename"
        )
    assert [r["tablename"] for r in brin] == ["metric_samples", "probes"]


async def test_postgres_bad_samples_are_refused_before_writing(pg: PostgresStore) -> None:
    """Wrong types raise the driver's TypeError before anything is sent (with samples in
    arrays it would say ValueError, and None would be a NULL element); the table itself
    refuses NULL or mismatched arrays from any other writer."""
    good = MetricSample("a", at(1), "x", 1.0)
    bad: list[tuple[MetricSample, type[Exception], str]] = [
        (MetricSample("a", at(1), "x", "1.5"), TypeError, "must be real number, not str"),  # type: ignore[arg-type]
        (MetricSample("a", at(1), "x", None), TypeError, "not NoneType"),  # type: ignore[arg-type]
        (MetricSample("a", at(1), 7, 1.0), TypeError, "expected str, got int"),  # type: ignore[arg-type]
        (MetricSample("a", at(1), None, 1.0), TypeError, "got NoneType"),  # type: ignore[arg-type]
        (MetricSample("a", datetime(2026, 3, 1), "x", 1.0), ValueError, "naive"),
    ]
    for sample, error, match in bad:
        with pytest.raises(error, match=match):
            await pg.add_metric_samples([good, sample])
    assert (await pg.count_rows())["metric_samples"] == 0
    insert = "INSERT INTO metric_samples (project, ts, names, vals) VALUES ('a', $1, $2, $3)"
    async with pg.transaction() as conn:
        for names, vals in ((["x"], [None]), ([None], [1.0]), (["x", "y"], [1.0]), ([], [])):
            with pytest.raises(asyncpg.CheckViolationError):
                async with conn.transaction():
                    await conn.execute(insert, at(1), names, vals)


async def test_postgres_cancelled_writer_leaves_nothing_and_store_usable(pg: PostgresStore) -> None:
    """A task cancelled while its transaction waits (here on the event lock) rolls back
    everything, gives its connection back in a usable state, and does not hold up others."""
    async with pg.transaction() as conn:
        await insert_events(conn, [event(id="holder")])
        waiting = asyncio.create_task(
            pg.open_incident(incident("a:down"), announce(INCIDENT_OPENED))
        )
        await _wait_for_event_lock_waiters(pg, 1)  # its incident row is written, uncommitted
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    assert [e.id for e in await pg.unpublished_events()] == ["holder"]
    assert await pg.get_open_incident("a:down") is None
    opened = await asyncio.gather(
        *(
            pg.open_incident(incident("a:down", i, id=f"i{i}"), announce(INCIDENT_OPENED))
            for i in range(12)
        )
    )
    assert sum(o is not None for o in opened) == 1
    assert (await pg.count_rows())["events"] == 2


async def test_claim_events_claims_a_batch_once(store: Store) -> None:
    assert await store.claim_event("r", "a") is True
    # Repeats inside a batch and ids claimed before are not claimed again.
    assert await store.claim_events("r", ["b", "a", "b", "c"]) == {"b", "c"}
    assert await store.claim_events("r", ["b"]) == set()
    assert await store.claim_events("r", []) == set()
    assert await store.claim_events("other", ["a"]) == {"a"}
    assert await store.claimed_ids("r", ["a", "b", "c", "d"]) == {"a", "b", "c"}


# -- the Slack outbox (storage.slack_store) ---------------------------------------------


def slack_msg(
    kind: Kind,
    key: str,
    incident_id: str | None = "i1",
    channel: str = "#a",
    seconds: float = 0,
    **payload: Any,
) -> NewSlackMessage:
    line = {
        "project": "p",
        "severity": "critical",
        "summary": key,
        "fingerprint": "p:down",
        "opened_at": at(seconds).isoformat(),
    }
    body = {"text": key, **({"line": line} if kind == "post_card" else {}), **payload}
    return NewSlackMessage(channel, kind, key, body, incident_id, at(seconds))


async def test_slack_enqueue_is_idempotent_and_claims_in_order_one_per_channel(
    store: Store,
) -> None:
    first = [
        slack_msg("post_card", card_key("i1"), "i1"),
        slack_msg("thread_reply", "e1:reply", "i1", seconds=1),
        slack_msg("post_card", card_key("i2"), "i2", seconds=2),
        slack_msg("post_card", card_key("i3"), "i3", channel="#b"),
    ]
    assert await store.slack_enqueue(first) == 4
    assert await store.slack_enqueue(first) == 0  # a redelivered event queues nothing
    assert await store.slack_card("i1") == SlackCard("i1", "#a", None, None)
    assert await store.slack_thread_count("i1") == 1

    claimed = await store.slack_claim("me", limit=10)
    assert sorted((r.channel, r.dedupe_key) for r in claimed) == [
        ("#a", card_key("i1")),
        ("#b", card_key("i3")),
    ]
    assert await store.slack_claim("other") == []  # both channels are held
    row = next(r for r in claimed if r.channel == "#a")
    assert row.payload["text"] == card_key("i1") and row.state == "pending"

    await store.slack_mark_sent(row.id, "me", ts="111.1", posted_channel="C0A")
    assert await store.slack_card("i1") == SlackCard("i1", "C0A", "111.1", "111.1")
    # The reply's card has a ts now, and the reply is older than i2's card; but a new
    # outage's card goes first (head_order), the reply after it.
    (card2,) = await store.slack_claim("other")
    assert card2.dedupe_key == card_key("i2")
    await store.slack_mark_sent(card2.id, "other", ts="111.2")
    (reply,) = await store.slack_claim("other")
    assert reply.dedupe_key == "e1:reply"
    await store.slack_release("me")
    b_row = (await store.slack_claim("other"))[0]
    assert b_row.channel == "#b"
    sent = await store.slack_rows(state="sent")
    assert [r.dedupe_key for r in sent] == [card_key("i1"), card_key("i2")]
    assert sent[0].ts == "111.1" and sent[0].sent_at is not None


async def test_a_card_posted_into_a_thread_keeps_its_place_in_the_thread(store: Store) -> None:
    # An approval card threads under its incident's card: it is not a new outage, so it
    # does not jump ahead of the thread's earlier reply (only top-level cards do).
    await store.slack_enqueue([slack_msg("post_card", card_key("i1"), "i1")])
    (card1,) = await store.slack_claim("me")
    await store.slack_mark_sent(card1.id, "me", ts="111.1", posted_channel="C0A")
    await store.slack_enqueue([
        slack_msg("thread_reply", "e1:reply", "i1", seconds=1),
        slack_msg("post_card", card_key("a1"), "a1", seconds=2, thread_of="i1"),
        slack_msg("post_card", card_key("a2"), "a2", seconds=3,
                  message={"text": "x", "thread_ts": "111.1"}),
    ])  # fmt: skip
    order = []
    for _ in range(3):
        (row,) = await store.slack_claim("me")
        order.append(row.dedupe_key)
        await store.slack_mark_sent(row.id, "me", ts=f"111.{len(order) + 1}")
    assert order == ["e1:reply", card_key("a1"), card_key("a2")]


async def test_slack_update_waits_for_its_card(store: Store) -> None:
    # Queued before its card (another replica handled the later event first).
    await store.slack_enqueue([slack_msg("update_card", "e2:update", "i1", seconds=5)])
    assert await store.slack_claim("me") != []  # no card at all: handed over to be failed
    await store.slack_release("me")
    await store.slack_enqueue([slack_msg("post_card", card_key("i1"), "i1", seconds=9)])
    (card,) = await store.slack_claim("me")
    assert card.kind == "post_card"  # the older update is not ready: it needs the ts
    await store.slack_mark_done(card.id, "me", state="failed", error="invalid_blocks")
    (update,) = await store.slack_claim("me")  # ready: its card failed, to be failed too
    assert update.kind == "update_card"
    await store.slack_mark_done(update.id, "me", state="failed", error="card not posted")
    assert await store.slack_claim("me") == []
    failed = await store.slack_rows(state="failed")
    assert {r.last_error for r in failed} == {"invalid_blocks", "card not posted"}


async def test_slack_defer_holds_back_the_channel_only(store: Store) -> None:
    await store.slack_enqueue(
        [
            slack_msg("post_card", card_key("i1"), "i1"),
            slack_msg("post_card", card_key("i2"), "i2", channel="#b"),
        ]
    )
    a, b = sorted(await store.slack_claim("me"), key=lambda r: r.channel)
    before = await store.db_now()
    await store.slack_defer(a.id, "me", 3600, "429 ratelimited")
    await store.slack_mark_sent(b.id, "me", ts="1.0")
    assert await store.slack_claim("me") == []
    (row,) = await store.slack_rows(state="pending")
    assert row.attempts == 1 and row.last_error == "429 ratelimited"
    assert timedelta(seconds=3599) < row.not_before - before < timedelta(seconds=3700)
    due = await store.slack_next_due()
    assert due is not None and due == row.not_before
    await store.slack_enqueue([slack_msg("post_card", card_key("i3"), "i3", channel="#b")])
    assert [r.dedupe_key for r in await store.slack_claim("me")] == [card_key("i3")]


async def test_slack_storm_folds_the_sixth_card_and_later(store: Store) -> None:
    cards = [slack_msg("post_card", card_key(f"i{n}"), f"i{n}", seconds=n) for n in range(8)]
    for card in cards:  # one at a time, as incidents open
        assert await store.slack_enqueue([card]) == 1
    rows = await store.slack_rows(channel="#a")
    assert [r.state for r in rows if r.kind == "post_card"] == ["pending"] * 5 + ["folded"] * 3
    (storm_row,) = [r for r in rows if r.kind == "storm"]
    assert storm_row.storm_id is not None and storm_row.state == "pending"
    storm = await store.slack_storm(storm_row.storm_id)
    assert storm is not None and storm.ts is None
    assert [line["summary"] for line in storm.lines] == [card_key(f"i{n}") for n in (5, 6, 7)]
    folded = await store.slack_card("i6")
    assert folded is not None and folded.folded and not folded.posted
    # A reply of a folded incident waits for the storm message, then goes to its thread.
    await store.slack_enqueue([slack_msg("thread_reply", "e6:reply", "i6", seconds=20)])
    order = []
    while batch := await store.slack_claim("me"):
        (row,) = batch
        order.append(row.kind)
        await store.slack_mark_sent(row.id, "me", ts=f"{row.id}.0", posted_channel="C0A")
    assert order == ["post_card"] * 5 + ["storm", "thread_reply"]
    in_storm = await store.slack_card("i6")
    assert in_storm is not None and in_storm.ts == in_storm.thread_ts == f"{storm_row.id}.0"
    assert in_storm.channel == "C0A"


async def test_slack_two_claimers_get_disjoint_channels(open_new: OpenStore) -> None:
    one, two = await open_new(), await open_new()
    await one.slack_enqueue(
        [slack_msg("post_card", card_key(f"i{n}"), f"i{n}", channel=f"#c{n}") for n in range(20)]
    )
    got = await asyncio.gather(
        *(s.slack_claim(f"owner{i}", limit=4) for i in range(6) for s in (one, two))
    )
    channels = [r.channel for batch in got for r in batch]
    assert len(channels) == len(set(channels)) == 20


# -- silences, acknowledgement, action requests (storage.operations_store) ---------------


def silence_event(type_: str, calls: list[Silence] | None = None) -> SilenceEventFor:
    def build(row: Silence) -> Event:
        if calls is not None:
            calls.append(row)
        payload = {"silence_id": row.id, "until": row.ends_at.isoformat(), "by": row.created_by}
        return Event(type_, row.ended_at or row.starts_at, "test", payload, row.project)

    return build


def acked(by: str, calls: list[Incident]) -> EventFor:
    def build(row: Incident) -> Event:
        calls.append(row)
        payload = {"fingerprint": row.fingerprint, "severity": row.severity}
        payload |= {"summary": row.summary, "acked_by": by}
        return Event(INCIDENT_UPDATED, row.opened_at, "test", payload, row.project, row.id)

    return build


async def test_silence_create_replace_end_with_their_events(store: Store) -> None:
    now = await store.db_now()
    calls: list[Silence] = []
    first = await store.create_silence(
        "email-blast", now + timedelta(hours=1), "deploy", "U0ONE", silence_event(SILENCE_CREATED)
    )
    assert (first.project, first.reason, first.created_by) == ("email-blast", "deploy", "U0ONE")
    assert first.ends_at == now + timedelta(hours=1) and first.starts_at >= now
    assert first.ended_at is None and first.active_at(first.starts_at)
    assert await store.active_silence("email-blast") == first
    assert await store.active_silence("chatbot") is None
    assert await store.active_silences() == [first]
    # It runs out by itself: not active at its end, still active just before.
    assert await store.active_silence("email-blast", at=first.ends_at) is None
    before_end = first.ends_at - timedelta(microseconds=1)
    assert await store.active_silence("email-blast", at=before_end) == first

    second = await store.create_silence(
        "email-blast", now + timedelta(hours=2), "", "U0TWO", silence_event(SILENCE_CREATED)
    )
    assert await store.active_silences() == [second]  # replaced, one open row per project
    assert await store.active_silence("email-blast", at=now + timedelta(minutes=90)) == second

    ended = await store.end_silence("email-blast", "U0THREE", silence_event(SILENCE_ENDED, calls))
    assert ended is not None and ended.id == second.id and calls == [ended]
    assert ended.ended_by == "U0THREE" and ended.ended_at is not None
    assert await store.active_silence("email-blast") is None
    assert (
        await store.end_silence("email-blast", "U0THREE", silence_event(SILENCE_ENDED, calls))
        is None
    )
    assert len(calls) == 1  # nothing to end: no event built

    announced = await store.list_events(types=[SILENCE_CREATED, SILENCE_ENDED])
    assert [(e.type, e.payload["silence_id"]) for e in announced] == [
        (SILENCE_CREATED, first.id),
        (SILENCE_CREATED, second.id),
        (SILENCE_ENDED, second.id),
    ]
    assert all(e.project == "email-blast" for e in announced)


async def test_silence_refusals_write_nothing(store: Store) -> None:
    now = await store.db_now()
    with pytest.raises(ValueError, match="future"):
        await store.create_silence(
            "a", now - timedelta(seconds=1), "", "U0X", silence_event(SILENCE_CREATED)
        )
    with pytest.raises(ValueError, match="naive"):
        await store.create_silence(
            "a", datetime(2099, 1, 1), "", "U0X", silence_event(SILENCE_CREATED)
        )
    with pytest.raises(RuntimeError):  # the event cannot be built: the row is rolled back
        await store.create_silence("a", now + timedelta(hours=1), "", "U0X", _explode_silence)
    assert await store.active_silences() == []
    assert (await store.count_rows())["events"] == 0


def _explode_silence(row: Silence) -> Event:
    raise RuntimeError("event_for failed")


async def test_concurrent_silences_leave_one_open(open_new: OpenStore) -> None:
    one, two = await open_new(), await open_new()
    until = await one.db_now() + timedelta(hours=1)
    made = await asyncio.gather(
        *(
            s.create_silence("a", until, f"r{i}", "U0X", silence_event(SILENCE_CREATED))
            for i, s in enumerate([one, two] * 3)
        )
    )
    active = await one.active_silences()
    assert len(active) == 1 and active[0].id in {s.id for s in made}
    assert len(await one.list_events(types=[SILENCE_CREATED])) == 6


async def test_ack_incident_by_id_prefix_and_fingerprint(store: Store) -> None:
    down = incident(id="1a2b3c4d5e6f708192a3b4c5d6e7f809")
    metric = incident("email-blast:metric:error_rate", 1, id="1a2b9999000000000000000000000000")
    for row in (down, metric):
        assert await store.open_incident(row, announce(INCIDENT_OPENED)) is not None
    calls: list[Incident] = []

    with pytest.raises(AmbiguousIncident) as ambiguous:
        await store.ack_incident("1a2b", "U0ONE", None, acked("U0ONE", calls))
    assert ambiguous.value.ids == (down.id, metric.id) and calls == []

    got = await store.ack_incident("1a2b3c", "U0ONE", at(60), acked("U0ONE", calls))
    assert got == down and calls == [down]
    assert await store.incident_acks([down.id, metric.id]) == {
        down.id: IncidentAck("U0ONE", at(60))
    }
    # The same person again: nothing new; someone else: recorded, announced again.
    assert await store.ack_incident(down.id, "U0ONE", at(61), acked("U0ONE", calls)) == down
    assert len(calls) == 1
    assert (
        await store.ack_incident("email-blast:down", "U0TWO", at(62), acked("U0TWO", calls)) == down
    )
    assert (await store.incident_acks([down.id]))[down.id] == IncidentAck("U0TWO", at(62))
    by_fingerprint = await store.ack_incident(
        "email-blast:metric:error_rate", "U0ONE", None, acked("U0ONE", calls)
    )
    assert by_fingerprint == metric
    (_, ack_now) = sorted((await store.incident_acks([metric.id])).items())[0]
    assert ack_now.acked_at >= at(0)

    updates = await store.list_events(types=[INCIDENT_UPDATED])
    assert [(e.incident_id, e.payload["acked_by"]) for e in updates] == [
        (down.id, "U0ONE"),
        (down.id, "U0TWO"),
        (metric.id, "U0ONE"),
    ]


async def test_ack_matches_only_open_incidents_and_hex_prefixes(store: Store) -> None:
    await store.open_incident(incident(), announce(INCIDENT_OPENED))  # id "inc-email-blast:down-0"
    calls: list[Incident] = []
    assert await store.ack_incident("inc-", "U0X", None, acked("U0X", calls)) is None  # not hex
    assert await store.ack_incident("ffffff", "U0X", None, acked("U0X", calls)) is None
    await store.resolve_incident("email-blast:down", at(5), announce(INCIDENT_RESOLVED))
    assert await store.ack_incident("email-blast:down", "U0X", None, acked("U0X", calls)) is None
    with pytest.raises(ValueError):
        await store.ack_incident("", "U0X", None, acked("U0X", calls))
    assert calls == [] and await store.incident_acks(["inc-email-blast:down-0"]) == {}


async def test_request_action_with_its_event(store: Store) -> None:
    def requested(row: ActionRequest) -> Event:
        payload = {"action_id": row.id, "action": row.action, "requested_by": row.requested_by,
                   "reason": row.reason, "needs_approval": row.needs_approval}  # fmt: skip
        return Event(ACTION_REQUESTED, row.created_at, "test", payload, row.project)

    first = await store.request_action("email-blast", "restart", "U0ONE", "slow", True, requested)
    second = await store.request_action("chatbot", "pause", "auto-fixer", "", False, requested)
    assert (first.state, first.needs_approval, second.needs_approval) == ("requested", True, False)
    assert await store.get_action(first.id) == first
    assert await store.get_action("nope") is None
    assert await store.list_actions() == [second, first]
    assert await store.list_actions(project="email-blast") == [first]
    assert await store.list_actions(limit=1) == [second]
    (event_row,) = await store.list_events(project="email-blast", types=[ACTION_REQUESTED])
    assert event_row.payload == {"action_id": first.id, "action": "restart",
        "requested_by": "U0ONE", "reason": "slow", "needs_approval": True}  # fmt: skip

    def explode_action(row: ActionRequest) -> Event:
        raise RuntimeError("event_for failed")

    with pytest.raises(RuntimeError):
        await store.request_action("a", "restart", "U0X", "", False, explode_action)
    assert len(await store.list_actions()) == 2


async def test_request_action_writes_its_audit_row_in_the_same_transaction(
    store: Store,
) -> None:
    def requested(row: ActionRequest) -> Event:
        return Event(ACTION_REQUESTED, row.created_at, "test", {"action_id": row.id}, row.project)

    def allowed(row: ActionRequest) -> AuditEntry:
        return AuditEntry(actor="U0BOSS", actor_kind="user", action=row.action,
                          decision="allowed", project=row.project, outcome="approver",
                          action_id=row.id)  # fmt: skip

    act = await store.request_action("a", "restart", "U0BOSS", "", False, requested,
                                     audit=allowed)  # fmt: skip
    (row,) = await store.list_audit(project="a")
    assert (row.entry.action_id, row.entry.decision) == (act.id, "allowed")

    # An audit row that cannot be written takes the request with it: a request that could
    # run at once never exists without the row that allowed it.
    def unwritable(row: ActionRequest) -> AuditEntry:
        return AuditEntry(actor="U0BOSS", actor_kind="nobody", action=row.action,
                          decision="allowed", project="b", action_id=row.id)  # fmt: skip

    with pytest.raises(ValueError, match="actor_kind"):
        await store.request_action("b", "restart", "U0BOSS", "", False, requested,
                                   audit=unwritable)  # fmt: skip
    assert await store.list_actions(project="b") == []
    assert await store.list_audit(project="b") == []
    assert await store.list_events(project="b") == []


# -- approvals, audit log, remediation budget, analyses (storage.autonomy_store) --------

_APPROVAL_TYPES = {
    "pending": APPROVAL_REQUESTED,
    "granted": APPROVAL_GRANTED,
    "denied": APPROVAL_DENIED,
    "expired": APPROVAL_EXPIRED,
}


def approval_event(calls: list[Approval] | None = None) -> ApprovalEventFor:
    """Builds the event matching the row's state, as the approvals agent will."""

    def build(row: Approval) -> Event:
        if calls is not None:
            calls.append(row)
        payload = {"approval_id": row.id, "by": row.decided_by}
        return Event(_APPROVAL_TYPES[row.state], row.decided_at or row.created_at, "test",
                     payload, row.project)  # fmt: skip

    return build


def _explode_approval(row: Approval) -> Event:
    raise RuntimeError("event_for failed")


def _action_requested(row: ActionRequest) -> Event:
    return Event(ACTION_REQUESTED, row.created_at, "test", {"action_id": row.id}, row.project)


async def ask(
    store: Store, project: str = "email-blast", by: str = "U0REQ", ttl_s: float = 1800
) -> Approval:
    """An action request and its approval request."""
    act = await store.request_action(project, "restart", by, "slow", True, _action_requested)
    return await store.create_approval(
        act.id, project, "restart", by, "slow", ttl_s, approval_event()
    )


async def _types(store: Store, *types: str) -> list[str]:
    return [e.type for e in await store.list_events(types=list(types), limit=1000)]


async def _audit_of(store: Store, approval_id: str) -> list[AuditRecord]:
    rows = await store.list_audit(limit=1000)
    return [r for r in rows if r.entry.approval_id == approval_id]


async def test_approval_grant_once_with_event_action_state_and_audit(store: Store) -> None:
    calls: list[Approval] = []
    before = await store.db_now()
    approval = await ask(store)
    assert (approval.state, approval.requested_by, approval.decided_by) == (
        "pending",
        "U0REQ",
        None,
    )
    assert approval.created_at >= before
    assert approval.expires_at - approval.created_at == timedelta(minutes=30)  # DB time
    assert await store.get_approval(approval.id) == approval
    assert await store.get_approval("nope") is None
    assert await store.pending_approvals() == [approval]
    assert await store.pending_approvals("chatbot") == []
    action = await store.get_action(approval.action_id)
    assert action is not None and action.state == AWAITING_APPROVAL

    won = await store.decide_approval(
        approval.id, "granted", "U0BOSS", four_eyes=True, event_for=approval_event(calls)
    )
    assert won.won and won.approval is not None and calls == [won.approval]
    granted = won.approval
    assert (granted.state, granted.decided_by) == ("granted", "U0BOSS")
    assert granted.decided_at is not None and granted.decided_at >= approval.created_at
    action = await store.get_action(approval.action_id)
    assert action is not None and action.state == ACTION_STATE["granted"] == "approved"

    # The loser learns who decided, when and what ("already approved by @x at T").
    late = await store.decide_approval(
        approval.id, "denied", "U0OTHER", four_eyes=True, event_for=approval_event(calls)
    )
    assert (late.outcome, late.won, late.approval) == ("already_decided", False, granted)
    assert len(calls) == 1 and await store.pending_approvals() == []
    assert await _types(store, *_APPROVAL_TYPES.values()) == [APPROVAL_REQUESTED, APPROVAL_GRANTED]
    audit = await _audit_of(store, approval.id)
    assert [(r.entry.actor, r.entry.decision, r.entry.outcome) for r in audit] == [
        ("U0OTHER", "denied", "already_decided"),
        ("U0BOSS", "granted", "won"),
    ]
    assert audit[1].entry.project == "email-blast" and audit[1].entry.action == "restart"
    assert audit[1].entry.action_id == approval.action_id and audit[1].entry.actor_kind == "user"


async def test_approval_four_eyes_deny_and_unknown(store: Store) -> None:
    approval = await ask(store, by="U0REQ")
    calls: list[Approval] = []
    refused = await store.decide_approval(
        approval.id, "granted", "U0REQ", four_eyes=True, event_for=approval_event(calls)
    )
    assert refused.outcome == "four_eyes" and refused.approval == approval and calls == []
    # Withdrawing one's own request is no risk: denying is allowed under four-eyes.
    denied = await store.decide_approval(
        approval.id, "denied", "U0REQ", four_eyes=True, event_for=approval_event(calls)
    )
    assert denied.won and denied.approval is not None and denied.approval.state == "denied"
    action = await store.get_action(approval.action_id)
    assert action is not None and action.state == "denied"
    # Without four-eyes the requester may approve their own request.
    other = await ask(store, by="U0REQ")
    self_ok = await store.decide_approval(
        other.id, "granted", "U0REQ", four_eyes=False, event_for=approval_event(calls)
    )
    assert self_ok.won and len(calls) == 2

    unknown = await store.decide_approval(
        "nope", "granted", "U0X", four_eyes=True, event_for=approval_event(calls)
    )
    assert (unknown.outcome, unknown.approval) == ("not_found", None)
    with pytest.raises(ValueError, match="decision"):
        await store.decide_approval(
            other.id,
            "approved",
            "U0X",
            four_eyes=True,
            event_for=approval_event(),  # type: ignore[arg-type]
        )
    outcomes = [(r.entry.approval_id, r.entry.outcome) for r in await store.list_audit()]
    assert outcomes == [("nope", "not_found"), (other.id, "won"), (approval.id, "won"),
                        (approval.id, "four_eyes")]  # fmt: skip

    # The event cannot be built: decision, action state and audit row all roll back.
    third = await ask(store)
    with pytest.raises(RuntimeError):
        await store.decide_approval(
            third.id, "granted", "U0BOSS", four_eyes=True, event_for=_explode_approval
        )
    assert await store.get_approval(third.id) == third
    assert await _audit_of(store, third.id) == []
    action = await store.get_action(third.action_id)
    assert action is not None and action.state == AWAITING_APPROVAL


async def test_create_approval_refusals_write_nothing(store: Store) -> None:
    act = await store.request_action("a", "restart", "U0X", "", True, _action_requested)
    with pytest.raises(LookupError):
        await store.create_approval("nope", "a", "restart", "U0X", "", 60, approval_event())
    with pytest.raises(ValueError, match="not restart on b"):
        await store.create_approval(act.id, "b", "restart", "U0X", "", 60, approval_event())
    with pytest.raises(ValueError, match="ttl"):
        await store.create_approval(act.id, "a", "restart", "U0X", "", math.nan, approval_event())
    with pytest.raises(RuntimeError):
        await store.create_approval(act.id, "a", "restart", "U0X", "", 60, _explode_approval)
    assert await store.pending_approvals() == []
    action = await store.get_action(act.id)
    assert action is not None and action.state == "requested"

    first = await store.create_approval(act.id, "a", "restart", "U0X", "", 60, approval_event())
    with pytest.raises(ValueError, match="pending"):  # one pending approval per action
        await store.create_approval(act.id, "a", "restart", "U0X", "", 60, approval_event())
    assert await store.pending_approvals() == [first]
    assert await _types(store, APPROVAL_REQUESTED) == [APPROVAL_REQUESTED]


async def test_expired_approval_is_not_decided_and_expires_once(store: Store) -> None:
    approval = await ask(store, ttl_s=-1)  # already past its deadline: no waiting
    assert approval.expires_at < approval.created_at
    assert await store.pending_approvals() == []  # no longer decidable
    calls: list[Approval] = []
    late = await store.decide_approval(
        approval.id, "granted", "U0BOSS", four_eyes=True, event_for=approval_event(calls)
    )
    assert late.outcome == "expired" and late.approval is not None
    assert (late.approval.state, late.approval.decided_by) == ("expired", None)
    assert late.approval.decided_at == approval.expires_at  # dated at the deadline
    assert calls == [late.approval]  # this call noticed it, so it announced it
    action = await store.get_action(approval.action_id)
    assert action is not None and action.state == "expired"
    again = await store.decide_approval(
        approval.id, "granted", "U0BOSS", four_eyes=True, event_for=approval_event(calls)
    )
    assert (again.outcome, again.approval) == ("expired", late.approval) and len(calls) == 1
    assert await store.expire_approvals(approval_event(calls)) == [] and len(calls) == 1
    assert await _types(store, APPROVAL_EXPIRED, APPROVAL_GRANTED) == [APPROVAL_EXPIRED]
    # A new approval may be asked for the same action once the old one expired.
    renewed = await store.create_approval(
        approval.action_id, "email-blast", "restart", "U0REQ", "", 60, approval_event()
    )
    assert renewed.state == "pending"


async def test_expire_approvals_by_the_deadline(store: Store) -> None:
    long = await ask(store)  # the default 30 min
    short = await ask(store, "chatbot", ttl_s=60)
    calls: list[Approval] = []
    assert await store.expire_approvals(approval_event(calls)) == []
    tick = timedelta(microseconds=1)
    assert await store.expire_approvals(approval_event(calls), now=short.expires_at - tick) == []
    (gone,) = await store.expire_approvals(approval_event(calls), now=short.expires_at)
    assert (gone.id, gone.state, gone.decided_at) == (short.id, "expired", short.expires_at)
    assert await store.pending_approvals() == [long]
    assert await store.expire_approvals(approval_event(calls), now=long.expires_at) == [
        replace(long, state="expired", decided_at=long.expires_at)
    ]
    assert [c.id for c in calls] == [short.id, long.id]
    with pytest.raises(ValueError, match="naive"):
        await store.expire_approvals(approval_event(), now=datetime(2099, 1, 1))
    audit = await store.list_audit()
    assert [(r.entry.approval_id, r.entry.actor, r.entry.decision) for r in audit] == [
        (long.id, "orch", "expired"),
        (short.id, "orch", "expired"),
    ]


async def test_concurrent_decides_give_one_winner(open_new: OpenStore) -> None:
    one, two = await open_new(), await open_new()
    approval = await ask(one)
    results = await asyncio.gather(
        *(
            s.decide_approval(
                approval.id,
                ("granted", "denied")[i % 2],
                f"U0{i}",
                four_eyes=True,
                event_for=approval_event(),
            )
            for i, s in enumerate([one, two] * 5)
        )
    )
    winners = [r for r in results if r.won]
    assert len(winners) == 1 and winners[0].approval is not None
    final = winners[0].approval
    assert all(r.outcome == "already_decided" and r.approval == final for r in results if not r.won)
    assert await two.get_approval(approval.id) == final
    assert len(await _types(one, APPROVAL_GRANTED, APPROVAL_DENIED)) == 1
    assert len(await _audit_of(one, approval.id)) == 10  # every click, won or lost


async def test_concurrent_expirers_expire_each_once(open_new: OpenStore) -> None:
    one, two = await open_new(), await open_new()
    due = [await ask(one, f"p{i}", ttl_s=-1) for i in range(6)]
    batches = await asyncio.gather(
        *(s.expire_approvals(approval_event()) for s in [one, two, one, two])
    )
    expired = [a.id for batch in batches for a in batch]
    assert sorted(expired) == sorted(a.id for a in due)  # each once, none left
    assert len(await _types(one, APPROVAL_EXPIRED)) == 6
    assert len(await one.list_audit()) == 6


async def test_remediation_budget_counts_by_db_time(store: Store) -> None:
    window = 15 * 60.0
    await store.record_attempt("a", "restart", "U0OPS")  # an operator's restart counts
    assert await store.count_attempts("a", "restart", window) == 1
    taken = [await store.try_take_budget("a", "restart", 3, window, "auto-fixer") for _ in range(4)]
    assert taken == [True, True, False, False]
    assert await store.count_attempts("a", "restart", window) == 3
    # Per project and per action.
    assert await store.try_take_budget("b", "restart", 3, window, "auto-fixer", "act-1")
    assert await store.count_attempts("a", "clear_cache", window) == 0
    assert not await store.try_take_budget("a", "restart", 0, window, "auto-fixer")
    # The window is measured back from database now: attempts made one round trip ago
    # are outside a one-microsecond window.
    assert await store.count_attempts("a", "restart", 1e-6) == 0
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="window_s"):
            await store.count_attempts("a", "restart", bad)
        with pytest.raises(ValueError, match="window_s"):
            await store.try_take_budget("a", "restart", 3, bad, "auto-fixer")


async def test_budget_race_for_the_last_slots(open_new: OpenStore) -> None:
    one, two = await open_new(), await open_new()
    taken = await asyncio.gather(
        *(s.try_take_budget("a", "restart", 3, 900, f"r{i}") for i, s in enumerate([one, two] * 5))
    )
    assert sorted(taken) == [False] * 7 + [True] * 3
    assert await two.count_attempts("a", "restart", 900) == 3


def _suspended_event(row: Suspension) -> Event:
    return Event(REMEDIATION_SUSPENDED, row.since, "test", {"reason": row.reason}, row.project)


async def test_suspension_persists_across_reopening(open_new: OpenStore) -> None:
    first = await open_new()
    made = await first.suspend_remediation("a", "budget_exhausted", "auto-fixer", _suspended_event)
    assert (made.project, made.reason, made.by, made.until) == (
        "a", "budget_exhausted", "auto-fixer", None
    )  # fmt: skip
    assert await first.remediation_suspended("a") == made
    assert await first.remediation_suspended("b") is None
    await first.close()  # an orch restart

    again = await open_new()
    assert await again.remediation_suspended("a") == made
    timed = await again.suspend_remediation("b", "paused", "U0OPS", _suspended_event, for_s=600)
    assert timed.until == timed.since + timedelta(minutes=10)
    assert await again.remediation_suspended("b") == timed
    assert await again.remediation_suspended("b", at=timed.until) is None  # ran out
    # A new suspension replaces the old one.
    replaced = await again.suspend_remediation("a", "flapping", "auto-fixer", _suspended_event)
    assert await again.remediation_suspended("a") == replaced and replaced.reason == "flapping"
    assert await again.resume_remediation("a") == replaced
    assert await again.resume_remediation("a") is None
    assert await again.remediation_suspended("a") is None
    events = await again.list_events(types=[REMEDIATION_SUSPENDED])
    assert [(e.project, e.payload["reason"]) for e in events] == [
        ("a", "budget_exhausted"), ("b", "paused"), ("a", "flapping")
    ]  # fmt: skip
    with pytest.raises(ValueError, match="for_s"):
        await again.suspend_remediation("c", "paused", "U0OPS", _suspended_event, for_s=0)


async def test_audit_log_order_and_filters(store: Store) -> None:
    entries = [
        AuditEntry("U0A", "user", "restart", "allowed", "a", "slow", "succeeded",
                   details={"attempt": 1, "note": "ünïcode"}),
        AuditEntry("auto-fixer", "agent", "restart", "refused", "b", "budget", "",
                   action_id="act-1"),
        AuditEntry("claude", "claude", "analyse", "allowed", None),
        AuditEntry("ops", "operator", "pause", "allowed", "a"),
    ]  # fmt: skip
    before = await store.db_now()
    ids = [await store.append_audit(e) for e in entries]
    assert ids == sorted(ids) and len(set(ids)) == 4
    rows = await store.list_audit()
    assert [r.id for r in rows] == ids[::-1]  # newest first
    assert [r.entry for r in rows] == entries[::-1]
    assert all(r.at >= before and r.at.tzinfo is UTC for r in rows)
    assert [r.entry.actor for r in await store.list_audit(project="a")] == ["ops", "U0A"]
    assert [r.id for r in await store.list_audit(limit=2)] == ids[:1:-1]
    assert await store.list_audit(limit=0) == []
    assert [r.id for r in await store.list_audit(since=rows[0].at)] == [
        r.id for r in rows if r.at >= rows[0].at
    ]  # inclusive
    assert await store.list_audit(since=rows[0].at + timedelta(seconds=1)) == []
    with pytest.raises(ValueError, match="actor_kind"):
        await store.append_audit(AuditEntry("x", "robot", "restart", "allowed"))
    with pytest.raises(ValueError, match="limit"):
        await store.list_audit(limit=-1)
    assert len(await store.list_audit()) == 4


def _completed(calls: list[Analysis] | None = None) -> AnalysisEventFor:
    def build(row: Analysis) -> Event:
        if calls is not None:
            calls.append(row)
        payload = {"diagnosis": row.new.diagnosis, "engine": row.new.engine}
        return Event(ANALYSIS_COMPLETED, row.created_at, "test", payload, row.new.project,
                     row.new.incident_id)  # fmt: skip

    return build


async def test_analyses_and_token_sums(store: Store) -> None:
    before = await store.db_now()
    auto = NewAnalysis(
        "inc-1",
        "a",
        "claude",
        "OOM after deploy",
        "restart",
        0.8,
        "low",
        {"evidence": ["rss 2GB"], "ratio": 0.5},
        1200,
        300,
        2345.5,
        0.0123,
    )
    human = replace(
        auto,
        engine="rules",
        recommended_action=None,
        confidence=1.0,
        input_tokens=0,
        output_tokens=0,
        requested_by="U0ONE",
    )
    other = replace(auto, incident_id="inc-2", input_tokens=10, output_tokens=5)  # fmt: skip
    calls: list[Analysis] = []
    stored = [await store.record_analysis(n, _completed(calls)) for n in (auto, human, other)]
    assert [s.new for s in stored] == [auto, human, other] and calls == stored
    assert all(s.created_at >= before for s in stored) and len({s.id for s in stored}) == 3
    assert await store.analyses_for("inc-1") == stored[:2]
    assert await store.analyses_for("nope") == []
    assert await store.tokens_used_since(before) == 1500 + 15
    assert await store.tokens_used_since(before, incident_id="inc-1") == 1500
    assert await store.tokens_used_since(stored[-1].created_at + timedelta(seconds=1)) == 0
    (event_row,) = await store.list_events(types=[ANALYSIS_COMPLETED], project="a", limit=1)
    assert event_row.incident_id == "inc-2"

    with pytest.raises(ValueError, match="confidence"):
        await store.record_analysis(replace(auto, confidence=math.nan), _completed())
    with pytest.raises(ValueError, match="engine"):
        await store.record_analysis(replace(auto, engine="gpt"), _completed())
    with pytest.raises(ValueError, match="token"):
        await store.record_analysis(replace(auto, input_tokens=-1), _completed())

    def explode_analysis(row: Analysis) -> Event:
        raise RuntimeError("event_for failed")

    with pytest.raises(RuntimeError):
        await store.record_analysis(auto, explode_analysis)
    assert len(await store.analyses_for("inc-1")) == 2


async def test_sqlite_budget_window_and_approval_expiry_follow_the_store_clock(
    tmp_path: Path,
) -> None:
    """SQLite's database time is its injected clock: a window boundary to the microsecond."""
    clock = FakeClock(T0)
    store = SQLiteStore(tmp_path / "orch.db", clock=clock)
    await store.open()
    try:
        assert await store.try_take_budget("a", "restart", 1, 900, "auto-fixer")
        await clock.advance(900 - 1e-6)
        assert not await store.try_take_budget("a", "restart", 1, 900, "auto-fixer")
        await clock.advance(1e-6)  # the first attempt is exactly 15 min old: out
        assert await store.try_take_budget("a", "restart", 1, 900, "auto-fixer")
        approval = await ask(store, ttl_s=60)
        assert approval.expires_at == clock.now() + timedelta(seconds=60)
        await clock.advance(60)
        result = await store.decide_approval(
            approval.id, "granted", "U0BOSS", four_eyes=True, event_for=approval_event()
        )
        assert result.outcome == "expired"
    finally:
        await store.close()


async def test_sqlite_audit_log_is_append_only(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "orch.db")
    await store.open()
    try:
        await store.append_audit(AuditEntry("U0A", "user", "restart", "allowed", "a"))
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "orch.db") as conn:
        for statement in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(statement)
        assert conn.execute("SELECT actor FROM audit_log").fetchall() == [("U0A",)]
    conn.close()
