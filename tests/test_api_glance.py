"""What the dashboard reads at a glance through the API: each project's latency, hourly
uptime (the sparkline) and current anomalies; the agents' activity, suspensions and job
runs (``GET /agents``); who the caller is (``GET /me``); and, per pending approval,
whether the caller may decide it, by the same check a decision makes.

Every answer is validated against the served OpenAPI document (``tests.api_harness``).
"""

from __future__ import annotations

from datetime import timedelta

from agents.events import INCIDENT_OPENED, REMEDIATION_SUSPENDED, Event
from bot.settings import Settings
from storage.base import Incident, ProbeRecord
from storage.budget_store import Suspension
from tests.api_harness import APPROVER, ApiWorld, api_world, ask, seed


async def _memory_anomaly(w: ApiWorld) -> Incident:
    now = w.clock.now()

    def announce(i: Incident) -> Event:
        return Event(INCIDENT_OPENED, now, "incidents", {"fingerprint": i.fingerprint},
                     i.project, i.id)  # fmt: skip

    row = Incident("ab" * 16, "email-blast:metric:memory_percent", "email-blast",
                   "metric:memory_percent", "warning", "memory_percent 91 > 85", now)  # fmt: skip
    opened = await w.store.open_incident(row, announce)
    assert opened is not None
    return opened


async def test_projects_carry_latency_hourly_uptime_and_current_anomalies() -> None:
    async with api_world() as w:
        await seed(w.store, w.clock)  # probes 00:00-02:55 (01:00-01:15 failing); now 03:01
        await _memory_anomaly(w)
        blast, chatbot = (await w.get("/projects")).body["items"]

        hourly = blast["uptime_hourly"]
        assert hourly["first_hour"] == "2025-12-31T04:00:00Z"  # 24 hours, the current last
        assert len(hourly["percent"]) == 24
        assert hourly["percent"][:20] == [None] * 20
        assert hourly["percent"][20:] == [100.0, 75.0, 100.0, None]  # 03:00: no probe yet
        assert blast["latency_ms"] == 12.5 and blast["last_probe_at"] == "2026-01-01T02:55:00Z"
        assert blast["anomalies"] == [{
            "metric": "memory_percent", "severity": "warning",
            "summary": "memory_percent 91 > 85", "since": "2026-01-01T03:01:00Z",
        }]  # fmt: skip
        assert blast["open_incidents"] == 2  # the down incident and the anomaly

        assert chatbot["uptime_hourly"]["percent"] == [None] * 24
        assert chatbot["latency_ms"] is None and chatbot["anomalies"] == []
        one = await w.get("/projects/{name}", path={"name": "email-blast"})
        assert one.body["uptime_hourly"] == hourly and one.body["anomalies"] == blast["anomalies"]


async def test_the_current_hour_counts_before_it_is_rolled_up() -> None:
    async with api_world() as w:
        await seed(w.store, w.clock)
        now = w.clock.now()  # 03:01
        await w.store.add_probes([ProbeRecord("email-blast", now, "fail", 900.0, "refused")])
        await w.clock.advance(60)
        blast = (await w.get("/projects")).body["items"][0]
        assert blast["uptime_hourly"]["percent"][-1] == 0.0  # 03:01-03:02: down
        # A failed probe's latency (here a refused connection) is not the service's speed.
        assert blast["latency_ms"] is None and blast["last_probe_at"] == "2026-01-01T03:01:00Z"


def _suspended(s: Suspension) -> Event:
    return Event(REMEDIATION_SUSPENDED, s.since, "autofixer", {"reason": s.reason}, s.project)


async def test_agents_show_events_per_minute_suspensions_and_job_runs() -> None:
    async with api_world() as w:
        await seed(w.store, w.clock)
        await w.store.suspend_remediation("email-blast", "budget_exhausted", "autofixer",
                                          _suspended)  # fmt: skip
        assert await w.store.claim_job_run("rollup", "2026-01-01T03", "r1")
        answer = await w.get("/agents", query={"minutes": "10"})
        assert answer.status == 200
        body = answer.body
        assert body["minutes"] == 10 and body["until"] == "2026-01-01T03:01:00Z"
        by_source = {a["source"]: a for a in body["agents"]}
        since = w.clock.now() - timedelta(minutes=10)
        recent = await w.store.list_events(since=since, limit=1000)
        tests = sum(e.source == "test" for e in recent)
        assert by_source["test"]["events"] == tests > 0  # seeded just now, by "test"
        assert by_source["test"]["per_minute"] == round(tests / 10, 3)
        assert by_source["test"]["agent"] is False
        assert by_source["autofixer"]["events"] == 1  # the suspension's event
        assert by_source["autofixer"]["last_at"] == "2026-01-01T03:01:00Z"
        idle = by_source["health-monitor"]  # an agent is listed even when idle
        assert (idle["agent"], idle["events"], idle["last_at"]) == (True, 0, None)
        assert body["suspended"] == [{
            "project": "email-blast", "reason": "budget_exhausted", "by": "autofixer",
            "since": "2026-01-01T03:01:00Z", "until": None,
        }]  # fmt: skip
        assert body["jobs"] == [{"job": "rollup", "last_run_at": "2026-01-01T03:01:00Z"}]

        status_changes = await w.get("/agents", query={"minutes": "1440"})
        assert status_changes.body["agents"][-1]["source"] == "test"
        bad = await w.get("/agents", query={"minutes": "0"})
        assert bad.status == 400 and bad.error["where"] == "query.minutes"


async def test_me_says_who_calls_and_whether_they_may_decide() -> None:
    async with api_world() as w:
        alice = (await w.get("/me")).body
        assert alice == {"user": "alice", "mode": "token", "local": False,
                         "slack_user": APPROVER, "may_decide": True}  # fmt: skip
        dave = (await w.get("/me", token="dave")).body
        assert (dave["slack_user"], dave["may_decide"]) == (None, False)
    async with api_world(settings=Settings(api_mode="local"), operator="ann") as w:
        ann = (await w.get("/me", token=None)).body
        assert (ann["user"], ann["mode"], ann["local"], ann["may_decide"]) == (
            "ann", "local", True, True)  # fmt: skip


async def test_each_pending_approval_says_whether_the_caller_may_decide_it() -> None:
    async with api_world() as w:
        await ask(w.store)
        (mine,) = (await w.get("/approvals")).body["items"]
        assert (mine["can_decide"], mine["why_not"]) == (True, None)
        (reader,) = (await w.get("/approvals", token="dave")).body["items"]
        assert reader["can_decide"] is False
        assert (
            reader["why_not"]
            == "dave is not mapped to a Slack user (api_users), so it may only read"
        )
        (outsider,) = (await w.get("/approvals", token="carol")).body["items"]
        assert outsider["why_not"] == "carol (U0OUT) is not an approver of outreach"
        # The server refuses what the list says it may not decide.
        refused = await w.decide(reader["id"], token="carol")
        assert refused.status == 403 and refused.error["message"] == outsider["why_not"]
    async with api_world(settings=Settings(api_mode="local"), operator="ann") as w:
        await ask(w.store)
        (row,) = (await w.get("/approvals", token=None)).body["items"]
        assert row["can_decide"] is True
