"""Templates: every card renders to valid, within-limit Block Kit, and hostile values stay
inert text (DESIGN §8): no mention, link or JSON structure can come from a value."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2 import UndefinedError

from agents.analysis_context import AnalysisContext
from agents.claude_advisor import PromptView
from agents.events import EVENT_TYPES, Event
from bot.blockkit import BlockKitError, check_message, check_view, slack_len, validate_message
from bot.cards import (
    AffectedProject,
    ApprovalView,
    ErrorView,
    HelpView,
    HomeView,
    IncidentCardView,
    IncidentLine,
    ProjectRow,
    StatusReplyView,
    StormView,
    TimelineEntry,
)
from bot.render import (
    JSON_ENV,
    TemplateOutputError,
    UnsafeValueError,
    render_blocks,
    render_text,
    slack_escape,
    template_names,
    truncate_text,
)
from bot.slack.views import (
    AckView,
    ActionRequestView,
    HistoryEntry,
    HistoryView,
    IncidentListLine,
    IncidentListView,
    ProjectLine,
    ProjectStatusView,
    ProjectsView,
    SilenceView,
)
from storage.base import Incident, ProbeRecord
from storage.operations_store import ActionRequest, IncidentAck, Silence
from tests.digest_samples import samples as digest_samples

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ONCALL, REQUESTER, DECIDER = "S0ONCALL", "U0REQUEST", "U0DECIDER"

HOSTILE = [
    "<!channel>",
    "<!here>",
    "<@U123>",
    "<!subteam^S999>",
    "<https://evil.example|click me>",
    "&amp;",
    '"quotes"',
    "back\\slash\\",
    "line\nbreak\r\nand\ttab",
    "{{ 7 * 7 }}",
    "{% if true %}x{% endif %}",
    "</script><script>alert(1)</script>",
    "pаypal.com ＜!channel＞",  # Cyrillic а, fullwidth brackets
    "\u202eevil\u2066",
    "nul\x00byte\x1b[31m",
    '"}]}',
    '"}, {"type": "section", "text": {"type": "mrkdwn", "text": "injected"}}, {"a": "',
    "😀" * 40,
]
COMBINED = " ".join(HOSTILE)
HUGE = [(COMBINED * 200)[:10_240], "<" * 10_240, "&" * 10_240, "😀" * 10_240]
# Fields the templates mention or put in buttons: they must be ids and are tested apart.
ID_FIELDS = {"approval_id", "oncall_id", "mention_id"}
# The only markup allowed in output: what the templates themselves make.
ALLOWED_TOKEN = re.compile(
    r"<!date\^\d+\^\{date_short_pretty\} \{time_secs\}\|[0-9: -]+ UTC>"
    rf"|<!subteam\^{ONCALL}>|<@{REQUESTER}>|<@{DECIDER}>"
)


def incident(**changes: Any) -> Incident:
    base = Incident("inc-1", "email-blast:down", "email-blast", "down", "critical", "HTTP 503", NOW)
    return dataclasses.replace(base, **changes)


def rows(n: int) -> list[ProjectRow]:
    statuses = ["healthy", "healthy", "degraded", "down", "unknown"]
    return [
        ProjectRow(f"project-{i:03d}", statuses[i % 5], 99.5 - i % 7, i % 3, f"group-{i % 9}")
        for i in range(n)
    ]


def approval(state: str = "pending", **changes: Any) -> ApprovalView:
    view = ApprovalView(
        "apr_01HZX", "email-blast", "restart", "memory above 95 %", REQUESTER, state,
        NOW + timedelta(minutes=30), decided_by=DECIDER, incident_summary="email-blast is down",
    )  # fmt: skip
    return dataclasses.replace(view, **changes)


def event(kind: str, payload: dict[str, Any]) -> Event:
    return Event(kind, NOW, "test", payload, project="email-blast", incident_id="inc-1")


def timeline_entries() -> list[TimelineEntry]:
    payloads: dict[str, dict[str, Any]] = {
        "project.status_changed": {"from": "healthy", "to": "down", "reason": "HTTP 503",
            "probe": {"level": "fail", "http_status": 503, "latency_ms": 12.5}},
        "metric.anomaly": {"metric": "error_rate", "value": 0.3, "threshold": 0.2,
                           "level": "crit"},
        "incident.resolved": {"fingerprint": "email-blast:down", "duration_s": 252},
        "action.requested": {"action_id": "act-1", "action": "restart",
                             "requested_by": "auto-fixer", "reason": "down",
                             "needs_approval": True},
        "action.failed": {"action_id": "act-1", "error": "timeout"},
        "approval.granted": {"approval_id": "apr-1", "by": DECIDER},
        "remediation.suspended": {"reason": "budget_exhausted"},
        "escalation.raised": {"reason": "restarts exhausted", "context": {"attempts": 2}},
        "analysis.completed": {"diagnosis": "OOM", "evidence": ["rss 2 GB"] * 9,
            "recommended_action": "restart", "confidence": 0.8, "risk": "low",
            "engine": "claude"},
    }  # fmt: skip
    return [
        TimelineEntry.from_event(event(kind, payloads.get(kind, {"x": 1})), oncall_id=ONCALL)
        for kind in sorted(EVENT_TYPES)
    ]


def samples() -> dict[str, list[dict[str, Any]]]:
    """Ordinary contexts for every template, several states each."""
    resolved = incident(state="resolved", resolved_at=NOW + timedelta(seconds=252))
    cards = [
        IncidentCardView.from_incident(incident(), project_status="down", oncall_id=ONCALL),
        IncidentCardView.from_incident(incident(severity="warning"), timeline_len=1),
        IncidentCardView.from_incident(resolved, project_status="healthy", timeline_len=7),
        # Shared dependencies: 40 outages folded into this one (30 named, then a count),
        # and a card of an outage that was folded after it was posted.
        dataclasses.replace(
            IncidentCardView.from_incident(incident(), project_status="down"),
            also_affected=tuple(AffectedProject(f"app-{i:02}", i % 2 == 0) for i in range(40)),
        ),
        dataclasses.replace(IncidentCardView.from_incident(incident()), folded_into="db"),
    ]
    lines = [IncidentLine.from_incident(incident(project=f"p{i}")) for i in range(3)]
    approvals = [approval(s) for s in ("pending", "granted", "denied", "expired")]
    status = [StatusReplyView.build(rows(n), NOW) for n in (0, 1, 12)]
    return {
        "incident_card.json.j2": [{"card": c} for c in cards],
        "incident_card.txt.j2": [{"card": c} for c in cards],
        "timeline_line.json.j2": [{"entry": e} for e in timeline_entries()],
        "timeline_line.txt.j2": [{"entry": e} for e in timeline_entries()],
        "storm.json.j2": [{"storm": StormView.from_incidents([incident()] * 6)}],
        "status_reply.json.j2": [{"status": s} for s in status],
        "status_reply.txt.j2": [{"status": s} for s in status],
        "help_reply.json.j2": [{"help": HelpView()}],
        "error_reply.json.j2": [{"error": ErrorView("No such project", "Try /orch status")}],
        "approval_card.json.j2": [{"approval": a} for a in approvals],
        "app_home.json.j2": [
            {"home": HomeView.build(rows(0), [], [], NOW)},
            {"home": HomeView.build(rows(20), lines, approvals[:1], NOW)},
        ],
        **slack_reply_samples(),
        **digest_samples(),
    }


def slack_reply_samples() -> dict[str, list[dict[str, Any]]]:
    """The /orch replies of bot.slack.views (silence, ack, action, history...).  Empty
    lists are rendered in tests/test_slack_operations.py: with no string in them, they
    cannot show a hostile value."""
    silence = Silence("s1", "email-blast", NOW, NOW + timedelta(hours=2), "deploy", REQUESTER)
    request = ActionRequest("a1b2c3d4e5", "email-blast", "clear_cache", REQUESTER, "", "requested",
                            True, NOW)  # fmt: skip
    ack = IncidentAck(DECIDER, NOW)
    refs = [
        IncidentListLine.of(incident(id=f"{i:032x}"), ack if i % 2 else None) for i in range(25)
    ]
    probe = ProbeRecord("email-blast", NOW, "fail", 2.0, "connection refused", 503)
    entries = tuple(
        HistoryEntry.of(event(kind, {"from": "healthy", "to": "down", "reason": "HTTP 503",
                                     "summary": "down", "severity": "critical"}))
        for kind in ["project.status_changed", "incident.opened", "incident.resolved"] * 14
    )  # fmt: skip
    prompt = PromptView.build(
        AnalysisContext("email-blast", "contract", ("restart",), {"id": "i1", "summary": "down"})
    )
    return {
        "analysis_prompt.txt.j2": [{"prompt": prompt}],
        "analysis_system.txt.j2": [{"prompt": prompt}],
        "silence_reply.json.j2": [
            {"silence": SilenceView.of(silence, "created", REQUESTER)},
            {"silence": SilenceView.of(replace(silence, reason=""), "ended", "auto-fixer")},
        ],
        "ack_reply.json.j2": [{"ack": AckView.of(incident(), DECIDER)}],
        "action_request_reply.json.j2": [
            {"request": ActionRequestView.of(request, "pause always needs an approver.")},
            {"request": ActionRequestView.of(replace(request, needs_approval=False), "approver")},
        ],
        "history_reply.json.j2": [
            {"history": HistoryView("email-blast", "24h", None, 0.0, None, 0, (), 0)},
            {"history": HistoryView("email-blast", "7d", 99.25, 252.0, 126.0, 2, entries, 3)},
        ],
        "incidents_reply.json.j2": [
            {"incidents": IncidentListView(tuple(refs[:3]), False)},
            {"incidents": IncidentListView(tuple(refs), True)},
        ],
        "project_status_reply.json.j2": [
            {"project": ProjectStatusView("chatbot", "unknown", None, None, (), None, "")},
            {"project": status_of("email-blast", probe, tuple(refs), REQUESTER)},
        ],
        "projects_reply.json.j2": [
            {"projects": ProjectsView(tuple(map(project_line, range(320))))}
        ],
    }


def status_of(
    name: str, probe: ProbeRecord, refs: tuple[IncidentListLine, ...], by: str
) -> ProjectStatusView:
    return ProjectStatusView(name, "down", 97.5, probe, refs, NOW + timedelta(hours=1), by)


def project_line(i: int) -> ProjectLine:
    return ProjectLine(f"p{i}", "contract", "outreach" if i % 2 else "", "http://x:1/")


def render(name: str, context: dict[str, Any]) -> Any:
    json_template = name.endswith(".json.j2")
    return render_blocks(name, **context) if json_template else render_text(name, **context)


def strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in strings(key) + strings(value)]
    if isinstance(node, list):
        return [s for item in node for s in strings(item)]
    return []


def hostile(obj: Any, value: str) -> Any:
    """``obj`` with ``value`` in every string it holds (ids excepted), recursively."""
    if isinstance(obj, str):
        return value
    if isinstance(obj, tuple):
        return tuple(hostile(item, value) for item in obj)
    if isinstance(obj, dict):
        return {hostile(k, value): v for k, v in obj.items()} | {value: 1}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {
            f.name: hostile(getattr(obj, f.name), value)
            for f in dataclasses.fields(obj)
            if f.name not in ID_FIELDS
        }
        return dataclasses.replace(obj, **changes)
    return obj


def assert_inert(payload: Any) -> None:
    for text in strings(payload):
        rest = ALLOWED_TOKEN.sub("", text)
        assert "<" not in rest and ">" not in rest, f"raw markup in {text[:200]!r}"
        assert not re.search(r"&(?!amp;|lt;|gt;)", text), f"unescaped & in {text[:200]!r}"
        assert not re.search("[\x00-\x08\x0b-\x1f\u202a-\u202e\u2066-\u2069]", text)


def test_every_template_has_samples() -> None:
    assert sorted(samples()) == template_names()


@pytest.mark.parametrize("name", template_names())
def test_ordinary_values_render_and_validate(name: str) -> None:
    for context in samples()[name]:
        output = render(name, context)
        if isinstance(output, dict):
            assert (check_view if output.get("type") == "home" else check_message)(output) == []
            assert_inert(output)
        else:
            assert output.strip()


@pytest.mark.parametrize("name", template_names())
@pytest.mark.parametrize("value", [*HOSTILE, COMBINED, *HUGE], ids=range(len(HOSTILE) + 5))
def test_hostile_values_stay_inert(name: str, value: str) -> None:
    for context in samples()[name]:
        output = render(name, {key: hostile(view, value) for key, view in context.items()})
        if isinstance(output, str):  # terminal: no controls or escape sequences, no fake lines
            assert not re.search("[\x00-\x08\x0b-\x1f\u202a-\u202e\u2066-\u2069]", output)
            assert output.count("\n") == render(name, context).count("\n")
            continue
        assert_inert(output)
        texts = strings(output)
        for mention in ("<!channel>", "<!here>", "<@U123>", "<!subteam^S999>"):
            assert all(mention not in text for text in texts)
        if value in HOSTILE and "\n" not in value:  # the value is shown (escaped, maybe cut)
            shown = slack_escape(re.sub("[\x00-\x1f\u202a-\u202e\u2066-\u2069]", "", value))
            assert any(shown[:8] in text for text in texts), f"{shown!r} not shown"


def test_template_syntax_in_values_is_not_evaluated() -> None:
    card = hostile(samples()["incident_card.json.j2"][0]["card"], "{{ 7 * 7 }}")
    text = render_blocks("incident_card.json.j2", card=card)["blocks"][0]["text"]["text"]
    assert "{{ 7 * 7 }}" in text and "49" not in text


@pytest.mark.parametrize("name", template_names())
def test_missing_variable_raises(name: str) -> None:
    with pytest.raises(UndefinedError):
        render(name, {})
    key = next(iter(samples()[name][0]))
    with pytest.raises(UndefinedError):  # an object without the attributes: never empty
        render(name, {key: SimpleNamespace()})


def test_output_without_a_filter_is_refused() -> None:
    with pytest.raises(UnsafeValueError):
        JSON_ENV.from_string('{"text": "{{ value }}"}').render(value="<!channel>")
    with pytest.raises(UnsafeValueError):  # a built-in filter's output is not escaped
        JSON_ENV.from_string('{"text": "{{ value|upper }}"}').render(value="x")


def test_ids_in_markup_are_validated() -> None:
    with pytest.raises(TemplateOutputError, match=r"approval_card.json.j2: not a valid opaque"):
        render_blocks("approval_card.json.j2", approval=approval(approval_id='x", "url": "y'))
    card = dataclasses.replace(samples()["incident_card.json.j2"][0]["card"], oncall_id="<!here>")
    with pytest.raises(TemplateOutputError, match="not a valid Slack"):
        render_blocks("incident_card.json.j2", card=card)
    with pytest.raises(ValueError, match="oncall_id"):
        IncidentCardView.from_incident(incident(), oncall_id="here")


def test_approval_buttons_carry_only_the_opaque_id() -> None:
    payload = render_blocks("approval_card.json.j2", approval=approval())
    buttons = [e for b in payload["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert [(b["action_id"], b["value"]) for b in buttons] == [
        ("approval_approve", "apr_01HZX"),
        ("approval_deny", "apr_01HZX"),
    ]
    decided = render_blocks("approval_card.json.j2", approval=approval("granted"))
    assert all(b["type"] != "actions" for b in decided["blocks"])
    assert "Approved by <@U0DECIDER>" in str(decided)


def test_incident_card_states() -> None:
    opened, warning, resolved, root, folded = (
        c["card"] for c in samples()["incident_card.json.j2"]
    )
    red = render_blocks("incident_card.json.j2", card=opened)
    assert red["attachments"][0]["color"] == "#E01E5A"
    assert "<!subteam^S0ONCALL>" in red["blocks"][0]["text"]["text"]
    assert render_blocks("incident_card.json.j2", card=warning)["attachments"][0]["color"] == (
        "#ECB22E"
    )
    green = render_blocks("incident_card.json.j2", card=resolved)
    assert green["attachments"][0]["color"] == "#2EB67D"
    assert "down for *4m 12s*" in green["blocks"][0]["text"]["text"]
    assert resolved.oncall_id is None
    # Shared dependencies: a root names what is folded into it, a folded card says where.
    listed = render_blocks("incident_card.json.j2", card=root)["blocks"][1]["text"]["text"]
    assert listed.startswith("*Also affected* (40, depending on email-blast): app-00 ✅, app-01,")
    assert listed.endswith("app-29 and 10 more")
    moved = str(render_blocks("incident_card.json.j2", card=folded)["blocks"])
    assert "Folded into *db*'s incident" in moved


def test_incident_card_with_10kb_summary_fits() -> None:
    card = IncidentCardView.from_incident(incident(summary="<!channel> & " * 800))
    payload = render_blocks("incident_card.json.j2", card=card)
    text = payload["blocks"][0]["text"]["text"]
    assert text.endswith("…") and slack_len(text) <= 3000
    assert "&am…" not in text and "&l…" not in text  # never half an entity


@pytest.mark.parametrize("projects", [1, 300, 2000])
def test_app_home_fits_100_blocks(projects: int) -> None:
    lines = [IncidentLine.from_incident(incident(project=f"p{i}")) for i in range(50)]
    approvals = [approval(approval_id=f"apr-{i}") for i in range(30)]
    home = HomeView.build(rows(projects), lines, approvals, NOW)
    payload = render_blocks("app_home.json.j2", home=home)
    assert len(payload["blocks"]) <= 100
    if projects > 600:
        assert f"and {projects - 600} more projects" in str(payload)


def test_app_home_shows_every_one_of_300_projects() -> None:
    payload = render_blocks("app_home.json.j2", home=HomeView.build(rows(300), [], [], NOW))
    board = "\n".join(strings(payload))
    assert all(f"*project-{i:03d}*" in board for i in range(300))


def test_status_reply_for_60_projects_fits_50_blocks() -> None:
    payload = render_blocks("status_reply.json.j2", status=StatusReplyView.build(rows(60), NOW))
    assert len(payload["blocks"]) <= 50
    board = "\n".join(strings(payload))
    assert all(f"*project-{i:03d}*" in board for i in range(60))
    assert board.index(" down ") < board.index(" healthy ")


def test_storm_with_40_incidents_fits() -> None:
    storm = StormView.from_incidents([incident(project=f"p{i}") for i in range(40)])
    payload = render_blocks("storm.json.j2", storm=storm)
    assert payload["blocks"][0]["text"]["text"].startswith("🚨 40 incidents")
    assert "and 20 more" in payload["blocks"][-1]["elements"][0]["text"]
    assert len(payload["blocks"]) <= 50


def test_validator_names_the_path() -> None:
    section = {"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3012}}
    payload = {"text": "t", "blocks": [{"type": "divider"}] * 3 + [section]}
    assert check_message(payload) == ["blocks[3].text.text: 3012 characters (limit 3000)"]
    button = {"type": "button", "action_id": "a", "text": {"type": "plain_text", "text": "b"},
              "value": "v" * 2001}  # fmt: skip
    payload = {"text": "t", "blocks": [{"type": "actions", "elements": [button, button]}]}
    with pytest.raises(BlockKitError) as caught:
        validate_message(payload)
    assert caught.value.problems == [
        "blocks[0].elements[0].value: 2001 characters (limit 2000)",
        "blocks[0].elements[1].value: 2001 characters (limit 2000)",
        "blocks[0].elements[1].action_id: 'a' repeats in this block",
    ]
    assert check_message({"text": "t", "blocks": [{"type": "divider"}] * 51}) == [
        "blocks: 51 blocks in the message (limit 50)"
    ]
    view = {"type": "home", "blocks": [{"type": "divider"}] * 101}
    assert check_view(view) == ["blocks: 101 blocks in the view (limit 100)"]
    fields = {"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11}
    header = {"type": "header", "text": {"type": "mrkdwn", "text": "h" * 151}}
    assert check_message({"blocks": [fields, header, {"type": "table"}]}) == [
        "blocks[0].fields: 11 items (limit 10)",
        "blocks[1].text.type: expected plain_text, got 'mrkdwn'",
        "blocks[1].text.text: 151 characters (limit 150)",
        "blocks[2].type: unsupported block type 'table'",
    ]


def test_truncation_counts_like_slack() -> None:
    assert truncate_text("abc", 3) == "abc"
    assert truncate_text("abcd", 3) == "ab…"
    assert slack_len(truncate_text("😀" * 10, 7)) <= 7


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=4000))
def test_any_summary_renders_to_valid_inert_blocks(summary: str) -> None:
    card = IncidentCardView.from_incident(incident(summary=summary, project=summary[:63]))
    assert_inert(render_blocks("incident_card.json.j2", card=card))
