"""PostgreSQL migrations: from empty, re-run, failure, and replicas migrating together.

Each test works in its own fresh schema (dropped afterwards).  "Together" is made certain,
not hoped for: the test holds the migration advisory lock itself, starts the migrators,
waits until the server shows them all waiting on that lock, then lets go.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import re
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from agents.clock import FakeClock
from storage.base import MetricSample
from storage.migrate import Migration, load_migrations
from storage.postgres import PostgresStore
from storage.postgres_migrate import MIGRATION_LOCK, apply_migrations
from tests.support import eventually

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parent.parent
VERSIONS = [m.version for m in load_migrations("postgres")]


@pytest.fixture
async def admin(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def schema(admin: asyncpg.Connection) -> AsyncIterator[str]:
    """A unique schema name, not created; dropped (if anything created it) afterwards."""
    name = f"orch_test_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


async def recorded(admin: asyncpg.Connection, schema: str) -> list[int]:
    rows = await admin.fetch(f'SELECT version FROM "{schema}".schema_migrations ORDER BY 1')
    return [r["version"] for r in rows]


async def wait_for_migration_waiters(admin: asyncpg.Connection, count: int) -> None:
    """Until ``count`` sessions wait on the migration lock (polled, no fixed sleep)."""
    sql = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND classid = $1 AND objid = $2 AND objsubid = 1"
    )
    key = (MIGRATION_LOCK >> 32, MIGRATION_LOCK & 0xFFFF_FFFF)

    async def waiting() -> bool:
        return bool(await admin.fetchval(sql, *key) >= count)

    await eventually(waiting, f"{count} sessions waiting on the migration lock", 30, every=0.02)


def test_migration_files_mirror_sqlite() -> None:
    """Every SQLite version exists for PostgreSQL under the same name; a PostgreSQL-only
    one (a layout SQLite does not need) says so in its header comment."""
    sqlite = {m.version: m.name for m in load_migrations("sqlite")}
    postgres = load_migrations("postgres")
    assert {m.version: m.name for m in postgres if m.version in sqlite} == sqlite
    for m in postgres:
        if m.version not in sqlite:
            header = "".join(itertools.takewhile(lambda s: s.startswith("--"), m.sql.splitlines()))
            assert re.search(r"postgresql[ -]only", header, re.IGNORECASE), (m.version, m.name)


async def test_migrate_from_empty_creates_schema_then_noop(
    database_url: str, admin: asyncpg.Connection, schema: str
) -> None:
    clock = FakeClock()
    store = PostgresStore(database_url, schema=schema, auto_migrate=False, clock=clock)
    await store.open()
    try:
        assert await store.migrate() == VERSIONS  # also creates the missing schema
        assert await store.migrate() == []
    finally:
        await store.close()
    rows = await admin.fetch(f'SELECT * FROM "{schema}".schema_migrations ORDER BY version')
    assert [(r["version"], r["name"]) for r in rows] == [
        (m.version, m.name) for m in load_migrations("postgres")
    ]
    assert all(r["applied_at"] == clock.now() for r in rows)
    for table in ("probes", "metric_samples", "events", "incidents", "consumed_events"):
        assert await admin.fetchval("SELECT to_regclass($1)", f"{schema}.{table}") is not None

    reopened = PostgresStore(database_url, schema=schema)  # auto_migrate: nothing to do
    await reopened.open()
    await reopened.close()
    assert await recorded(admin, schema) == VERSIONS


async def test_failed_migration_leaves_nothing_of_itself(
    database_url: str, admin: asyncpg.Connection, schema: str
) -> None:
    good = Migration(1, "good", "CREATE TABLE a (x int);")
    bad = Migration(2, "bad", "CREATE TABLE b (x int); SELECT 1 / 0;")
    conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    try:
        with pytest.raises(asyncpg.DivisionByZeroError):
            await apply_migrations(conn, [good, bad], schema=schema, clock=FakeClock())
        assert await recorded(admin, schema) == [1]
        assert await admin.fetchval("SELECT to_regclass($1)", f"{schema}.a") is not None
        assert await admin.fetchval("SELECT to_regclass($1)", f"{schema}.b") is None
        # The lock was given back: a fixed migration set applies.
        fixed = Migration(2, "fixed", "CREATE TABLE b (x int);")
        assert await apply_migrations(conn, [good, fixed], schema=schema, clock=FakeClock()) == [2]
    finally:
        await conn.close()


async def test_two_stores_migrating_at_once_apply_each_version_once(
    database_url: str, admin: asyncpg.Connection, schema: str
) -> None:
    stores = [PostgresStore(database_url, schema=schema, auto_migrate=False) for _ in range(2)]
    for store in stores:
        await store.open()
    try:
        await admin.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        try:
            runs = [asyncio.create_task(s.migrate()) for s in stores]
            await wait_for_migration_waiters(admin, 2)
        finally:
            await admin.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
        results = await asyncio.gather(*runs)
    finally:
        for store in stores:
            await store.close()
    assert sorted(v for r in results for v in r) == VERSIONS
    assert [] in results  # the second found everything done
    assert await recorded(admin, schema) == VERSIONS


def _orch_migrate(database_url: str) -> asyncio.Future[asyncio.subprocess.Process]:
    """``orch migrate`` in its own OS process, configured only by DATABASE_URL."""
    env = {**os.environ, "DATABASE_URL": database_url}
    code = "import sys; from bot.cli import main; sys.exit(main(['migrate']))"
    return asyncio.ensure_future(
        asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    )


def _with_search_path(url: str, schema: str) -> str:
    # libpq-style ``options`` in the URL: asyncpg passes unknown query parameters to the
    # server as startup settings, so this selects the schema without any orch setting.
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


async def test_two_processes_migrating_at_once_apply_each_version_once(
    database_url: str, admin: asyncpg.Connection, schema: str
) -> None:
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    url = _with_search_path(database_url, schema)
    await admin.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        procs = [await _orch_migrate(url) for _ in range(2)]
        await wait_for_migration_waiters(admin, 2)
    finally:
        await admin.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    outputs = [await p.communicate() for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
    lines = sorted(out.decode().strip() for out, _ in outputs)
    assert lines == ["orch: schema up to date", f"orch: schema up to date (applied {VERSIONS})"]
    assert await recorded(admin, schema) == VERSIONS


async def test_orch_migrate_against_a_down_server_says_so_without_password() -> None:
    with socket.socket() as sock:  # a port nobody listens on once this socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = await _orch_migrate(f"postgresql://orch:sup3r-s3cret@127.0.0.1:{port}/orch")
    out, err = await proc.communicate()
    assert proc.returncode != 0
    text = (out + err).decode()
    assert f"cannot connect to PostgreSQL at orch@127.0.0.1:{port}/orch" in text
    assert "sup3r-s3cret" not in text


async def test_wide_samples_migration_keeps_narrow_samples(
    database_url: str, admin: asyncpg.Connection, schema: str
) -> None:
    """0008 turns a row per sample into a row per (project, ts): values (NaN and the
    infinities too), duplicates and the order of equal timestamps survive."""
    t0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    t1, t2 = t0 + timedelta(seconds=10), t0 + timedelta(seconds=20)
    narrow = [  # in insertion (id) order
        ("a", "cpu", t1, 1.0),
        ("a", "mem", t1, 2.0),
        ("b", "cpu", t1, 9.0),
        ("a", "cpu", t1, math.nan),  # a duplicate (project, metric, ts), not consecutive
        ("a", "cpu", t0, 0.5),  # an earlier ts, written later
        ("a", "cpu", t2, math.inf),
        ("a", "mem", t2, -math.inf),
    ]
    conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    try:
        before = [m for m in load_migrations("postgres") if m.version <= 7]
        await apply_migrations(conn, before, schema=schema, clock=FakeClock())
        await conn.executemany(
            "INSERT INTO metric_samples (project, metric, ts, value) VALUES ($1, $2, $3, $4)",
            narrow,
        )
    finally:
        await conn.close()

    store = PostgresStore(database_url, schema=schema)  # migrates the rest
    await store.open()
    try:
        assert await recorded(admin, schema) == VERSIONS
        assert (await store.count_rows())["metric_samples"] == len(narrow)

        def series(samples: list[MetricSample]) -> list[tuple[str, str, datetime, str]]:
            return [(s.project, s.metric, s.ts, repr(s.value)) for s in samples]  # NaN == NaN

        def expected(project: str, metric: str) -> list[tuple[str, str, datetime, str]]:
            mine = [(p, m, ts, repr(v)) for p, m, ts, v in narrow if (p, m) == (project, metric)]
            return sorted(mine, key=lambda r: r[2])  # stable: equal ts keep id order

        for project, metric in (("a", "cpu"), ("a", "mem"), ("b", "cpu")):
            got = await store.metric_series(project, metric, since=t0)
            assert series(got) == expected(project, metric)
        assert series(await store.metric_series("a", "cpu", since=t1)) == [
            ("a", "cpu", t1, "1.0"),
            ("a", "cpu", t1, "nan"),
            ("a", "cpu", t2, "inf"),
        ]
        rows = await admin.fetch(
            f'SELECT project, ts, names, vals::text[] FROM "{schema}".metric_samples ORDER BY id'
        )
        assert [tuple(r) for r in rows] == [
            ("a", t1, ["cpu", "mem", "cpu"], ["1", "2", "NaN"]),
            ("b", t1, ["cpu"], ["9"]),
            ("a", t0, ["cpu"], ["0.5"]),
            ("a", t2, ["cpu", "mem"], ["Infinity", "-Infinity"]),
        ]
        # Writing goes on after the migrated rows.
        await store.add_metric_samples([MetricSample("a", t2, "cpu", 5.0)])
        got = await store.metric_series("a", "cpu", since=t2)
        assert series(got) == [("a", "cpu", t2, "inf"), ("a", "cpu", t2, "5.0")]
    finally:
        await store.close()
