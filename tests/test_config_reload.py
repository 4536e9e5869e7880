"""Reloading projects.yml while orch runs: a file change, SIGHUP, an invalid file kept out,
a no-op, and the history of a removed project kept.  The real Runtime polls local HTTP
services that count the requests they get, so "takes effect" means probes really move."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from agents.clock import FakeClock
from agents.events import CONFIG_RELOADED, Event
from bot.config import Config
from bot.config_loader import load_config
from bot.config_reload import ConfigChange, ConfigReloader
from bot.runtime import Runtime, RuntimeOptions
from bot.settings import Settings
from bot.signals import reload_on_sighup
from tests.support import eventually


class Services:
    """One local HTTP server; every path answers 200 and is counted."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        app = web.Application()
        app.router.add_get("/{name}", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        self.base = ""

    async def _answer(self, request: web.Request) -> web.Response:
        self.hits[request.match_info["name"]] += 1
        return web.Response(text="ok")

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        await self._runner.cleanup()


def projects_yml(base: str, projects: dict[str, str], *, group: str = "ops") -> str:
    """A file with ``projects`` (name -> path on ``base``), all in ``group``."""
    lines = [
        "defaults: {interval: 200ms, timeout: 150ms}",
        "orchestrators:",
        f"  {group}: {{channel: '#ops', approvers: [U0APPROVER],",
        f"    projects: [{', '.join(projects)}]}}",
        "projects:",
    ]
    for name, path in projects.items():
        lines += [f"  - name: {name}", f"    url: {base}/{path}", "    kind: http"]
    return "\n".join(lines) + "\n"


@pytest.fixture
async def services() -> AsyncIterator[Services]:
    server = Services()
    await server.start()
    yield server
    await server.stop()


def start_runtime(path: Path, tmp_path: Path, **options: object) -> Runtime:
    settings = Settings(config_path=path, sqlite_path=tmp_path / "orch.db", port=0)
    return Runtime(
        settings,
        load_config(path, {}),
        options=RuntimeOptions(serve_web=False, lease_ttl_s=3, **options),  # type: ignore[arg-type]
    )


def reloads(runtime: Runtime) -> list[Event]:
    seen: list[Event] = []

    async def record(event: Event) -> None:
        seen.append(event)

    runtime.bus.subscribe("test-reloads", record, types=[CONFIG_RELOADED])
    return seen


async def test_a_changed_file_adds_removes_and_changes_projects_at_the_next_poll(
    services: Services, tmp_path: Path
) -> None:
    path = tmp_path / "projects.yml"
    path.write_text(projects_yml(services.base, {"alpha": "alpha", "beta": "beta"}))
    runtime = start_runtime(path, tmp_path)
    seen = reloads(runtime)
    await runtime.start()
    try:
        await eventually(lambda: services.hits["alpha"] and services.hits["beta"], "both polled")
        await runtime.recorder.flush()
        assert await runtime.store.recent_probes("beta", limit=1)
        assert await runtime.live.reloader.poll_once() is None  # nothing changed yet

        # beta removed, gamma added, alpha moved to another URL.
        path.write_text(projects_yml(services.base, {"alpha": "alpha-v2", "gamma": "gamma"}))
        outcome = await runtime.live.reloader.poll_once()

        assert outcome is not None and outcome.result == "applied"
        assert outcome.change == ConfigChange(("gamma",), ("beta",), ("alpha",), ("ops",))
        assert runtime.config.project_names() == ["alpha", "gamma"]
        assert runtime.monitor is not None and runtime.monitor.projects == ["alpha", "gamma"]
        beta_before = services.hits["beta"]
        await eventually(lambda: services.hits["gamma"] and services.hits["alpha-v2"], "new URLs")
        assert services.hits["beta"] <= beta_before + 1  # at most a probe already in flight
        await runtime.relay.flush()
        await runtime.bus.drain()  # type: ignore[attr-defined]
        [event] = seen
        assert event.payload["ok"] is True and event.payload["trigger"] == "file change"
        assert (event.payload["added"], event.payload["removed"]) == (["gamma"], ["beta"])
        assert event.payload["changed"] == ["alpha"]
        # The removed project's history stays readable.
        assert await runtime.store.recent_probes("beta", limit=1)
        assert await runtime.live.reloader.poll_once() is None
    finally:
        await runtime.stop()


async def test_an_invalid_file_is_refused_with_its_errors_and_the_running_config_kept(
    services: Services, tmp_path: Path
) -> None:
    path = tmp_path / "projects.yml"
    path.write_text(projects_yml(services.base, {"alpha": "alpha"}))
    runtime = start_runtime(path, tmp_path)
    seen = reloads(runtime)
    await runtime.start()
    try:
        running = runtime.config
        path.write_text(
            projects_yml(services.base, {"alpha": "alpha"}).replace(
                "interval: 200ms", "interval: soon"
            )
        )
        outcome = await runtime.live.reloader.poll_once()

        assert outcome is not None and outcome.result == "refused"
        assert outcome.errors == (
            f"{path}:1:12: defaults.interval: expected a duration like 10s, 5m or 1h, got 'soon'",
        )
        assert runtime.config is running
        assert runtime.monitor is not None and runtime.monitor.projects == ["alpha"]
        await runtime.relay.flush()
        await runtime.bus.drain()  # type: ignore[attr-defined]
        [event] = seen
        assert event.payload["ok"] is False
        assert event.payload["errors"] == list(outcome.errors)
        assert event.payload["groups"] == ["ops"]
        # The same bad bytes are reported once, not at every poll.
        assert await runtime.live.reloader.poll_once() is None
    finally:
        await runtime.stop()


async def test_sighup_reloads_through_the_installed_handler(
    services: Services, tmp_path: Path
) -> None:
    path = tmp_path / "projects.yml"
    path.write_text(projects_yml(services.base, {"alpha": "alpha"}))
    runtime = start_runtime(path, tmp_path)
    await runtime.start()
    loop = asyncio.get_running_loop()
    try:
        reload_on_sighup(lambda: runtime.live.reload("SIGHUP"))
        path.write_text(projects_yml(services.base, {"alpha": "alpha", "gamma": "gamma"}))
        os.kill(os.getpid(), signal.SIGHUP)  # handled by the loop, not the default (exit)
        await eventually(lambda: runtime.config.project_names() == ["alpha", "gamma"], "reload")
        await eventually(lambda: services.hits["gamma"] > 0, "gamma polled")
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        await runtime.stop()


async def test_the_same_content_is_a_no_op(services: Services, tmp_path: Path) -> None:
    path = tmp_path / "projects.yml"
    text = projects_yml(services.base, {"alpha": "alpha"})
    path.write_text(text)
    runtime = start_runtime(path, tmp_path)
    seen = reloads(runtime)
    await runtime.start()
    try:
        running = runtime.config
        assert (await runtime.live.reload("test")).result == "unchanged"
        path.write_text("# a comment changes the bytes, not the configuration\n" + text)
        outcome = await runtime.live.reloader.poll_once()
        assert outcome is not None and outcome.result == "unchanged"
        assert runtime.config is running
        await runtime.relay.flush()
        assert seen == []
    finally:
        await runtime.stop()


async def test_the_file_is_polled_on_the_injected_clock(tmp_path: Path) -> None:
    path = tmp_path / "projects.yml"
    path.write_text(projects_yml("http://127.0.0.1:9", {"alpha": "alpha"}))
    clock = FakeClock()
    current = load_config(path, {})
    applied: list[tuple[Config, ConfigChange]] = []
    events: list[Event] = []

    async def apply(new: Config, change: ConfigChange) -> None:
        nonlocal current
        current = new
        applied.append((new, change))

    async def emit(batch: object) -> None:
        events.extend(batch)  # type: ignore[arg-type]

    reloader = ConfigReloader(
        path, {}, lambda: current, apply, emit, clock=clock, source="r1", poll_s=5
    )
    await reloader.start()
    await clock.settle()  # the watcher is asleep until t = 5
    try:
        path.write_text(projects_yml("http://127.0.0.1:9", {"alpha": "alpha", "beta": "b"}))
        await clock.advance(4.9)
        assert applied == []
        await clock.advance(0.1)
        assert [change.added for _, change in applied] == [("beta",)]
        assert [e.payload["added"] for e in events] == [["beta"]]
    finally:
        await reloader.stop()


async def test_a_missing_file_is_refused_once(tmp_path: Path) -> None:
    path = tmp_path / "projects.yml"
    path.write_text(projects_yml("http://127.0.0.1:9", {"alpha": "alpha"}))
    events: list[Event] = []

    async def emit(batch: object) -> None:
        events.extend(batch)  # type: ignore[arg-type]

    async def apply(new: Config, change: ConfigChange) -> None:
        raise AssertionError("nothing to apply")

    config = load_config(path, {})
    reloader = ConfigReloader(path, {}, lambda: config, apply, emit, clock=FakeClock(), source="r")
    await reloader.start(watch=False)
    path.unlink()
    outcome = await reloader.poll_once()
    assert outcome is not None and outcome.errors == (f"{path}: file not found",)
    assert await reloader.poll_once() is None
    assert [e.payload["ok"] for e in events] == [False]
