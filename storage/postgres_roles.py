"""Running orch as a PostgreSQL role that does not own its tables (DESIGN §6, hardening).

The audit log's trigger (``migrations/postgres/0007``) refuses UPDATE, DELETE and TRUNCATE
for every role, but the table's owner may drop or disable a trigger, and so could a
process running as the owner.  So production runs two roles: the *owner*, which applies
migrations (``orch migrate``) and nothing else, and a *runtime* role, which ``orch run``
connects as.  ``grant_runtime`` gives the runtime role exactly what the store needs on the
tables and sequences of the current schema: SELECT, INSERT, UPDATE, DELETE on every table,
but only SELECT and INSERT on the append-only ones and only SELECT on
``schema_migrations``; USAGE on the schema, never CREATE.  Privileges, not the trigger,
then refuse the runtime role any change to audit rows, and only an owner may drop or alter
a table or its trigger.

Grants cover the tables that exist when it runs, so it is re-run after every migration
(it is idempotent: it revokes everything first, in the same transaction).  No default
privileges: a table from a later migration stays closed to the runtime role until the
owner re-runs it, rather than open with UPDATE and DELETE before anyone decided.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import asyncpg

from storage.migrate import load_migrations, pending
from storage.postgres_connect import quote_ident

# Rows are only ever added: the runtime role may read and insert, never change or remove.
APPEND_ONLY_TABLES: Final = ("audit_log",)
# Written by migrations only, which the runtime role never runs.
READ_ONLY_TABLES: Final = ("schema_migrations",)


@dataclass(frozen=True, slots=True)
class RuntimeGrant:
    role: str
    schema: str
    tables: int
    append_only: tuple[str, ...]


class GrantRefused(ValueError):
    """The grant was not made, and why (for the operator, in one line)."""


async def grant_runtime(conn: asyncpg.Connection, role: str) -> RuntimeGrant:
    """Grant ``role`` what ``orch run`` needs on the tables of ``current_schema()``, in
    one transaction.  ``conn`` connects as the tables' owner (or a superuser), with the
    ``search_path`` orch itself uses.  GrantRefused when the role is missing, could
    change the audit log whatever is granted (a superuser, the owner or a member of the
    owner's role), or the schema is not fully migrated."""
    schema = await conn.fetchval("SELECT current_schema()")
    if schema is None:
        raise GrantRefused("no schema on the search_path: set the one orch uses in DATABASE_URL")
    await _check_role(conn, role, schema)
    await _check_migrated(conn, schema)
    s, r = quote_ident(schema), quote_ident(role)
    statements = [
        f"GRANT USAGE ON SCHEMA {s} TO {r}",
        f"REVOKE CREATE ON SCHEMA {s} FROM {r}",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA {s} FROM {r}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {r}",
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {s} FROM {r}",
        # Identity columns need no sequence privilege; a serial column would need USAGE.
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {r}",
        *(f"REVOKE UPDATE, DELETE ON {s}.{quote_ident(t)} FROM {r}" for t in APPEND_ONLY_TABLES),
        *(
            f"REVOKE INSERT, UPDATE, DELETE ON {s}.{quote_ident(t)} FROM {r}"
            for t in READ_ONLY_TABLES
        ),
    ]
    async with conn.transaction():
        for statement in statements:
            await conn.execute(statement)
    tables = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = $1", schema)
    return RuntimeGrant(role, schema, int(tables), APPEND_ONLY_TABLES)


async def _check_role(conn: asyncpg.Connection, role: str, schema: str) -> None:
    found = await conn.fetchrow(
        "SELECT rolsuper, rolcanlogin FROM pg_roles WHERE rolname = $1", role
    )
    if found is None:
        raise GrantRefused(
            f"role {role!r} does not exist: create it first "
            f"(CREATE ROLE {quote_ident(role)} LOGIN PASSWORD '...')"
        )
    if found["rolsuper"]:
        raise GrantRefused(f"role {role!r} is a superuser: privileges do not bind it")
    # A member of the owner's role acts as the owner (it may drop the trigger), and the
    # schema's owner may drop any table in it.
    owners = await conn.fetch(
        "SELECT tableowner AS owner FROM pg_tables WHERE schemaname = $1"
        " UNION SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = $1",
        schema,
    )
    for row in owners:
        if await conn.fetchval("SELECT pg_has_role($1, $2, 'MEMBER')", role, row["owner"]):
            raise GrantRefused(
                f"role {role!r} owns (or is a member of {row['owner']!r}, which owns) the "
                f"schema {schema!r} or its tables: the runtime role must be another role"
            )


async def _check_migrated(conn: asyncpg.Connection, schema: str) -> None:
    # Granting on a half-migrated schema would leave the next tables closed to orch.
    table = f"{quote_ident(schema)}.schema_migrations"
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table)
    rows = await conn.fetch(f"SELECT version FROM {table}") if exists else []
    applied = [r["version"] for r in rows]
    missing = pending(load_migrations("postgres"), applied)
    if missing:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in missing)
        raise GrantRefused(
            f"migrations pending in schema {schema!r} ({names}): run `orch migrate` as "
            "the owner first, then grant again"
        )
