"""``/orch reload`` over signed Slack requests to the whole process: approvers only, a bad
file refused (the asker is told, and so is the group's channel), a good one applied."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from bot.config_loader import load_config
from bot.runtime import Runtime, RuntimeOptions
from bot.settings import Settings
from tests.fake_slack import FakeSlack, form_body, signed_headers, slash_command
from tests.test_config_reload import projects_yml

SIGNING = "reload-signing-secret"


async def test_orch_reload_is_for_approvers_and_refuses_a_bad_file_in_the_channel(
    tmp_path: Path,
) -> None:
    slack = FakeSlack()
    await slack.start()
    path = tmp_path / "projects.yml"
    base = "http://127.0.0.1:9"  # nothing listens: the probes fail, which is fine here
    path.write_text(projects_yml(base, {"alpha": "alpha"}))
    settings = Settings(
        config_path=path, sqlite_path=tmp_path / "orch.db", port=0,
        slack_bot_token="xoxb-test", slack_signing_secret=SIGNING, slack_api_url=slack.api_url,
    )  # fmt: skip
    runtime = Runtime(settings, load_config(path, {}), options=RuntimeOptions(lease_ttl_s=3))
    await runtime.start()
    assert runtime.web is not None
    http = aiohttp.ClientSession()

    async def reload(user: str) -> dict[str, Any]:
        before = len(slack.calls_to("response_url"))
        body = form_body(slash_command("reload", slack.response_url(user), user_id=user))
        async with http.post(
            f"{runtime.web.url}/slack/events", data=body, headers=signed_headers(SIGNING, body)
        ) as response:
            assert response.status == 200
        calls = await slack.wait_for("response_url", before + 1, timeout=10)
        return calls[before].params

    try:
        path.write_text(projects_yml(base, {"alpha": "alpha", "gamma": "gamma"}))
        refused = await reload("U0SOMEONE")
        assert "Only an approver" in json.dumps(refused)
        assert runtime.config.project_names() == ["alpha"]

        path.write_text("projects:\n  - name: Bad Name\n    url: ftp://x\n")
        answer = json.dumps(await reload("U0APPROVER"))
        assert "projects.yml was refused" in answer
        assert f"{path}:2:5: projects[Bad Name].name: a name is lowercase" in answer
        assert f"{path}:3:5: projects[Bad Name].url: expected an http(s) URL" in answer
        assert runtime.config.project_names() == ["alpha"]
        # The group's channel hears it too (through the notifier and the Slack outbox).
        [post] = await slack.wait_for("chat.postMessage", 1, timeout=10)
        assert post.params["channel"] == "#ops"
        assert "refused on /orch reload" in json.dumps(post.params)

        path.write_text(projects_yml(base, {"alpha": "alpha", "gamma": "gamma"}))
        applied = json.dumps(await reload("U0APPROVER"))
        assert "Configuration reloaded: added gamma" in applied
        assert runtime.config.project_names() == ["alpha", "gamma"]
        assert "no change to apply" in json.dumps(await reload("U0APPROVER"))
    finally:
        await http.close()
        await runtime.stop()
        await slack.stop()
