"""What people see in Slack while orch acts: the real Runtime (its web app receiving
signed Slack requests, its outbox posting to the local fake Slack Web API) against the
simulated fleet over real HTTP, on SQLite, with timings shortened by configuration."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.runtime import Runtime, RuntimeOptions
from bot.settings import Settings
from demo.fleet import Fleet
from tests.acting_fleet import ENV, FAST, SECRETS, acting_config
from tests.fake_slack import FakeSlack, block_action, interactive_body, signed_headers
from tests.support import eventually

pytestmark = pytest.mark.timeout(60)

NAMES = ("email-blast", "social-media")
SIGNING = "signing-secret"
BOSS = "U0BOSS"


class World:
    def __init__(self, slack: FakeSlack, fleet: Fleet, runtime: Runtime) -> None:
        self.slack, self.fleet, self.runtime = slack, fleet, runtime

    def posts(self) -> list[dict[str, Any]]:
        return [c.params for c in self.slack.calls_to("chat.postMessage")]

    def thread_text(self, card_ts: str) -> str:
        return json.dumps([p for p in self.posts() if p.get("thread_ts") == card_ts])

    async def click(self, action_id: str, value: str, user: str) -> None:
        assert self.runtime.web is not None
        payload = block_action(action_id, value, user=user,
                               response_url=self.slack.response_url("click"))  # fmt: skip
        body = interactive_body(payload)
        url = f"{self.runtime.web.url}/slack/events"
        headers = signed_headers(SIGNING, body)
        async with (
            aiohttp.ClientSession() as http,
            http.post(url, data=body, headers=headers) as response,
        ):
            assert response.status == 200  # acknowledged at once; the work comes after


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    slack = FakeSlack()
    await slack.start()
    fleet = Fleet.ephemeral(NAMES, {n: SECRETS[n] for n in NAMES})
    await fleet.start()
    settings = Settings(
        sqlite_path=tmp_path / "orch.db", port=0, env=ENV, slack_bot_token="xoxb-test",
        slack_signing_secret=SIGNING, slack_api_url=slack.api_url,
    )  # fmt: skip
    group = {"outreach": {"channel": "#ops-outreach", "approvers": [BOSS], "projects": list(NAMES)}}
    config = acting_config(
        fleet,
        NAMES,
        defaults={**FAST, "remediation": {**FAST["remediation"], "verify_timeout": "3s"}},
        orchestrators=group,
    )
    runtime = Runtime(settings, config, options=RuntimeOptions(lease_ttl_s=3))
    await runtime.start()
    try:
        yield World(slack, fleet, runtime)
    finally:
        await runtime.stop()
        await fleet.stop()
        await slack.stop()


async def test_a_crash_fixed_by_itself_tells_its_story_in_one_card_thread(world: World) -> None:
    await world.fleet.inject("email-blast", "crash")
    updates = await world.slack.wait_for("chat.update", 1, timeout=30)
    assert "resolved" in json.dumps(updates[-1].params).lower()

    cards = [p for p in world.posts() if "thread_ts" not in p]
    assert len(cards) == 1 and "email-blast is down" in json.dumps(cards[0])
    [incident] = await world.runtime.store.list_incidents(project="email-blast")
    stored = await world.runtime.store.slack_card(incident.id)
    assert stored is not None and stored.thread_ts is not None
    card_ts = stored.thread_ts

    async def told() -> bool:
        thread = world.thread_text(card_ts).lower()
        return all(word in thread for word in ("restart requested", "verified", "resolved"))

    await eventually(told, "the thread tells detection, restart and recovery", timeout=15)
    assert world.fleet.service("email-blast").restarts == 1


async def test_a_full_disk_escalates_and_one_approval_click_runs_one_restart(
    world: World,
) -> None:
    await world.fleet.inject("social-media", "disk_full")

    def approval_card() -> dict[str, Any] | None:
        return next((p for p in world.posts() if "approval_approve" in json.dumps(p)), None)

    await eventually(lambda: approval_card() is not None, "the approval card", timeout=40)
    assert world.fleet.service("social-media").restarts == 2
    card = approval_card()
    assert card is not None and "thread_ts" in card  # in the incident's thread
    thread = world.thread_text(card["thread_ts"])
    assert "Needs a human: automatic fixes did not help" in thread
    [approval] = await world.runtime.store.pending_approvals("social-media")
    values = [e["value"] for b in json.loads(json.dumps(card["blocks"]))
              if b["type"] == "actions" for e in b["elements"]]  # fmt: skip
    assert values == [approval.id, approval.id]  # only the opaque id

    # Two clicks of the approver (a double click): one restart.
    await world.click("approval_approve", approval.id, BOSS)
    await world.click("approval_approve", approval.id, BOSS)

    async def finished() -> bool:
        action = await world.runtime.store.get_action(approval.action_id)
        return action is not None and action.state in ("verified", "failed")

    await eventually(finished, "the approved restart finished", timeout=20)
    assert world.fleet.service("social-media").restarts == 3
    answers = json.dumps([c.params for c in world.slack.calls_to("response_url")])
    assert "already approved" in answers.lower()
    audit = await world.runtime.store.list_audit(project="social-media")
    clicks = [r for r in audit if r.entry.approval_id == approval.id and r.entry.actor == BOSS]
    assert len(clicks) == 2
