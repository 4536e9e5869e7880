"""The simulated fleet over real HTTP on ephemeral ports, driven by a FakeClock."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from agents.clock import FakeClock
from bot.config import Config
from demo.faults import (
    FAULT_ROUTE,
    FAULTS,
    FaultSpec,
    parse_fault_spec,
    post_fault,
    run_fault_schedule,
)
from demo.fleet import Fleet
from orch_kit import signed_headers

NAMES = ("email-blast", "chatbot", "social-media")
SECRETS = {name: f"test-secret:{name}".encode() for name in NAMES}
STARTING_S = 2.0
PROJECTS_YML = Path(__file__).resolve().parent.parent / "demo" / "projects.yml"


class Api:
    """Talks to the fleet the way orch and the dashboard do: over HTTP, signed."""

    def __init__(self, fleet: Fleet, session: aiohttp.ClientSession, clock: FakeClock) -> None:
        self.fleet, self.session, self.clock = fleet, session, clock

    async def get(self, name: str, path: str) -> tuple[int, Any]:
        async with self.session.get(self.fleet.url(name) + path) as response:
            return response.status, json.loads(await response.text())

    async def metrics(self, name: str) -> dict[str, float]:
        status, body = await self.get(name, "/metrics")
        assert status == 200
        return dict(body)

    async def log_text(self, name: str, level: str = "debug") -> str:
        _, body = await self.get(name, f"/logs?limit=1000&level={level}")
        return "\n".join(entry["message"] for entry in body["entries"])

    async def control(self, name: str, action: str, key: str | None = None) -> dict[str, Any]:
        body = json.dumps({"action": action, "idempotency_key": key or uuid.uuid4().hex})
        headers = signed_headers(SECRETS[name], body.encode(), self.clock.now().timestamp())
        url = self.fleet.control_url(name) + "/control"
        async with self.session.post(url, data=body, headers=headers) as response:
            assert response.status == 202, await response.text()
            answer: dict[str, Any] = await response.json()
            return answer

    async def fault(self, name: str, fault: str | None, clear: bool = False) -> Any:
        return await post_fault(
            self.session,
            self.fleet.control_url(name),
            SECRETS[name],
            fault,
            clear=clear,
            now=self.clock.now().timestamp(),
        )


@pytest.fixture
async def fleet(clock: FakeClock) -> AsyncIterator[Fleet]:
    async with Fleet.ephemeral(NAMES, SECRETS, clock, starting_s=STARTING_S) as running:
        yield running


@pytest.fixture
async def api(fleet: Fleet, clock: FakeClock) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield Api(fleet, session, clock)


def demo_thresholds() -> dict[str, dict[str, float]]:
    """Each project's warn levels, as the demo config (defaults merged) sets them."""
    config = Config.model_validate(yaml.safe_load(PROJECTS_YML.read_text()))
    return {
        p.name: {m: t.warn for m, t in p.thresholds.items() if t.warn is not None}
        for p in config.projects
    }


# healthy behaviour ---------------------------------------------------------------------


async def test_healthy_fleet_stays_under_demo_thresholds(api: Api, clock: FakeClock) -> None:
    thresholds = demo_thresholds()
    seen: dict[str, set[float]] = {name: set() for name in NAMES}
    for _ in range(40):  # 20 simulated minutes, sampled every 30 s
        await clock.advance(30)
        for name in NAMES:
            status, health = await api.get(name, "/health")
            assert (status, health["status"]) == (200, "pass"), health
            metrics = await api.metrics(name)
            for metric, warn in thresholds[name].items():
                assert metrics[metric] < warn, (name, metric, metrics[metric])
            seen[name].add(metrics["cpu_percent"])
    assert all(len(values) > 10 for values in seen.values())  # the numbers drift


async def test_domain_metrics_status_and_logs(api: Api, clock: FakeClock) -> None:
    await clock.advance(60)
    expected = {
        "email-blast": {"emails_sent", "bounce_rate", "response_rate", "queue_depth"},
        "chatbot": {"conversations", "escalation_rate", "response_time_ms"},
        "social-media": {"posts_scheduled", "publish_failures", "publish_failure_rate"},
    }
    standard = {
        "cpu_percent",
        "memory_percent",
        "error_rate",
        "requests_per_second",
        "latency_p95_ms",
    }
    for name, domain in expected.items():
        assert standard | domain <= set(await api.metrics(name))
        status, body = await api.get(name, "/status")
        assert status == 200
        assert body["state"] == "running" and body["uptime_s"] == 60.0
        assert {"queue_depth", "version"} <= set(body)
    assert (await api.metrics("email-blast"))["emails_sent"] > 0
    # Recipient addresses are in the mailer's log on purpose (redaction must scrub them).
    assert "to=" in await api.log_text("email-blast")
    assert "@" in await api.log_text("email-blast")


async def test_same_seed_same_numbers() -> None:
    answers = []
    for _ in range(2):
        clock = FakeClock()
        async with (
            Fleet.ephemeral(["chatbot"], SECRETS, clock, seed=7) as fleet,
            aiohttp.ClientSession() as session,
        ):
            await clock.advance(45)
            api = Api(fleet, session, clock)
            answers.append((await api.metrics("chatbot"), await api.log_text("chatbot")))
    assert answers[0] == answers[1]


# faults --------------------------------------------------------------------------------


async def test_crash_refuses_connections_until_supervisor_restart(
    api: Api, fleet: Fleet, clock: FakeClock
) -> None:
    assert (await api.get("email-blast", "/health"))[0] == 200  # leaves a keep-alive conn
    await api.fault("email-blast", "crash")
    with pytest.raises(aiohttp.ClientConnectionError):
        await api.get("email-blast", "/health")  # the pooled connection is gone too
    async with aiohttp.ClientSession() as fresh:
        with pytest.raises(aiohttp.ClientConnectorError):
            await fresh.get(fleet.url("email-blast") + "/health")
    assert fleet.service("email-blast").state == "crashed"
    assert (await api.get("chatbot", "/health"))[0] == 200  # the others are fine

    answer = await api.control("email-blast", "restart")
    assert answer["accepted"] is True
    status, body = await api.get("email-blast", "/status")
    assert (status, body["state"]) == (200, "starting")
    await clock.advance(STARTING_S)
    assert (await api.get("email-blast", "/status"))[1]["state"] == "running"
    service = fleet.service("email-blast")
    assert service.restarts == 1 and service.control_calls["restart"] == 1
    assert service.faults == set()
    assert "SIGSEGV" in await api.log_text("email-blast", "critical")


async def test_hang_times_out_without_blocking_other_services(api: Api, fleet: Fleet) -> None:
    await api.fault("chatbot", "hang")
    short = aiohttp.ClientTimeout(total=0.3)

    async def hung() -> int:
        async with api.session.get(fleet.url("chatbot") + "/health", timeout=short) as r:
            return r.status

    hung_result, other = await asyncio.gather(
        hung(), api.get("social-media", "/health"), return_exceptions=True
    )
    assert isinstance(hung_result, asyncio.TimeoutError)
    assert isinstance(other, tuple) and other[0] == 200
    # The supervisor still answers and a restart un-wedges the worker.
    await api.control("chatbot", "restart")
    assert (await api.get("chatbot", "/health"))[0] == 200
    assert "unresponsive" in await api.log_text("chatbot", "error")


async def test_hang_stops_cleanly_with_a_request_in_flight(
    api: Api, fleet: Fleet, clock: FakeClock
) -> None:
    await api.fault("social-media", "hang")
    request = asyncio.create_task(api.get("social-media", "/status"))
    await asyncio.wait({request}, timeout=0.3)
    assert not request.done()
    await fleet.stop()  # releases the wedged handler instead of waiting on it
    with pytest.raises(aiohttp.ClientError):
        await request


async def test_error_spike(api: Api, clock: FakeClock) -> None:
    await api.fault("email-blast", "error_spike")
    await clock.advance(20)
    metrics = await api.metrics("email-blast")
    assert 0.17 <= metrics["error_rate"] <= 0.23
    status, health = await api.get("email-blast", "/health")
    assert (status, health["status"]) == (200, "warn")
    assert "421 4.7.0" in await api.log_text("email-blast", "error")


async def test_memory_leak_climbs_and_clear_cache_resets(
    api: Api, fleet: Fleet, clock: FakeClock
) -> None:
    baseline = (await api.metrics("chatbot"))["memory_percent"]
    assert 40 <= baseline <= 52
    await api.fault("chatbot", "memory_leak")
    readings = []
    for _ in range(3):
        await clock.advance(10)
        readings.append((await api.metrics("chatbot"))["memory_percent"])
    assert readings[0] < readings[1] < readings[2]
    assert readings[2] - baseline > 35  # about 1.5 points a second
    assert (await api.get("chatbot", "/health"))[1]["status"] == "warn"
    await clock.advance(120)
    assert (await api.metrics("chatbot"))["memory_percent"] == 99.0  # capped

    await api.control("chatbot", "clear_cache")
    assert (await api.metrics("chatbot"))["memory_percent"] < 55
    assert "memory_leak" not in fleet.service("chatbot").faults
    await clock.advance(30)
    assert (await api.metrics("chatbot"))["memory_percent"] < 55


async def test_disk_full_fails_health_and_survives_restart(
    api: Api, fleet: Fleet, clock: FakeClock
) -> None:
    await api.fault("social-media", "disk_full")
    await clock.advance(10)
    status, health = await api.get("social-media", "/health")
    assert (status, health["status"]) == (503, "fail")
    [disk] = health["checks"]["disk:utilization"]
    assert disk["status"] == "fail" and "No space left on device" in disk["output"]
    assert "No space left on device" in await api.log_text("social-media", "error")

    await api.control("social-media", "restart")
    await clock.advance(STARTING_S + 1)
    assert (await api.get("social-media", "/health"))[0] == 503
    assert fleet.service("social-media").faults == {"disk_full"}
    assert fleet.service("social-media").restarts == 1


async def test_dependency_down_logs_and_heals_only_on_clear(
    api: Api, fleet: Fleet, clock: FakeClock
) -> None:
    await api.fault("email-blast", "dependency_down")
    await clock.advance(10)
    status, health = await api.get("email-blast", "/health")
    assert (status, health["status"]) == (503, "fail")
    errors = await api.log_text("email-blast", "error")
    assert 'psycopg.OperationalError: connection to server at "10.0.3.12", port 5432' in errors
    assert "Connection refused" in errors

    sent = (await api.metrics("email-blast"))["emails_sent"]
    await api.control("email-blast", "restart")
    await clock.advance(10)
    assert (await api.get("email-blast", "/health"))[0] == 503  # a restart cannot fix it
    assert (await api.metrics("email-blast"))["emails_sent"] == sent  # no work without a db

    await api.fault("email-blast", "dependency_down", clear=True)
    status, health = await api.get("email-blast", "/health")
    assert (status, health["status"]) == (200, "pass")
    assert "reconnected to postgres" in await api.log_text("email-blast", "info")
    await clock.advance(10)
    assert (await api.metrics("email-blast"))["emails_sent"] > sent


async def test_restart_clears_transient_faults_only(
    api: Api, fleet: Fleet, clock: FakeClock
) -> None:
    service = fleet.service("chatbot")
    for fault in ("error_spike", "memory_leak", "hang", "disk_full", "dependency_down", "crash"):
        await service.inject(fault)
    assert service.faults == set(FAULTS)
    await api.control("chatbot", "restart")
    assert service.faults == {"disk_full", "dependency_down"}
    status, body = await api.get("chatbot", "/status")
    assert (status, body["state"]) == (200, "starting")
    await clock.advance(STARTING_S)
    assert service.state == "running"
    metrics = await api.metrics("chatbot")
    assert metrics["error_rate"] < 0.05 and metrics["memory_percent"] < 55


async def test_pause_and_resume(api: Api, fleet: Fleet, clock: FakeClock) -> None:
    await clock.advance(5)
    await api.control("social-media", "pause")
    assert (await api.get("social-media", "/status"))[1]["state"] == "paused"
    before = await api.metrics("social-media")
    await clock.advance(60)
    during = await api.metrics("social-media")
    assert during["posts_published"] == before["posts_published"]  # no work while paused
    await api.control("social-media", "resume")
    assert (await api.get("social-media", "/status"))[1]["state"] == "running"
    await clock.advance(60)
    assert (await api.metrics("social-media"))["posts_published"] > during["posts_published"]
    assert fleet.service("social-media").control_calls == {"pause": 1, "resume": 1}


async def test_replayed_control_is_not_counted(api: Api, fleet: Fleet, clock: FakeClock) -> None:
    first = await api.control("email-blast", "restart", key="inc-1-restart-1")
    await clock.advance(1)  # a retry signed again: the same key, a new signature
    second = await api.control("email-blast", "restart", key="inc-1-restart-1")
    assert second == {**first, "replayed": True}
    assert fleet.service("email-blast").restarts == 1


# the demo fault route ------------------------------------------------------------------


async def test_fault_route_is_signed(api: Api, fleet: Fleet, clock: FakeClock) -> None:
    url = fleet.control_url("chatbot") + FAULT_ROUTE
    body = json.dumps({"fault": "crash"}).encode()
    wrong = signed_headers(b"wrong", body, clock.now().timestamp())
    for headers in ({}, wrong):
        async with api.session.post(url, data=body, headers=headers) as response:
            assert response.status == 401
    assert fleet.service("chatbot").faults == set()
    # Only the supervisor serves it.
    async with api.session.post(fleet.url("chatbot") + FAULT_ROUTE, data=body) as response:
        assert response.status == 404

    answer = await api.fault("chatbot", "error_spike")
    assert answer == {"project": "chatbot", "faults": ["error_spike"]}
    await api.fault("chatbot", "disk_full")
    assert (await api.fault("chatbot", None, clear=True))["faults"] == []
    with pytest.raises(aiohttp.ClientResponseError) as refused:
        await api.fault("chatbot", "meteor_strike")
    assert refused.value.status == 400


# fault schedules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("email-blast:crash@30", FaultSpec("email-blast", "crash", 30.0)),
        ("chatbot:hang", FaultSpec("chatbot", "hang", 0.0)),
        (" social-media:memory_leak@1.5s ", FaultSpec("social-media", "memory_leak", 1.5)),
    ],
)
def test_parse_fault_spec(text: str, spec: FaultSpec) -> None:
    assert parse_fault_spec(text) == spec


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("email-blast", "missing ':'"),
        ("email-blast:explode@3", "unknown fault 'explode'"),
        ("email-blast:crash@soon", "bad seconds 'soon'"),
        ("email-blast:crash@-1", "bad seconds '-1'"),
        ("email-blast:crash@", "bad seconds ''"),
        ("Email Blast:crash", "bad project name"),
    ],
)
def test_parse_fault_spec_errors(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_fault_spec(text)


async def test_run_fault_schedule_follows_the_clock(fleet: Fleet, clock: FakeClock) -> None:
    specs = [parse_fault_spec(s) for s in ("chatbot:error_spike@10", "email-blast:disk_full")]
    schedule = asyncio.create_task(run_fault_schedule(fleet, specs, clock))
    await clock.settle()
    assert fleet.service("email-blast").faults == {"disk_full"}
    assert fleet.service("chatbot").faults == set()
    await clock.advance(10)
    assert fleet.service("chatbot").faults == {"error_spike"}
    await asyncio.wait_for(schedule, timeout=5)


async def test_run_fault_schedule_rejects_unknown_projects(fleet: Fleet, clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="billing"):
        await run_fault_schedule(fleet, [FaultSpec("billing", "crash", 5)], clock)


# building from config ------------------------------------------------------------------


def ephemeral_config(extra: list[dict[str, Any]] | None = None) -> Config:
    """demo/projects.yml with every port 0 (tests use free ports only)."""
    data = yaml.safe_load(PROJECTS_YML.read_text())
    for project in data["projects"]:
        project["url"] = "http://127.0.0.1:0"
        project["control_url"] = "http://127.0.0.1:0"
    data["projects"] += extra or []
    return Config.model_validate(data)


async def test_from_config_uses_demo_or_env_secrets(clock: FakeClock) -> None:
    env = {"CHATBOT_CONTROL_SECRET": "from-the-environment"}
    fleet = Fleet.from_config(ephemeral_config(), env, clock)
    assert fleet.names == list(NAMES)
    async with fleet, aiohttp.ClientSession() as session:
        for name, secret in (
            ("email-blast", b"orch-demo-secret:email-blast"),
            ("chatbot", b"from-the-environment"),
        ):
            answer = await post_fault(
                session,
                fleet.control_url(name),
                secret,
                "error_spike",
                now=clock.now().timestamp(),
            )
            assert answer["faults"] == ["error_spike"]
        with pytest.raises(aiohttp.ClientResponseError) as refused:
            await post_fault(
                session,
                fleet.control_url("chatbot"),
                b"orch-demo-secret:chatbot",
                "hang",
                now=clock.now().timestamp(),
            )
        assert refused.value.status == 401


def test_from_config_refuses_projects_it_cannot_simulate(clock: FakeClock) -> None:
    billing = {"name": "billing", "url": "http://127.0.0.1:0", "kind": "http"}
    with pytest.raises(ValueError, match="no simulation for project 'billing'"):
        Fleet.from_config(ephemeral_config([billing]), {}, clock)


async def test_inject_and_clear_need_not_be_awaited(api: Api, fleet: Fleet) -> None:
    service = fleet.service("social-media")
    service.inject("crash")  # as a fire-and-forget story script calls it
    assert service.state == "crashed"  # the state changes at once
    reopened = service.clear("crash")  # queued behind the close, never racing it
    await reopened
    assert (await api.get("social-media", "/health"))[0] == 200
    assert service.restarts == 0  # a cleared fault is not a restart
