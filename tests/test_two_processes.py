"""The production shape in two terminals: ``orch fleet`` and ``orch run`` as separate
processes, the demo config's secret arrangement, no extra environment."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from demo.faults import post_fault
from tests.support import StreamLines
from tests.test_cli import orch_env


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def config_text(ports: list[int]) -> str:
    names = ["email-blast", "chatbot", "social-media"]
    envs = ["EMAIL_BLAST", "CHATBOT", "SOCIAL_MEDIA"]
    projects = "\n".join(
        f"  - {{name: {name}, url: 'http://127.0.0.1:{ports[i]}',"
        f" control_url: 'http://127.0.0.1:{ports[i + 3]}',"
        f" control_secret_env: {env}_CONTROL_SECRET, allowed_actions: [restart]}}"
        for i, (name, env) in enumerate(zip(names, envs, strict=True))
    )
    return (
        f"demo_secrets: true\ndefaults: {{interval: 1s, timeout: 500ms}}\nprojects:\n{projects}\n"
    )


def start(args: list[str], workdir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bot", *args],
        env=orch_env(workdir),
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


async def test_fleet_and_run_in_two_processes(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    ports = free_ports(6)
    (tmp_path / "projects.yml").write_text(config_text(ports))
    fleet = start(["fleet", "--config", "projects.yml"], tmp_path)
    processes.append(fleet)
    fleet_log = StreamLines(fleet.stderr)
    for name in ("email-blast", "chatbot", "social-media"):
        fleet_log.wait_for(f"fleet: {name} on")
    run = start(["run", "--config", "projects.yml"], tmp_path)
    processes.append(run)
    log = StreamLines(run.stderr)
    for name in ("email-blast", "chatbot", "social-media"):
        log.wait_for(name, "project.status_changed", "unknown → healthy")
    # Inject a crash through the fleet's signed demo route, as a dashboard would.
    async with aiohttp.ClientSession() as session:
        await post_fault(
            session, f"http://127.0.0.1:{ports[3]}", b"orch-demo-secret:email-blast", "crash"
        )
    line = log.wait_for("email-blast", "project.status_changed", "healthy → down")
    assert "connection refused" in line
    log.wait_for("email-blast", "incident.opened", "email-blast is down")
    for proc in (run, fleet):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
