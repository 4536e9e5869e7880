"""The ``orch`` command as a user runs it: real processes, real ports, real files.

These tests are bounded by ``--for`` (orch exits by itself) or by a signal the test sends
once orch has shown it is running; none waits on a fixed sleep.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.sqlite import SQLiteStore
from tests.support import StreamLines

FAST_DEMO = """
demo_secrets: true
defaults: {interval: 1s, timeout: 500ms, failure_threshold: 3, success_threshold: 2}
orchestrators:
  outreach: {channel: "#ops-outreach", projects: [email-blast, social-media]}
  support: {channel: "#ops-support", projects: [chatbot]}
projects:
  - {name: email-blast, url: "http://127.0.0.1:0", control_url: "http://127.0.0.1:0",
     control_secret_env: EMAIL_BLAST_CONTROL_SECRET, allowed_actions: [restart]}
  - {name: chatbot, url: "http://127.0.0.1:0", control_url: "http://127.0.0.1:0",
     control_secret_env: CHATBOT_CONTROL_SECRET, allowed_actions: [restart]}
  - {name: social-media, url: "http://127.0.0.1:0", control_url: "http://127.0.0.1:0",
     control_secret_env: SOCIAL_MEDIA_CONTROL_SECRET, allowed_actions: [restart]}
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "projects.yml").write_text(FAST_DEMO)
    return tmp_path


def orch_env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ANTHROPIC_"))}
    env.update(
        ORCH_SQLITE_PATH=str(workdir / "orch.db"),
        PORT="0",
        DATABASE_URL="",
        REDIS_URL="",
    )
    return env


def orch(
    *args: str, workdir: Path, timeout: float = 40, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        env=orch_env(workdir) | (extra_env or {}),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def is_subsequence(wanted: list, seen: list) -> bool:
    it = iter(seen)
    return all(any(w == s for s in it) for w in wanted)


def test_demo_with_a_fault_writes_the_expected_events_in_order(workdir: Path) -> None:
    events_path = workdir / "events.jsonl"
    done = orch(
        "demo", "--config", "projects.yml", "--for", "14",
        "--fault", "email-blast:crash@2", "--events-jsonl", str(events_path),
        workdir=workdir,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    events = read_events(events_path)
    blast = [(e["type"], e["payload"].get("to")) for e in events if e["project"] == "email-blast"]
    assert blast[:3] == [
        ("project.status_changed", "healthy"),
        ("project.status_changed", "down"),
        ("incident.opened", None),
    ]
    opened = next(e for e in events if e["type"] == "incident.opened")
    assert opened["payload"]["fingerprint"] == "email-blast:down"
    assert "connection refused" in opened["payload"]["summary"]
    # Nobody at the keyboard: orch restarted it, checked it, and the incident resolved.
    assert is_subsequence(
        [("action.requested", None), ("action.started", None), ("action.succeeded", None),
         ("action.verified", None), ("project.status_changed", "healthy"),
         ("incident.resolved", None)],
        blast,
    ), blast  # fmt: skip
    requested = next(e for e in events if e["type"] == "action.requested")
    assert requested["payload"]["action"] == "restart"
    assert requested["payload"]["origin"] == "autofix"
    # The other two stayed healthy: one transition each, no incident.
    others = [e for e in events if e["project"] in ("chatbot", "social-media")]
    assert sorted((e["project"], e["type"], e["payload"].get("to")) for e in others) == [
        ("chatbot", "project.status_changed", "healthy"),
        ("social-media", "project.status_changed", "healthy"),
    ]
    # Every event on the bus is also in the store (the record of truth), and nothing is
    # open there any more.
    stored = asyncio.run(_stored(workdir / "orch.db"))
    assert stored["event_ids"] == {e["id"] for e in events}
    assert stored["open"] == []
    assert stored["probes"] > 10


async def _stored(path: Path) -> dict:
    store = SQLiteStore(path)
    await store.open()
    try:
        events = await store.list_events(limit=10_000)
        incidents = await store.list_incidents(open_only=True)
        counts = await store.count_rows()
    finally:
        await store.close()
    return {
        "event_ids": {e.id for e in events},
        "open": [i.fingerprint for i in incidents],
        "probes": counts["probes"],
    }


@pytest.fixture
def running_demo(workdir: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "demo", "--config", "projects.yml", "--no-story",
         "--events-jsonl", "events.jsonl"],
        env=orch_env(workdir), cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def test_ctrl_c_stops_the_demo_quickly_and_keeps_what_was_stored(
    workdir: Path, running_demo: subprocess.Popen[str]
) -> None:
    events_path = workdir / "events.jsonl"
    # Running means: all three projects have reported in (their first transition).
    out = StreamLines(running_demo.stdout)
    for name in ("email-blast", "chatbot", "social-media"):
        out.wait_for(name, "project.status_changed", "unknown → healthy")
    running_demo.send_signal(signal.SIGINT)
    # The brief promises a stop within 2 s; allow slack for a loaded CI machine.
    assert running_demo.wait(timeout=5) == 0
    stderr = running_demo.stderr.read() if running_demo.stderr else ""
    assert "Traceback" not in stderr
    stored = asyncio.run(_stored(workdir / "orch.db"))
    assert stored["event_ids"] >= {e["id"] for e in read_events(events_path)}
    assert stored["probes"] >= 3


def test_check_config_exit_codes(workdir: Path) -> None:
    good = orch("check-config", "projects.yml", workdir=workdir)
    assert good.returncode == 0 and good.stdout.startswith("ok: 3 projects")
    (workdir / "bad.yml").write_text(
        "projects:\n  - name: x\n    url: ftp://x\n    intervall: 5s\n"
    )
    bad = orch("check-config", "bad.yml", workdir=workdir)
    assert bad.returncode == 2
    assert "bad.yml:3:" in bad.stderr and "url" in bad.stderr
    assert "bad.yml:4:" in bad.stderr and "intervall" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_run_refuses_a_bad_config_without_a_traceback(workdir: Path) -> None:
    (workdir / "bad.yml").write_text("projects: [{name: Bad Name, url: x}]\n")
    done = orch("run", "--config", "bad.yml", workdir=workdir)
    assert done.returncode == 2
    assert "bad.yml:1:" in done.stderr and "Traceback" not in done.stderr


def test_migrate_creates_the_schema_once(workdir: Path) -> None:
    first = orch("migrate", workdir=workdir)
    assert first.returncode == 0 and "applied" in first.stdout
    again = orch("migrate", workdir=workdir)
    assert again.returncode == 0 and again.stdout.strip() == "orch: schema up to date"


def test_bad_fault_flag_is_a_usage_error(workdir: Path) -> None:
    done = orch("demo", "--fault", "email-blast:explode@3", workdir=workdir)
    assert done.returncode == 2
    assert "unknown fault 'explode'" in done.stderr and "Traceback" not in done.stderr


def test_a_port_already_taken_is_one_clear_line(workdir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env_port = str(taken.getsockname()[1])
        done = subprocess.run(
            [sys.executable, "-m", "bot", "run", "--config", "projects.yml"],
            env={**orch_env(workdir), "PORT": env_port},
            cwd=workdir, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    assert done.returncode == 1
    assert "address already in use" in done.stderr.lower()
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"PORT": "abc"}, "PORT must be a port number (0-65535), got 'abc'"),
        ({"ORCH_API_MODE": "open"}, "ORCH_API_MODE must be one of off, local, token"),
        ({"ORCH_API_MODE": "token"}, "orch:"),  # token mode without any token
    ],
)
def test_bad_settings_are_one_line_not_a_traceback(
    workdir: Path, env: dict[str, str], says: str
) -> None:
    done = orch("run", "--config", "projects.yml", workdir=workdir, extra_env=env)
    assert done.returncode == 2
    assert says in done.stderr and "Traceback" not in done.stderr
