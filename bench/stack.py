"""orch's production backends for a bench run: a scratch PostgreSQL schema and a private
Redis.

The schema (``orch_bench_<kind>_<random>``, on ``ORCH_BENCH_DATABASE_URL``) is reached
through the DSN's ``search_path``, exactly as an operator would point orch at a schema,
and dropped at the end.  Redis is a ``redis-server`` of our own on a free loopback port,
without persistence: orch's Runtime always uses the stream ``orch:events``, which on the
shared server would mix with anyone else's orch; a private server also leaves nothing
behind.  Both go away however the bench ends (SIGKILL aside: ``make bench ARGS=cleanup``).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from urllib.parse import quote

import asyncpg

from bench import backends
from storage.postgres_connect import quote_ident

READY_TIMEOUT_S = 10.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def private_redis() -> AsyncIterator[str]:
    """A throwaway redis-server; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not on PATH (needed for --backend postgres+redis)")
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="orch-bench-redis-") as workdir:
        proc = await asyncio.create_subprocess_exec(
            binary,
            "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", workdir, "--protected-mode", "no",
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await _wait_redis(port)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
            await backends.finish(asyncio.wait_for(proc.wait(), 10))


async def _wait_redis(port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"PING\r\n")
            await writer.drain()
            line = await reader.readline()
            writer.close()
            if line.startswith(b"+PONG"):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"private redis-server on port {port} did not answer PING")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def production(kind: str) -> AsyncIterator[tuple[str, str]]:
    """(DATABASE_URL on a scratch schema, REDIS_URL of a private server)."""
    dsn = backends.DATABASE_URL
    backends.require_loopback(dsn, "ORCH_BENCH_DATABASE_URL")
    async with backends.scratch_schema(kind, dsn) as schema, private_redis() as redis_url:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.execute(f"CREATE SCHEMA {quote_ident(schema)}")
        finally:
            await conn.close()
        sep = "&" if "?" in dsn else "?"
        yield f"{dsn}{sep}options={quote(f'-csearch_path={schema}')}", redis_url
