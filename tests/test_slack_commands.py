"""``/orch`` subcommands, end to end over signed HTTP, and the strict parser on its own.

Replies that need data come back through the response_url (pointed at the fake Slack);
parse errors and help come back in the ack itself, and then nothing else may happen.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from agents.events import INCIDENT_OPENED, Event
from bot.slack.command_parser import Command, CommandError, parse
from storage.base import Incident, ProbeRecord
from tests.slack_harness import CONFIG, Harness, slack_harness


async def _seed(h: Harness) -> Incident:
    h.health.restore("email-blast", "down")
    h.health.restore("chatbot", "healthy")
    now = h.clock.now()
    await h.store.add_probes(
        [ProbeRecord("email-blast", now - timedelta(seconds=7), "fail", 2.0, "connection refused")]
    )
    incident = Incident(
        id="1a2b3c4d5e6f708192a3b4c5d6e7f809",
        fingerprint="email-blast:down",
        project="email-blast",
        condition="down",
        severity="critical",
        summary="<!channel> refused & down",  # outside text: must not become a mention
        opened_at=now - timedelta(minutes=5),
    )
    opened = await h.store.open_incident(
        incident, lambda i: Event(INCIDENT_OPENED, now, "test", {}, i.project, i.id)
    )
    assert opened is not None
    return opened


async def test_status_of_the_fleet() -> None:
    async with slack_harness() as h:
        await _seed(h)
        reply = await h.answer("status")
        assert reply["response_type"] == "ephemeral"
        lines = reply["text"].splitlines()
        assert lines[0] == "*Fleet*: 1 down, 1 healthy, 1 unknown"
        assert "🔴 `email-blast` down, 1 open incident(s)" in lines
        assert "🟢 `chatbot` healthy" in lines
        assert "⚪ `legacy-crm` unknown" in lines


async def test_status_of_one_project() -> None:
    async with slack_harness() as h:
        await _seed(h)
        text = (await h.answer("status email-blast"))["text"]
        assert text.startswith("🔴 *email-blast* is down\n")
        assert "Last probe 7s ago: fail, 2 ms: connection refused" in text
        assert "`email-blast:down` critical, open 5m: &lt;!channel&gt; refused &amp; down" in text
        assert "(id `1a2b3c4d`)" in text


async def test_projects() -> None:
    async with slack_harness() as h:
        text = (await h.answer("projects"))["text"]
        assert text.splitlines() == [
            "*3 projects*",
            "• `email-blast` contract, outreach, http://127.0.0.1:8101",
            "• `chatbot` contract, support, http://127.0.0.1:8102",
            "• `legacy-crm` http, no orchestrator, https://crm.internal:8443/up",
        ]
        assert "hunter2" not in text and "s3cret" not in text


async def test_incidents() -> None:
    async with slack_harness() as h:
        assert (await h.answer("incidents"))["text"] == "No open incidents. 🎉"
        await _seed(h)
        text = (await h.answer("incidents"))["text"]
        assert text.startswith("*1 open incident(s)*\n• `email-blast:down` critical, open 5m")


async def test_analyze_without_an_incident_says_so_and_changes_nothing() -> None:
    async with slack_harness() as h:
        reply = (await h.answer("analyze chatbot"))["text"]
        assert "chatbot has no open incident to analyse" in reply
        assert await h.store.count_rows() == {
            "probes": 0, "metric_samples": 0, "events": 0, "incidents": 0,
        }  # fmt: skip


async def test_analyze_asks_for_an_analysis_of_the_open_incident() -> None:
    async with slack_harness() as h:
        await _seed(h)
        reply = (await h.answer("analyze email-blast"))["text"]
        assert reply.startswith("🔎 Analysing email-blast")
        [asked] = await h.store.list_events(types=["escalation.raised"])
        assert asked.payload["reason"] == "analysis_requested"
        assert asked.incident_id is not None and asked.project == "email-blast"


async def _refused(h: Harness, text: str) -> str:
    status, ack = await h.command(text)
    assert status == 200 and ack["response_type"] == "ephemeral"
    await h.service.background.drain()
    assert h.fake.methods() == []  # no reply via response_url, no Web API call
    return str(ack["text"])


async def test_an_unknown_project_gets_a_suggestion() -> None:
    async with slack_harness() as h:
        assert await _refused(h, "status emial-blast") == (
            "no project emial-blast; did you mean email-blast"
        )
        assert await _refused(h, "restart zzz") == "no project zzz; /orch projects lists them"
        assert await _refused(h, "stauts") == "no command stauts; did you mean status"


async def test_an_action_the_project_does_not_allow_is_refused() -> None:
    async with slack_harness() as h:
        assert await _refused(h, "pause chatbot") == (
            "chatbot does not allow pause (allowed: restart)"
        )


HOSTILE = {
    "command substitution": "status $(reboot)",
    "command chaining": "restart email-blast; rm -rf /",
    "chaining, spaced": "restart email-blast ; rm -rf /",
    "10 KB": "status " + "A" * 10_240,
    "Cyrillic е homoglyph": "status \u0435mail-blast",
    "Cyrillic in the subcommand": "st\u0430tus",
    "RTL override": "status email-blast\u202e",
    "zero-width joiner": "restart email\u200d-blast",
    "NUL": "status email-blast\x00",
    "ESC": "status \x1b[2Jemail-blast",
    "mention": "status <!channel>",
    "backticks": "restart `email-blast`",
    "Arabic-Indic digits": "silence email-blast \u0663h",
    "path": "status ../../etc/passwd",
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
async def test_hostile_text_gets_a_short_error_and_does_nothing(text: str) -> None:
    async with slack_harness() as h:
        reply = await _refused(h, text)
        assert 0 < len(reply) <= 100
        # Nothing of what was typed is echoed back beyond safe characters.
        assert "$" not in reply and "<!" not in reply and "rm -rf" not in reply
        assert "\u0435" not in reply and "\x00" not in reply and "\u202e" not in reply


# -- the parser alone ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Command("help")),
        ("  HELP ", Command("help")),
        ("status", Command("status")),
        ("status chatbot", Command("status", project="chatbot")),
        ("history chatbot", Command("history", project="chatbot", window="24h")),
        ("history chatbot 7d", Command("history", project="chatbot", window="7d")),
        ("clear-cache email-blast", Command("clear-cache", project="email-blast")),
        (
            "silence email-blast 90m db &amp; cache &lt;migration&gt;",
            Command("silence", "email-blast", seconds=5400.0, reason="db & cache <migration>"),
        ),
        ("silence chatbot 1d", Command("silence", "chatbot", seconds=86400.0)),
        ("ack 1A2B3C4D", Command("ack", incident="1a2b3c4d")),
        ("ack email-blast:down", Command("ack", incident="email-blast:down")),
        ("ack chatbot:metric:error_rate", Command("ack", incident="chatbot:metric:error_rate")),
    ],
)
def test_parse(text: str, expected: Command) -> None:
    assert parse(text, CONFIG) == expected


INCIDENT_REF = (
    "An incident is its id (6 to 32 hex digits, see /orch incidents)"
    " or its fingerprint, like email-blast:down."
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("status a b", "Usage: /orch status [project]"),
        ("projects all", "Usage: /orch projects"),
        ("restart", "Usage: /orch restart <project>"),
        ("silence chatbot", "Usage: /orch silence <project> <duration> [reason]"),
        ("silence chatbot soon", "A duration looks like 30m, 2h or 1d."),
        ("silence chatbot 10s", "A silence lasts from 1m to 30d."),
        ("silence chatbot 31d", "A silence lasts from 1m to 30d."),
        ("silence chatbot 1h " + "x" * 201, "The reason is too long (at most 200 characters)."),
        ("history chatbot 30d", "history covers 24h or 7d: /orch history <project> [24h|7d]"),
        ("ack 12", INCIDENT_REF),
        ("ack zzzzzzzz", INCIDENT_REF),
        ("ack email-blast:", INCIDENT_REF),
        ("ack Email-Blast:down", INCIDENT_REF),
        ("status Email-Blast", "no project Email-Blast; did you mean email-blast"),
        ("x" * 501, "That is too long for /orch (at most 500 characters)."),
    ],
)
def test_parse_refuses(text: str, message: str) -> None:
    with pytest.raises(CommandError) as caught:
        parse(text, CONFIG)
    assert str(caught.value) == message


def test_action_words_map_to_config_actions() -> None:
    assert parse("clear-cache email-blast", CONFIG).action == "clear_cache"
    assert parse("status", CONFIG).action is None
