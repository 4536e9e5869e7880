"""The digest's numbers (``bot.digest``, ``bot.digest_maths``) on a synthetic day with
answers worked out by hand (``tests.digest_history``), on SQLite and PostgreSQL; and the
span arithmetic and attention rules on their own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agents.events import SILENCE_CREATED, Event
from bot.digest import Digest, build_digest, reasons_of
from bot.digest_maths import Anomaly, clipped, merged, weighted_uptime, without
from bot.render import render_blocks
from storage.base import Store
from tests.digest_history import PROJECTS, H, History, M, incident, seed, steady
from tests.digest_samples import BUSY, QUIET
from tests.test_store_contract import BACKENDS, opened_on

pytestmark = pytest.mark.timeout(60)
T = datetime(2026, 3, 2, tzinfo=UTC)


@pytest.fixture(params=sorted(BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with opened_on(request.param, tmp_path) as opened:
        yield opened


async def digest_of(store: Store, day: History) -> Digest:
    return await build_digest(store, "outreach", "#ops", PROJECTS, day.end, timezone="UTC",
                              day_label="2026-03-02", minutes_saved_per_fix=15)  # fmt: skip


async def test_a_known_day(store: Store) -> None:
    day = await seed(store)
    digest = await digest_of(store, day)
    by = {p.name: p for p in digest.projects}
    alpha = by["alpha"].day
    assert alpha.uptime_pct == pytest.approx(day.alpha_uptime, abs=1e-9)
    assert (alpha.incidents, alpha.open_incidents, alpha.downtime_s) == (3, 1, 11_400.0)
    assert alpha.mttr_s == 12_900.0
    assert alpha.mtta_s == pytest.approx(day.alpha_mtta, abs=1e-6)
    assert (alpha.fixes_run, alpha.fixes_verified, alpha.fixes_failed) == (2, 1, 1)
    assert (alpha.approvals_granted, alpha.approvals_denied, alpha.approvals_expired) == (1, 1, 1)
    assert alpha.anomalies == (
        Anomaly("error_rate", 2, "crit"), Anomaly("latency_p95_ms", 1, "warn"),
    )  # fmt: skip
    assert (alpha.flaps, alpha.analyses, alpha.claude_tokens) == (1, 3, 2000)
    assert alpha.claude_cost_usd == pytest.approx(0.03)
    assert (alpha.maintenance_s, alpha.watched_s) == (0.0, 86_400.0)
    # beta: the silence is maintenance: its failures, incident and anomaly do not count.
    beta = by["beta"].day
    assert beta.uptime_pct == pytest.approx(100.0, abs=1e-9)
    assert (beta.incidents, beta.downtime_s, beta.mttr_s, beta.mtta_s) == (0, 0.0, None, None)
    silenced = (day.silence.ends_at - day.silence.starts_at).total_seconds()  # ~300 s
    assert (beta.anomalies, beta.maintenance_s, beta.watched_s) == ((), silenced, 86_400 - silenced)
    assert by["gamma"].day.uptime_pct is None
    assert by["delta"].day.uptime_pct == 100.0
    # Attention first, most urgent first; the fine ones by name.
    assert [p.name for p in digest.projects] == ["alpha", "gamma", "beta", "delta"]
    assert by["alpha"].reasons[:2] == ("down now", "1 open incident")
    assert by["gamma"].reasons == ("not observed in 24 h",)
    assert by["beta"].reasons == by["delta"].reasons == ()
    assert not digest.all_clear and digest.complete
    fleet = digest.fleet
    assert (fleet.projects, fleet.healthy_now, fleet.attention) == (4, 2, 2)
    weights = (86_400, 86_400 - silenced, 86_400)
    weighted = day.alpha_uptime * weights[0] + 100 * weights[1] + 100 * weights[2]
    assert fleet.uptime_pct == pytest.approx(weighted / sum(weights), abs=1e-9)
    assert (fleet.incidents, fleet.downtime_s, fleet.fixes_verified) == (3, 11_400.0, 1)
    assert fleet.time_saved_s == 900.0 and fleet.claude_tokens == 2000
    # The week holds the day (nothing older was recorded but I3, already counted).
    assert by["alpha"].week.incidents == 4 and by["alpha"].week.downtime_s == 11_400 + 6 * 3600
    assert by["alpha"].week.mttr_s == 12_900.0
    # Without a silence the downtime and MTTR are the store's own.
    assert alpha.downtime_s == await store.downtime("alpha", day.since, day.end)
    assert alpha.mttr_s == await store.mttr("alpha", day.since, day.end)
    timeline = by["alpha"].timeline
    assert timeline.down[0] == (day.since, day.end - 23 * H)
    assert timeline.degraded == ((day.end - 5 * H, day.end - 4 * H),)
    assert by["beta"].timeline.maintenance == ((day.silence.starts_at, day.silence.ends_at),)
    payload = render_blocks("digest.json.j2", digest=digest)
    assert "alpha" in payload["text"] and "2 need attention" in payload["text"]


async def test_all_clear(store: Store) -> None:
    end = T + 24 * H
    await store.add_probes(steady("calm", T, end))
    digest = await build_digest(store, "ops", "#ops", ["calm"], end)
    assert digest.all_clear and digest.attention == ()
    [calm] = digest.projects
    assert (calm.day.uptime_pct, calm.day.incidents, calm.day.mtta_s) == (100.0, 0, None)
    text = render_blocks("digest.json.j2", digest=digest)["blocks"][2]["text"]["text"]
    assert text.startswith("✅ *All clear.*")


async def test_an_incident_opened_in_maintenance_before_the_window(store: Store) -> None:
    now = await store.db_now()
    silence = await store.create_silence(
        "p", now + 5 * M, "deploy", "U0OPS",
        lambda row: Event(SILENCE_CREATED, row.starts_at, "test", {}, row.project),
    )  # fmt: skip
    await incident(store, "p", "down", silence.starts_at + M, silence.starts_at + 2 * H)
    since = silence.starts_at + H  # the silence ended before the window
    [p] = (await build_digest(store, "g", "#g", ["p"], since + 24 * H)).projects
    assert (p.day.incidents, p.day.downtime_s, p.day.maintenance_s) == (0, 3600.0, 0.0)
    assert p.day.mttr_s is None  # it opened in maintenance: not in MTTR either
    assert p.week.mttr_s is None and p.week.incidents == 0


async def test_an_empty_group(store: Store) -> None:
    digest = await build_digest(store, "empty", "#ops", [], T)
    assert (digest.projects, digest.all_clear, digest.fleet.uptime_pct) == ((), False, None)
    text = render_blocks("digest.json.j2", digest=digest)["blocks"][2]["text"]["text"]
    assert text == "No projects in this group."


async def test_a_project_failing_all_day(store: Store) -> None:
    end = T + 24 * H
    await store.add_probes(steady("broken", T, end, lambda ts: True))
    digest = await build_digest(store, "ops", "#ops", ["broken"], end)
    assert digest.projects[0].day.uptime_pct == 0.0
    assert digest.projects[0].reasons == ("uptime 0.00 %",)
    assert not digest.all_clear


def test_spans() -> None:
    a, b, c, d = (T + n * H for n in range(4))
    assert merged([(c, d), (a, b), (b, c), (d, d)]) == [(a, d)]
    assert clipped([(a, c)], b, d) == [(b, c)]
    assert without((a, d), [(b, c)]) == [(a, b), (c, d)]
    assert without((b, c), [(a, d)]) == []
    assert weighted_uptime([(100.0, 1.0), (50.0, 3.0), (None, 5.0), (0.0, 0.0)]) == 62.5
    assert weighted_uptime([]) is None


def test_reasons_rank_what_matters_first() -> None:
    assert reasons_of("healthy", QUIET) == (4, ())
    assert reasons_of("down", QUIET) == (0, ("down now",))
    rank, reasons = reasons_of("degraded", BUSY)
    assert rank == 1 and reasons[:2] == ("degraded now", "1 open incident")
    assert reasons[-1] == "anomalies: error_rate ×4, latency_p95_ms ×2"
    unobserved = replace(QUIET, uptime_pct=None)
    assert reasons_of("unknown", unobserved) == (2, ("not observed in 24 h",))
    silenced_all_day = replace(unobserved, watched_s=0.0, maintenance_s=86_400.0)
    assert reasons_of("healthy", silenced_all_day) == (4, ())
    assert reasons_of("healthy", replace(QUIET, uptime_pct=99.95)) == (4, ())
    assert reasons_of("healthy", replace(QUIET, uptime_pct=99.85))[1] == ("uptime 99.85 %",)
