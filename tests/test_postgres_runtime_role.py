"""orch run as a PostgreSQL role that does not own its tables (``orch db grant-runtime``).

The owner migrates a fresh schema; a LOGIN role made here gets the runtime grants; the
real PostgresStore opened as that role does its everyday work, while privileges (not the
trigger, which an owner could drop) refuse it any change to the audit log, and DDL.
Schema and role are dropped afterwards, even when a test fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from agents.actions import approval_event, request_action
from agents.events import INCIDENT_OPENED
from bot.cli import main
from storage.autonomy_store import AuditEntry
from storage.postgres import PostgresStore
from storage.postgres_migrate import MigrationsPending
from tests.pg_roles import RuntimeRole, runtime_role
from tests.test_store_contract import announce, incident, probe

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]

ENTRY = AuditEntry("U0A", "user", "restart", "allowed", "email-blast", "slow", "verified")


@pytest.fixture
async def granted(database_url: str) -> AsyncIterator[RuntimeRole]:
    async with runtime_role(database_url) as role:
        yield role


@pytest.fixture
async def runtime_store(granted: RuntimeRole) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(granted.runtime_url)  # auto_migrate: nothing is pending
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_the_store_works_as_the_runtime_role(
    runtime_store: PostgresStore, granted: RuntimeRole
) -> None:
    async with runtime_store.transaction() as conn:
        assert await conn.fetchval("SELECT current_user") == granted.role
    await runtime_store.add_probes([probe("email-blast", 1, "fail")])
    assert [p.level for p in await runtime_store.recent_probes("email-blast")] == ["fail"]
    opened = await runtime_store.open_incident(incident(), announce(INCIDENT_OPENED))
    assert opened is not None
    assert [i.id for i in await runtime_store.list_incidents()] == [opened.id]
    first = await runtime_store.append_audit(ENTRY)
    # Asking and granting updates approvals and actions, and appends the click's audit row.
    asked = await request_action(
        runtime_store, "email-blast", "restart", requested_by="U0ASK", reason="down",
        origin="user", needs_approval=True,
    )  # fmt: skip
    assert asked.approval is not None
    result = await runtime_store.decide_approval(
        asked.approval.id, "granted", "U0BOSS", four_eyes=True, event_for=approval_event(None, "t")
    )
    assert result.won
    rows = await runtime_store.list_audit()
    assert [(r.entry.actor, r.entry.decision, r.entry.outcome) for r in rows] == [
        ("U0BOSS", "granted", "won"),
        ("U0A", "allowed", "verified"),
    ]
    assert rows[-1].id == first
    assert await runtime_store.migrate() == []  # nothing pending: no DDL attempted


REFUSED = [
    "UPDATE audit_log SET outcome = 'rewritten'",
    "DELETE FROM audit_log",
    "TRUNCATE audit_log",
    "DROP TRIGGER audit_log_append_only ON audit_log",
    "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
    "ALTER TABLE audit_log ADD COLUMN note text",
    "DROP TABLE audit_log",
    "DROP FUNCTION audit_log_refuse_change()",
    "CREATE TABLE shadow (id int)",
    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'x', now())",
]


@pytest.mark.parametrize("statement", REFUSED)
async def test_the_runtime_role_cannot_change_the_audit_log_or_the_schema(
    runtime_store: PostgresStore, granted: RuntimeRole, statement: str
) -> None:
    first = await runtime_store.append_audit(ENTRY)
    # Refused by privileges ("permission denied", "must be owner"), before the trigger.
    with pytest.raises(
        asyncpg.InsufficientPrivilegeError, match=r"permission denied|must be owner"
    ):
        async with runtime_store.transaction() as conn:
            await conn.execute(statement)
    (row,) = await runtime_store.list_audit()
    assert (row.id, row.entry) == (first, ENTRY)
    owner = await asyncpg.connect(granted.owner_url)
    try:
        triggers = await owner.fetchval(
            "SELECT count(*) FROM pg_trigger WHERE tgname = 'audit_log_append_only'"
            " AND tgenabled = 'O' AND tgrelid = 'audit_log'::regclass"
        )
        assert triggers == 1
    finally:
        await owner.close()


async def test_pending_migrations_are_refused_with_what_to_run(granted: RuntimeRole) -> None:
    owner = await asyncpg.connect(granted.owner_url)
    try:  # as if orch were upgraded before the owner ran `orch migrate`
        await owner.execute("DELETE FROM schema_migrations WHERE version = 12")
    finally:
        await owner.close()
    store = PostgresStore(granted.runtime_url)
    with pytest.raises(MigrationsPending) as refused:
        await store.open()
    message = str(refused.value)
    assert "migrations pending (0012_incident_causes)" in message
    assert "run `orch migrate` as the owner" in message
    assert f"orch db grant-runtime {granted.role}" in message


async def test_a_role_not_granted_is_told_to_ask_for_the_grant(database_url: str) -> None:
    async with runtime_role(database_url, grant=False) as role:
        store = PostgresStore(role.runtime_url)
        with pytest.raises(PermissionError, match=f"orch db grant-runtime {role.role}"):
            await store.open()


async def test_orch_db_grant_runtime_grants_and_is_rerun_after_a_migration(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async with runtime_role(database_url, grant=False) as role:
        monkeypatch.setenv("DATABASE_URL", role.owner_url)
        assert await asyncio.to_thread(main, ["db", "grant-runtime", role.role]) == 0
        out = capsys.readouterr().out
        assert f"orch db: {role.role} may read and write the" in out
        assert f"of schema {role.schema}, and only read and append to audit_log" in out
        owner = await asyncpg.connect(role.owner_url)
        try:

            async def may(privilege: str, table: str) -> bool:
                return bool(
                    await owner.fetchval(
                        "SELECT has_table_privilege($1, $2, $3)", role.role, table, privilege
                    )
                )

            assert [await may(p, "audit_log") for p in ("SELECT", "INSERT")] == [True, True]
            assert [await may(p, "audit_log") for p in ("UPDATE", "DELETE", "TRUNCATE")] == [
                False, False, False,
            ]  # fmt: skip
            assert await may("UPDATE", "approvals") and await may("DELETE", "probes")
            # A later migration's table stays closed until the grant is run again.
            await owner.execute("CREATE TABLE later_feature (id int)")
            assert not await may("SELECT", "later_feature")
            assert await asyncio.to_thread(main, ["db", "grant-runtime", role.role]) == 0
            assert await may("INSERT", "later_feature")
            assert not await may("UPDATE", "audit_log")  # re-running keeps the log closed
        finally:
            await owner.close()


@pytest.mark.parametrize(
    ("who", "why"),
    [
        (
            "no_such_role_here",
            "role 'no_such_role_here' does not exist: create it first"
            " (CREATE ROLE \"no_such_role_here\" LOGIN PASSWORD '...')",
        ),
        ("postgres", "role 'postgres' is a superuser: privileges do not bind it"),
    ],
)
async def test_orch_db_grant_runtime_refuses_roles_that_could_rewrite_history(
    granted: RuntimeRole,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    who: str,
    why: str,
) -> None:
    monkeypatch.setenv("DATABASE_URL", granted.owner_url)
    assert await asyncio.to_thread(main, ["db", "grant-runtime", who]) == 1
    assert capsys.readouterr().err.strip() == f"orch db: {why}"


async def test_orch_db_grant_runtime_refuses_a_member_of_the_owner(
    granted: RuntimeRole, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    owner = await asyncpg.connect(granted.owner_url)
    try:  # the schema's owner (a superuser here) may drop its tables, so its members may
        table_owner = await owner.fetchval(
            "SELECT tableowner FROM pg_tables WHERE tablename = 'audit_log'"
            " AND schemaname = current_schema()"
        )
        await owner.execute(f'CREATE ROLE "{granted.role}_owner" NOSUPERUSER')
        await owner.execute(f'ALTER TABLE audit_log OWNER TO "{granted.role}_owner"')
        await owner.execute(f'GRANT "{granted.role}_owner" TO "{granted.role}"')
        monkeypatch.setenv("DATABASE_URL", granted.owner_url)
        assert await asyncio.to_thread(main, ["db", "grant-runtime", granted.role]) == 1
        err = capsys.readouterr().err
        assert f"role '{granted.role}' owns (or is a member of '{granted.role}_owner'" in err
    finally:
        await owner.execute(f'ALTER TABLE audit_log OWNER TO "{table_owner}"')
        await owner.execute(f'DROP ROLE "{granted.role}_owner"')
        await owner.close()
