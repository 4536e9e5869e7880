"""A fresh orch schema migrated by its owner, and a LOGIN role granted what ``orch run``
needs (``storage.postgres_roles``), for tests that run orch as a non-owner role.  The
server trusts loopback connections, so the role connects without a password."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from storage.postgres import PostgresStore
from storage.postgres_roles import grant_runtime


@dataclass(frozen=True)
class RuntimeRole:
    role: str
    schema: str
    owner_url: str  # the test server's URL, search_path on the schema
    runtime_url: str  # the same as ``role``


def with_search_path(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}')}"


def as_user(url: str, user: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{user}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@contextlib.asynccontextmanager
async def runtime_role(database_url: str, *, grant: bool = True) -> AsyncIterator[RuntimeRole]:
    """Schema and role dropped afterwards, whatever happened in between."""
    suffix = uuid.uuid4().hex[:12]
    schema, role = f"orch_test_{suffix}", f"orch_rt_{suffix}"
    owner_url = with_search_path(database_url, schema)
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN')
        owner = PostgresStore(database_url, schema=schema, max_size=1)
        await owner.open()  # creates the schema and applies every migration
        await owner.close()
        if grant:
            conn = await asyncpg.connect(owner_url)
            try:
                await grant_runtime(conn, role)
            finally:
                await conn.close()
        yield RuntimeRole(
            role, schema, owner_url, with_search_path(as_user(database_url, role), schema)
        )
    finally:
        try:
            await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            # DROP OWNED revokes what is left (privileges elsewhere in this database).
            await admin.execute(f'DROP OWNED BY "{role}"')
            await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        finally:
            await admin.close()
