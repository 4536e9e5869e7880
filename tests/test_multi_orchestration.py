"""One orch process per orchestrator group on one database, and a root orch that watches
(and restarts) a child orch through the project contract, like any other project."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import aiohttp
import pytest

from agents.actions import request_action
from bot.cli import main
from bot.config import Config
from bot.config_loader import load_config
from bot.orchestrator_scope import UnknownGroup
from bot.runtime import Runtime, RuntimeOptions
from bot.settings import Settings
from orch_kit.signing import signed_headers
from tests.support import eventually
from tests.test_config_reload import Services, services  # noqa: F401  (a fixture)

SECRET = "child-orch-control-secret"


def two_groups(base: str) -> Config:
    return Config.model_validate(
        {
            "defaults": {"interval": "200ms", "timeout": "150ms"},
            "orchestrators": {
                "ops": {"channel": "#ops", "projects": ["a1", "a2"]},
                "support": {"channel": "#support", "projects": ["b1", "b2"]},
            },
            "projects": [
                {"name": n, "url": f"{base}/{n}", "kind": "http"} for n in ("a1", "a2", "b1", "b2")
            ],
        }
    )


async def test_each_group_process_polls_all_of_its_group_and_nothing_else(
    services: Services,  # noqa: F811
    tmp_path: Path,
) -> None:
    config = two_groups(services.base)
    settings = Settings(sqlite_path=tmp_path / "orch.db", port=0)
    ops, support = (
        Runtime(settings, config,
                options=RuntimeOptions(serve_web=False, lease_ttl_s=3, orchestrator=group))
        for group in ("ops", "support")
    )  # fmt: skip
    await ops.start()
    await support.start()
    try:
        # Each counts only its own group's processes: one each, so each holds its whole
        # group (a fleet-wide count of 2 would have given each half of its group).
        assert ops.monitor is not None and support.monitor is not None
        await eventually(lambda: ops.monitor.projects == ["a1", "a2"], "ops holds its group")  # type: ignore[union-attr]
        await eventually(lambda: support.monitor.projects == ["b1", "b2"], "support holds its")  # type: ignore[union-attr]
        assert ops.replica_id.startswith("ops/") and support.replica_id.startswith("support/")
        await eventually(lambda: all(services.hits[n] for n in ("a1", "a2", "b1", "b2")), "all")
        assert sorted(await ops.store.lease_owners()) == [
            "project:a1", "project:a2", "project:b1", "project:b2"
        ]  # fmt: skip
    finally:
        await ops.stop()
        await support.stop()


def test_an_unknown_group_is_a_clear_error_listing_the_groups(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "projects.yml"
    path.write_text("orchestrators:\n  ops: {channel: '#ops'}\n  support: {channel: '#support'}\n")
    with pytest.raises(UnknownGroup, match="groups: ops, support"):
        Runtime(Settings(sqlite_path=tmp_path / "orch.db"), load_config(path, {}),
                options=RuntimeOptions(orchestrator="nope"))  # fmt: skip
    code = main(["run", "--config", str(path), "--orchestrator", "nope"])
    assert code == 2
    err = capsys.readouterr().err
    assert "no orchestrator group 'nope' in the config (groups: ops, support)" in err
    assert "Traceback" not in err


async def test_a_root_orch_watches_and_restarts_a_child_orch(tmp_path: Path) -> None:
    child = Runtime(
        Settings(sqlite_path=tmp_path / "child.db", port=0, env={"ORCH_CONTROL_SECRET": SECRET}),
        Config(),
        options=RuntimeOptions(lease_ttl_s=3),
    )
    await child.start()
    assert child.web is not None
    root_config = Config.model_validate(
        {
            "defaults": {"interval": "200ms", "timeout": "150ms", "failure_threshold": 2},
            "projects": [
                {"name": "child-orch", "url": child.web.url, "kind": "contract",
                 "control_secret_env": "CHILD_ORCH_SECRET", "allowed_actions": ["restart"]}
            ],
        }
    )  # fmt: skip
    root = Runtime(
        Settings(sqlite_path=tmp_path / "root.db", env={"CHILD_ORCH_SECRET": SECRET}),
        root_config,
        options=RuntimeOptions(serve_web=False, lease_ttl_s=3),
    )
    await root.start()
    child_running = True
    try:
        await eventually(lambda: root.health.statuses().get("child-orch") == "healthy", "healthy")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{child.web.url}/status") as response:
                status = await response.json()
            assert status["state"] == "running" and status["orchestrator"] is None
            assert status["queue_depth"] == 0 and status["replica"] == child.replica_id
            logging.getLogger("bot.test").warning("connecting with password=hunter2hunter2")
            async with http.get(f"{child.web.url}/logs?level=warn") as response:
                lines = [e["message"] for e in (await response.json())["entries"]]
            assert any("connecting with password=" in line for line in lines)
            assert not any("hunter2" in line for line in lines)
            body = json.dumps({"action": "restart", "idempotency_key": "k1"}).encode()
            async with http.post(f"{child.web.url}/control", data=body) as response:
                assert response.status == 401  # unsigned: refused, nothing happens
            headers = signed_headers(b"wrong-secret", body, time.time())
            async with http.post(
                f"{child.web.url}/control", data=body, headers=headers
            ) as response:
                assert response.status == 401
        assert not child.live.exit_requested.is_set()

        await request_action(root.store, "child-orch", "restart", requested_by="U0OPS",
                             reason="test", origin="user", needs_approval=False)  # fmt: skip
        root.relay.wake()
        await eventually(child.live.exit_requested.is_set, "the child was asked to restart")
        assert child.live.exit_code == 75
        assert child.live.contract is not None and child.live.contract.contract.performed == 1

        await child.stop()  # what its supervisor sees: the process exits (then restarts it)
        child_running = False
        await eventually(lambda: root.health.statuses().get("child-orch") == "down", "down")
    finally:
        await root.stop()
        if child_running:
            await child.stop()


async def test_pause_and_resume_over_control_stop_and_restart_polling(
    services: Services,  # noqa: F811
    tmp_path: Path,
) -> None:
    config = two_groups(services.base)
    runtime = Runtime(
        Settings(sqlite_path=tmp_path / "orch.db", port=0, env={"ORCH_CONTROL_SECRET": SECRET}),
        config,
        options=RuntimeOptions(lease_ttl_s=3),
    )
    await runtime.start()
    assert runtime.web is not None and runtime.monitor is not None
    url = f"{runtime.web.url}/control"
    try:
        async with aiohttp.ClientSession() as http:

            async def control(action: str, key: str) -> int:
                body = json.dumps({"action": action, "idempotency_key": key}).encode()
                headers = signed_headers(SECRET.encode(), body, time.time())
                async with http.post(url, data=body, headers=headers) as response:
                    return response.status

            async def state() -> str:
                async with http.get(f"{runtime.web.url}/status") as response:  # type: ignore[union-attr]
                    return str((await response.json())["state"])

            await eventually(lambda: len(runtime.monitor.projects) == 4, "polling")  # type: ignore[union-attr]
            assert await control("pause", "p1") == 202
            assert runtime.monitor.projects == [] and await state() == "paused"
            assert await control("resume", "r1") == 202
            assert runtime.monitor.projects == ["a1", "a2", "b1", "b2"]
            assert await state() == "running"
            assert runtime.live.contract is not None
            assert runtime.live.contract.contract.performed == 2
    finally:
        await runtime.stop()
