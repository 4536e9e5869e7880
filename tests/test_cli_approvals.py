"""``orch approvals`` / ``orch approve`` / ``orch deny`` as an operator runs them: a real
process against a SQLite file, audited as the OS user.

The store is seeded and read back in the test; the command runs as a subprocess with its
own environment (``LOGNAME`` names the OS user), so what it wrote is what a running orch
would find and publish.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agents.actions import request_action
from agents.events import APPROVAL_EXPIRED, APPROVAL_GRANTED, INCIDENT_OPENED, Event
from storage.autonomy_store import Approval, AuditEntry
from storage.base import Incident
from storage.sqlite import SQLiteStore

CONFIG = """
orchestrators:
  outreach: {channel: "#ops-outreach", approvers: [U0BOSS], projects: [email-blast]}
projects:
  - {name: email-blast, url: "http://127.0.0.1:9", control_secret_env: EMAIL_BLAST_SECRET,
     allowed_actions: [restart, pause], needs_approval: [pause]}
"""
OPERATOR = "alice"
INCIDENT = "1a2b3c4d5e6f708192a3b4c5d6e7f809"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "projects.yml").write_text(CONFIG)
    return tmp_path


def orch(*args: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    # An operator's shell: no /control secrets (only the running orch needs them).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ANTHROPIC_"))}
    env.pop("EMAIL_BLAST_SECRET", None)
    env.update(ORCH_SQLITE_PATH=str(workdir / "orch.db"), ORCH_CONFIG=str(workdir / "projects.yml"),
               DATABASE_URL="", LOGNAME=OPERATOR, USER=OPERATOR)  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], env=env, cwd=workdir, capture_output=True,
        text=True, timeout=40, check=False,
    )  # fmt: skip


async def seeded(workdir: Path, *, ttl_s: float = 1800, action: str = "restart") -> Approval:
    """An open incident and a request for ``action`` on it waiting for approval."""
    store = SQLiteStore(workdir / "orch.db")
    await store.open()
    try:
        if not await store.list_incidents(open_only=True):
            row = Incident(INCIDENT, "email-blast:down", "email-blast", "down", "critical",
                           "email-blast is down", await store.db_now())  # fmt: skip
            opened = await store.open_incident(
                row, lambda i: Event(INCIDENT_OPENED, i.opened_at, "test", {}, i.project, i.id)
            )
            assert opened is not None
        requested = await request_action(
            store, "email-blast", action, requested_by="U0ASKER", reason="stuck queue",
            origin="user", needs_approval=True, incident_id=INCIDENT, source="slack",
            approval_ttl_s=ttl_s,
        )  # fmt: skip
        assert requested.approval is not None
        return requested.approval
    finally:
        await store.close()


async def read(workdir: Path) -> SQLiteStore:
    store = SQLiteStore(workdir / "orch.db")
    await store.open()
    return store


async def test_approvals_lists_what_waits(workdir: Path) -> None:
    done = orch("approvals", workdir=workdir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "no approvals are waiting"
    approval = await seeded(workdir)
    done = orch("approvals", workdir=workdir)
    assert done.returncode == 0, done.stderr
    header, line = done.stdout.strip().splitlines()
    assert header.split()[:4] == ["ID", "PROJECT", "ACTION", "REQUESTED"]
    assert line.split()[:4] == [approval.id, "email-blast", "restart", "U0ASKER"]
    assert f"{approval.expires_at:%H:%M:%S} UTC" in line


async def test_approve_by_prefix_is_audited_as_the_os_user_and_stored_for_the_relay(
    workdir: Path,
) -> None:
    approval = await seeded(workdir)
    done = orch("approve", approval.id[:6], "--reason", "checked the queue", workdir=workdir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"approved {approval.id[:8]} as {OPERATOR}: restart on email-blast runs in the running orch"
    )
    store = await read(workdir)
    try:
        row = await store.get_approval(approval.id)
        assert row is not None and (row.state, row.decided_by) == ("granted", OPERATOR)
        action = await store.get_action(approval.action_id)
        assert action is not None and action.state == "approved"
        (event,) = await store.list_events(types=[APPROVAL_GRANTED])
        assert (event.incident_id, event.source, event.payload["by"]) == (INCIDENT, "cli", OPERATOR)
        # Not published by the command: the running orch's relay sweep publishes it.
        assert event.id in {e.id for e in await store.unpublished_events(1000)}
        decision, note = [r.entry for r in reversed(await store.list_audit())]
        assert (decision.actor, decision.actor_kind, decision.decision, decision.outcome) == (
            OPERATOR, "operator", "granted", "won")  # fmt: skip
        assert note == AuditEntry(
            OPERATOR, "operator", "restart", "comment", "email-blast", "checked the queue", "won",
            approval.id, approval.action_id, {"decision": "granted"},
        )  # fmt: skip
    finally:
        await store.close()

    again = orch("deny", approval.id, workdir=workdir)
    assert again.returncode == 1
    assert again.stdout.startswith(f"{approval.id[:8]} was already approved by {OPERATOR} at ")


async def test_deny_then_refusals_exit_1(workdir: Path) -> None:
    approval = await seeded(workdir, action="pause")
    done = orch("deny", approval.id, workdir=workdir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"denied {approval.id[:8]} as {OPERATOR}: pause on email-blast will not run"
    )
    unknown = orch("approve", "ffffffff", workdir=workdir)
    assert unknown.returncode == 1 and "no pending approval matches ffffffff" in unknown.stderr
    bad = orch("approve", "x'; drop", workdir=workdir)
    assert bad.returncode == 1 and "is not an approval id" in bad.stderr
    store = await read(workdir)
    try:
        action = await store.get_action(approval.action_id)
        assert action is not None and action.state == "denied"
        refused = [r.entry for r in await store.list_audit() if r.entry.decision == "refused"]
        assert [(e.actor, e.actor_kind, e.outcome) for e in refused] == [
            (OPERATOR, "operator", "not_found"), (OPERATOR, "operator", "not_found")]  # fmt: skip
    finally:
        await store.close()


async def test_an_expired_approval_runs_nothing(workdir: Path) -> None:
    approval = await seeded(workdir, ttl_s=0)  # due at once: no waiting in a test
    done = orch("approve", approval.id, workdir=workdir)
    assert done.returncode == 1
    assert done.stdout.strip().startswith(f"{approval.id[:8]} expired at ")
    assert done.stdout.strip().endswith("nothing ran")
    store = await read(workdir)
    try:
        (event,) = await store.list_events(types=[APPROVAL_EXPIRED])
        assert event.incident_id == INCIDENT
        action = await store.get_action(approval.action_id)
        assert action is not None and action.state == "expired"
    finally:
        await store.close()


def test_a_bad_config_is_exit_2(workdir: Path) -> None:
    (workdir / "projects.yml").write_text("projects: [{name: x}]\n")
    done = orch("approve", "abcdef", workdir=workdir)
    assert done.returncode == 2 and "configuration is not valid" in done.stderr
