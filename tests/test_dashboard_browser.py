"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright
for Python; ``.ci/run`` installs it when missing): the real Runtime on SQLite against the
simulated fleet over real HTTP, the API in local mode.  A crash turns a tile red without a
reload; Approve in the page runs the waiting restart; tiles show the hourly uptime sparkline,
latency and an anomaly's chip.  The screenshot is kept as
``artifacts/dashboard.png``."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agents.actions import request_action
from bot.runtime import Runtime, RuntimeOptions
from bot.settings import Settings
from bot.web import WebServer
from demo.fleet import Fleet
from tests.acting_fleet import ENV, FAST, SECRETS, acting_config
from tests.support import eventually

pytestmark = pytest.mark.timeout(60)

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
NAMES = ("email-blast", "chatbot")


def _browser_missing() -> str | None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "playwright (the Python package) is not installed: pip install -e '.[dev]'"
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        return "no /usr/bin/chromium: apt-get install -y chromium (.ci/run does)"
    return None


@pytest.fixture(autouse=True)
def _need_a_browser() -> None:
    missing = _browser_missing()
    if missing is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI needs the browser test: {missing}")
    pytest.skip(missing)


@dataclass
class World:
    fleet: Fleet
    runtime: Runtime
    web: WebServer


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    fleet = Fleet.ephemeral(NAMES, {n: SECRETS[n] for n in NAMES})
    await fleet.start()
    settings = Settings(sqlite_path=tmp_path / "orch.db", port=0, env=ENV, api_mode="local")
    group = {"outreach": {"channel": "#ops", "projects": ["email-blast"]},
             "support": {"channel": "#support", "projects": ["chatbot"]}}  # fmt: skip
    # Auto-fix off: the crashed service stays down until someone acts.
    remediation = {**FAST["remediation"], "auto_fix": False}
    # Metrics every probe: an anomaly needs three samples over its threshold.
    defaults = {**FAST, "remediation": remediation, "scrape_interval": "1s"}
    config = acting_config(fleet, NAMES, orchestrators=group, defaults=defaults)
    # orch's own web app, as `orch run` / `make demo` serve it (dashboard + API, local mode).
    runtime = Runtime(settings, config, options=RuntimeOptions(lease_ttl_s=3))
    await runtime.start()
    assert runtime.web is not None
    try:
        yield World(fleet, runtime, runtime.web)
    finally:
        await runtime.stop()
        await fleet.stop()


async def test_a_crash_turns_its_tile_red_live_and_approve_runs_the_restart(
    world: World,
) -> None:
    from playwright.async_api import async_playwright, expect

    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                           args=["--no-sandbox"])  # fmt: skip
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(world.web.url + "/dashboard")
            await expect(page.locator("#live")).to_have_attribute("data-live", "on")
            tile = page.locator('.tile[data-project="email-blast"]')
            await expect(tile).to_have_attribute("data-status", "healthy", timeout=15_000)
            # The 24 h sparkline: this hour's bar (the others have no probe yet), green.
            await expect(tile.locator("svg.spark rect.ok")).to_have_count(1)
            await expect(tile.locator(".latency")).to_contain_text(" ms")
            # Agent activity comes from the store (GET /agents), the monitor's included.
            await expect(page.locator('#agents li[data-source="health-monitor"]')
                         ).to_contain_text("/min")  # fmt: skip
            navigations: list[str] = []
            page.on("framenavigated", lambda frame: navigations.append(frame.url))

            await world.fleet.inject("email-blast", "crash")
            await expect(tile).to_have_attribute("data-status", "down", timeout=20_000)
            # Failing first: its group now leads the grid.
            first = page.locator("#fleet .group").first
            await expect(first).to_have_attribute("data-group", "outreach")
            await expect(page.locator("#incidents li[data-incident]")).to_have_count(1)

            asked = await request_action(
                world.runtime.store, "chatbot", "restart", requested_by="U0ASKER",
                reason="<b>a restart</b> asked in the test", origin="user",
                needs_approval=True,
            )  # fmt: skip
            world.runtime.relay.wake()
            assert asked.approval is not None
            row = page.locator(f'#approvals li[data-approval="{asked.approval.id}"]')
            await expect(row).to_contain_text("<b>a restart</b>")  # as text, not markup
            await row.get_by_role("button", name="Approve").click()
            await expect(row.locator(".result")).to_have_text("granted")

            async def restarted() -> bool:
                return world.fleet.service("chatbot").restarts == 1

            await eventually(restarted, "the approved restart ran", timeout=20)
            await expect(page.locator(f'#approvals li[data-approval="{asked.approval.id}"]')
                         ).to_have_count(0)  # fmt: skip
            # An error spike puts error_rate over its threshold: a chip on chatbot's tile.
            await world.fleet.inject("chatbot", "error_spike")
            chip = page.locator('.tile[data-project="chatbot"] .chip')
            await expect(chip).to_have_text("error_rate", timeout=20_000)
            await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

            phone = await browser.new_page(viewport={"width": 390, "height": 844})
            await phone.goto(world.web.url + "/dashboard")
            await expect(phone.locator('.tile[data-project="email-blast"]')
                         ).to_have_attribute("data-status", "down")  # fmt: skip
            width = await phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, "the page scrolls sideways on a phone"
            await phone.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)
            assert navigations == [], "the page reloaded"
            assert errors == []
        finally:
            await browser.close()
