"""What the production-backend benchmarks share: where the servers are, throwaway schemas
and Redis keys, figures, and the ``{"name", "value", "unit", ...}`` lines.

Every benchmark here works on loopback servers only (it refuses any other host: it
creates and drops schemas and writes hundreds of thousands of rows), in a schema or key
prefix of its own that it removes when it ends, however it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import statistics
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg

from bench import report
from bench.proc import percentile
from storage.postgres_connect import quote_ident

DATABASE_URL = os.environ.get(
    "ORCH_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("ORCH_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
T = TypeVar("T")
# Schemas and Redis keys this bench creates start with this (plus a random suffix).
PREFIX = "orch_bench_"


_stop_requested = False


def request_stop() -> None:
    """Called on SIGINT/SIGTERM, besides cancelling the suite's task (see ``check_stop``)."""
    global _stop_requested
    _stop_requested = True


def check_stop() -> None:
    """Raise CancelledError once a stop was requested.  Loops that talk to Redis call it:
    on Python 3.11 redis-py sends through ``asyncio.wait_for``, which loses a cancellation
    that lands just as the send completes, so a cancelled loop may carry on."""
    if _stop_requested:
        raise asyncio.CancelledError


async def finish(work: Awaitable[T]) -> T:
    """Await clean-up ``work`` to its end even if we are cancelled meanwhile (a Ctrl-C that
    lands during DROP SCHEMA must not leave the schema behind); then re-raise the
    cancellation."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result


def log(message: str) -> None:
    for line in message.splitlines():
        print(f"[bench] {line}", file=sys.stderr, flush=True)


def require_loopback(url: str, what: str) -> None:
    """Refuse a server that is not on this machine: the bench is no load test for a
    shared or production database."""
    try:
        host = urlsplit(url).hostname or "localhost"
    except ValueError:
        raise SystemExit(f"bench: {what} URL is not parsable") from None
    if host == "localhost":
        return
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:
            return
    raise SystemExit(f"bench: {what} must be on loopback (got host {host!r}); refusing")


def new_name(kind: str) -> str:
    return f"{PREFIX}{kind}_{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def scratch_schema(kind: str, dsn: str = DATABASE_URL) -> AsyncIterator[str]:
    """A schema name that is dropped (CASCADE) on exit, even on error or cancellation.
    The store creates it when it migrates."""
    schema = new_name(kind)
    try:
        yield schema
    finally:
        await finish(drop_schema(dsn, schema))


async def drop_schema(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
    finally:
        await conn.close()


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def latency_figures(samples: Sequence[float]) -> dict[str, float]:
    """p50/p99/max in seconds (nearest rank)."""
    return {
        "p50": percentile(samples, 50),
        "p99": percentile(samples, 99),
        "max": max(samples, default=float("nan")),
    }


class Lines:
    """Collects the JSON lines of one suite; every line carries ``params``."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.lines: list[dict[str, Any]] = []

    def add(self, name: str, value: Any, unit: str, **extra: Any) -> None:
        value = report._clean(value)
        self.lines.append({"name": name, "value": value, "unit": unit, **extra, **self.params})

    def emit(self, stamp: str) -> str:
        path = report.emit(self.lines, stamp)
        return str(path.relative_to(report.RESULTS_DIR.parent.parent))


async def remove_leftovers(dsn: str, redis_url: str) -> tuple[list[str], int]:
    """Drop every ``orch_bench_*`` schema and delete every ``orch_bench_*`` Redis key: what
    a bench killed with SIGKILL leaves behind.  Returns (schemas dropped, keys deleted)."""
    import redis.asyncio as aioredis

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)", PREFIX
        )
        for (schema,) in rows:
            await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
    finally:
        await conn.close()
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{PREFIX}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
    return [r[0] for r in rows], len(keys)
