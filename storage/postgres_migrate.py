"""Applying ``storage/migrations/postgres/`` safely when several replicas start at once.

A session-level advisory lock (one fixed key for the whole database) is held around
checking and applying, so of processes migrating together one applies each version and
the others, once they get the lock, find nothing pending.  The key is database-wide, not
per schema: migrations are rare and short, and a per-schema key would have to be computed
before the schema exists.  Each migration runs in its own transaction together with its
``schema_migrations`` row, so a failed one leaves neither a half-built schema nor a record.

Nothing pending means no DDL at all, so a runtime role that owns nothing and may not
create (``storage.postgres_roles``) opens the store; with something pending it gets
``MigrationsPending``, saying to run ``orch migrate`` as the owner.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import asyncpg

from agents.clock import Clock
from storage.migrate import Migration, pending
from storage.postgres_connect import quote_ident
from storage.postgres_sql import SQL

MIGRATION_LOCK = 0x6F72_6368_6D69_6772  # "orchmigr" as a bigint key


async def apply_migrations(
    conn: asyncpg.Connection,
    migrations: Sequence[Migration],
    *,
    schema: str | None,
    clock: Clock,
) -> list[int]:
    """Apply what ``schema_migrations`` lacks; return the versions applied here."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    todo: list[Migration] = list(migrations)
    try:
        if schema is not None:
            await _ensure_schema(conn, schema)
        todo = pending(migrations, await _applied(conn))
        if not todo:
            return []
        await conn.execute(SQL.create_schema_migrations)
        applied: list[int] = []
        for migration in todo:
            async with conn.transaction():
                # Without arguments asyncpg uses the simple protocol, which runs a whole
                # script (several statements, DO blocks) in one round trip.
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    clock.now(),
                )
            applied.append(migration.version)
            todo = todo[1:]  # what is still pending, for MigrationsPending
        return applied
    except asyncpg.InsufficientPrivilegeError as exc:
        raise MigrationsPending(todo, await conn.fetchval("SELECT current_user"), exc) from None
    finally:
        # If this fails the session is gone (and its lock with it), or the pool's reset
        # on release runs pg_advisory_unlock_all(): the lock never outlives us.
        with contextlib.suppress(Exception):
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)


class MigrationsPending(PermissionError):
    """The schema lacks migrations and this role may not apply them (it owns nothing)."""

    def __init__(self, todo: Sequence[Migration], user: str, cause: Exception) -> None:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in todo)
        super().__init__(
            f"migrations pending ({names}) and role {user!r} may not apply them "
            f"({type(cause).__name__}: {cause}): run `orch migrate` as the owner "
            f"(its DATABASE_URL), then `orch db grant-runtime {user}`"
        )


async def _applied(conn: asyncpg.Connection) -> list[int]:
    # Read without CREATE TABLE IF NOT EXISTS, which demands CREATE on the schema even
    # when the table exists.  to_regclass resolves through the search_path, as the
    # store's statements do.
    user, schema = await conn.fetchrow("SELECT current_user, current_schema()")
    grant = f"`orch db grant-runtime {user}` as the owner (its DATABASE_URL)"
    if schema is None:  # the search_path's schema is missing, or this role lacks USAGE
        raise PermissionError(
            f"role {user!r} can use no schema on its search_path: run `orch migrate`, then {grant}"
        )
    if not await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
        return []
    try:
        rows = await conn.fetch("SELECT version FROM schema_migrations")
    except asyncpg.InsufficientPrivilegeError:
        raise PermissionError(
            f"role {user!r} may not read schema_migrations: run {grant}"
        ) from None
    return [r["version"] for r in rows]


async def _ensure_schema(conn: asyncpg.Connection, schema: str) -> None:
    # Checked first: CREATE SCHEMA IF NOT EXISTS still demands CREATE on the database,
    # which a production role owning only its schema does not have.
    exists = await conn.fetchval("SELECT true FROM pg_namespace WHERE nspname = $1", schema)
    if not exists:
        await conn.execute(f"CREATE SCHEMA {quote_ident(schema)}")
