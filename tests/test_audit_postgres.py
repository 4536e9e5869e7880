"""The audit log is append-only on PostgreSQL, for orch's own role (DESIGN §6, hardening).

orch connects with the role that owns its tables, so privileges alone could not stop it
rewriting history; the statement-level trigger of ``migrations/postgres/0007`` refuses
every UPDATE, DELETE and TRUNCATE, whoever runs it (a superuser too, as here).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from storage.autonomy_store import AuditEntry
from storage.postgres import PostgresStore

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(30)]

REFUSED = [
    "UPDATE audit_log SET outcome = 'rewritten'",
    "UPDATE audit_log SET actor = 'nobody' WHERE false",  # refused even when no row matches
    "DELETE FROM audit_log WHERE id = 1",
    "DELETE FROM audit_log",
    "TRUNCATE audit_log",
]


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PostgresStore]:
    schema = f"orch_test_{uuid.uuid4().hex[:12]}"
    store = PostgresStore(database_url, schema=schema)
    try:
        await store.open()
        yield store
    finally:
        await store.close()
        admin = await asyncpg.connect(database_url)
        try:
            await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await admin.close()


@pytest.mark.parametrize("statement", REFUSED)
async def test_audit_log_refuses_update_delete_truncate(
    store: PostgresStore, statement: str
) -> None:
    entry = AuditEntry("U0A", "user", "restart", "allowed", "a", "slow", "succeeded")
    first = await store.append_audit(entry)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        async with store.transaction() as conn:
            await conn.execute(statement)
    (row,) = await store.list_audit()
    assert (row.id, row.entry) == (first, entry)  # unchanged
    assert await store.append_audit(entry) > first  # appending still works
