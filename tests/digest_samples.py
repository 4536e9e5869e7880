"""Sample contexts of the digest's and the history chart's templates, for
``tests/test_templates.py`` (every template, ordinary and hostile values) and the digest
tests (Block Kit limits for 1 and 60 projects)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bot.digest import Digest, FleetLine, ProjectDigest
from bot.digest_maths import Anomaly, Figures, Timeline
from bot.history_chart import ChartCaption
from bot.slack.views import HistoryView

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
QUIET = Figures(
    uptime_pct=100.0, watched_s=86_400.0, maintenance_s=0.0, incidents=0, open_incidents=0,
    downtime_s=0.0, mtta_s=None, mttr_s=None, fixes_run=0, fixes_verified=0,
    approvals_granted=0, approvals_denied=0, approvals_expired=0, anomalies=(), flaps=0,
    analyses=0, claude_tokens=0, claude_cost_usd=0.0,
)  # fmt: skip
BUSY = Figures(
    uptime_pct=97.25, watched_s=79_200.0, maintenance_s=7_200.0, incidents=3, open_incidents=1,
    downtime_s=2_376.0, mtta_s=42.0, mttr_s=613.5, fixes_run=2, fixes_verified=1,
    approvals_granted=1, approvals_denied=1, approvals_expired=1,
    anomalies=(Anomaly("error_rate", 4, "crit"), Anomaly("latency_p95_ms", 2, "warn")),
    flaps=2, analyses=2, claude_tokens=18_250, claude_cost_usd=0.137,
)  # fmt: skip
REASONS = ("down now", "1 open incident", "3 incidents in 24 h", "uptime 97.25 %",
           "flapping (2×)", "1 automatic fix failed", "1 approval expired unanswered")  # fmt: skip
SPANS = Timeline(
    ((NOW - timedelta(hours=3), NOW - timedelta(hours=2, minutes=20)),),
    ((NOW - timedelta(hours=9), NOW - timedelta(hours=8, minutes=45)),),
    ((NOW - timedelta(hours=20), NOW - timedelta(hours=18)),),
)


def project(i: int, attention: bool) -> ProjectDigest:
    name = f"project-{i:02d}"
    if attention:
        return ProjectDigest(name, "down", BUSY, BUSY, REASONS, 0, i % 2 == 1, SPANS)
    return ProjectDigest(name, "healthy", QUIET, QUIET, (), 4, False, Timeline((), (), ()))


def digest(n: int, attention: int, group: str = "outreach") -> Digest:
    projects = tuple(project(i, i < attention) for i in range(n))
    fleet = FleetLine(
        projects=n, healthy_now=n - attention, attention=attention,
        uptime_pct=99.91 if n else None, uptime_week_pct=99.95 if n else None,
        incidents=3 * attention, incidents_week=5 * attention, downtime_s=2_376.0 * attention,
        fixes_verified=attention, fixes_verified_week=2 * attention,
        time_saved_s=900.0 * attention, time_saved_week_s=1_800.0 * attention,
        claude_tokens=18_250 * attention, claude_cost_usd=0.137 * attention,
        claude_tokens_week=36_500 * attention, claude_cost_week_usd=0.274 * attention,
    )  # fmt: skip
    return Digest(group, "#ops-outreach", "2026-03-02", "Europe/Berlin", NOW, fleet, projects,
                  complete=attention < 20)  # fmt: skip


def history_view(window: str = "24h") -> HistoryView:
    return HistoryView("email-blast", window, 99.25, 252.0, 126.0, 2, (), 0)


def samples() -> dict[str, list[dict[str, Any]]]:
    caption = ChartCaption(history_view(), NOW, ("error_rate", "latency_p95_ms"), "U0REQUEST")
    replies = [
        {"history": HistoryView("email-blast", "24h", None, 0.0, None, 0, (), 0),
         "chart": "none", "channel": ""},
        {"history": history_view("7d"), "chart": "queued", "channel": "#ops-outreach"},
        {"history": history_view(), "chart": "no_group", "channel": ""},
        {"history": history_view(), "chart": "failed", "channel": ""},
    ]  # fmt: skip
    return {
        "digest.json.j2": [
            {"digest": digest(0, 0)},
            {"digest": digest(1, 0)},
            {"digest": digest(1, 1)},
            {"digest": digest(60, 20)},
            {"digest": digest(600, 600)},
        ],
        "history_chart.json.j2": [
            {"caption": caption},
            {"caption": ChartCaption(history_view("7d"), NOW, (), None)},
        ],
        "history_reply.json.j2": replies,
    }
