"""The contract kit over real HTTP: shapes, status codes, signing, idempotency."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from agents.clock import FakeClock
from orch_kit import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Callbacks,
    Check,
    Contract,
    ControlRequest,
    Health,
    LogBuffer,
    LogEntry,
    LogQuery,
    mount_contract,
    sign,
    signed_headers,
    verify,
)
from orch_kit.idempotency import IdempotencyCache

SECRET = b"kit-test-secret"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "contract.md"


class FakeService:
    """A service written against the kit, recording what /control made it do."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.health = Health("pass")
        self.actions: list[str] = []
        self.fail_next_control = False
        self.logs = LogBuffer(now=clock.now)
        self.health_raises = False

    def callbacks(self) -> Callbacks:
        return Callbacks(
            health=self._health,
            metrics=self._metrics,  # a plain function: the kit takes both kinds
            status=self._status,
            logs=self.logs.query,
            control=self._control,
        )

    async def _health(self) -> Health:
        if self.health_raises:
            raise RuntimeError("database handle closed")
        return self.health

    def _metrics(self) -> Mapping[str, Any]:
        return {
            "cpu_percent": 12.5,
            "memory_percent": 40.0,
            "error_rate": 0.01,
            "requests_per_second": 3.0,
            "latency_p95_ms": 120.0,
            "emails sent/total": 42,  # sanitised in the Prometheus form
            "campaign": "spring",  # not a number: JSON only
        }

    async def _status(self) -> Mapping[str, Any]:
        return {"state": "running", "queue_depth": 3, "uptime_s": 12.0}

    async def _control(self, request: ControlRequest) -> Mapping[str, Any]:
        if self.fail_next_control:
            self.fail_next_control = False
            raise RuntimeError("supervisor unavailable")
        self.actions.append(request.action)
        return {"done_by": "fake"}


@pytest.fixture
def service(clock: FakeClock) -> FakeService:
    return FakeService(clock)


@pytest.fixture
def contract(service: FakeService, clock: FakeClock) -> Contract:
    return Contract(
        service.callbacks(),
        secret=SECRET,
        now=lambda: clock.now().timestamp(),
        version="1.2.3",
        service_id="fake",
    )


@pytest.fixture
async def client(contract: Contract) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    contract.mount(app)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


def body_of(action: str = "restart", key: str | None = "key-1") -> bytes:
    data: dict[str, Any] = {"action": action}
    if key is not None:
        data["idempotency_key"] = key
    return json.dumps(data).encode()


async def post_control(
    client: TestClient[web.Request, web.Application],
    body: bytes,
    headers: Mapping[str, str],
) -> tuple[int, dict[str, Any]]:
    response = await client.post("/control", data=body, headers=dict(headers))
    return response.status, await response.json()


def signed(clock: FakeClock, body: bytes, secret: bytes = SECRET) -> dict[str, str]:
    return signed_headers(secret, body, clock.now().timestamp())


# /health -------------------------------------------------------------------------------


async def test_health_pass_is_200_health_json(client: TestClient[Any, Any]) -> None:
    response = await client.get("/health")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/health+json")
    body = json.loads(await response.text())
    assert body == {
        "status": "pass",
        "version": "1.2.3",
        "output": "",
        "checks": {},
        "serviceId": "fake",
    }


async def test_health_warn_is_200_and_fail_is_503_with_checks(
    client: TestClient[Any, Any], service: FakeService
) -> None:
    service.health = Health.from_checks(
        {"memory:utilization": [Check("warn", "memory at 88%", "system", 88.0, "percent")]}
    )
    response = await client.get("/health")
    body = json.loads(await response.text())
    assert response.status == 200
    assert body["status"] == "warn"
    assert body["output"] == "memory at 88%"
    [check] = body["checks"]["memory:utilization"]
    assert check["observedValue"] == 88.0 and check["observedUnit"] == "percent"
    assert check["time"] == "2026-01-01T00:00:00.000Z"

    service.health = Health.from_checks(
        {"disk:utilization": [Check("fail", "No space left on device")]}
    )
    response = await client.get("/health")
    assert response.status == 503
    assert json.loads(await response.text())["status"] == "fail"


async def test_health_callback_error_reports_fail(
    client: TestClient[Any, Any], service: FakeService
) -> None:
    service.health_raises = True
    response = await client.get("/health")
    assert response.status == 503
    body = json.loads(await response.text())
    assert body["status"] == "fail"
    assert "RuntimeError" in body["output"]


# /metrics ------------------------------------------------------------------------------


async def test_metrics_json(client: TestClient[Any, Any]) -> None:
    response = await client.get("/metrics")
    assert response.status == 200
    metrics = await response.json()
    for name in ("cpu_percent", "memory_percent", "error_rate", "requests_per_second"):
        assert isinstance(metrics[name], float)
    assert metrics["latency_p95_ms"] == 120.0
    assert metrics["campaign"] == "spring"


@pytest.mark.parametrize(
    "accept",
    [
        "text/plain",
        # what a Prometheus server sends
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    ],
)
async def test_metrics_prometheus_text_parses_back(
    client: TestClient[Any, Any], accept: str
) -> None:
    response = await client.get("/metrics", headers={"Accept": accept})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(await response.text())}
    assert families["cpu_percent"].samples[0].value == 12.5
    assert families["latency_p95_ms"].type == "gauge"
    assert families["emails_sent_total"].samples[0].value == 42.0  # sanitised name
    assert "campaign" not in families


async def test_metrics_browser_accept_gets_json(client: TestClient[Any, Any]) -> None:
    response = await client.get(
        "/metrics", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    )
    assert response.content_type == "application/json"


# /status -------------------------------------------------------------------------------


async def test_status_shape_and_default_version(client: TestClient[Any, Any]) -> None:
    response = await client.get("/status")
    assert response.status == 200
    assert await response.json() == {
        "state": "running",
        "queue_depth": 3,
        "uptime_s": 12.0,
        "version": "1.2.3",
    }


# /logs ---------------------------------------------------------------------------------


async def fill_logs(service: FakeService, clock: FakeClock, count: int) -> None:
    for i in range(count):
        level = "error" if i % 10 == 0 else "info"
        service.logs.append(level, f"line {i}")
        await clock.advance(1)


async def test_logs_default_limit_newest_last(
    client: TestClient[Any, Any], service: FakeService, clock: FakeClock
) -> None:
    await fill_logs(service, clock, 150)
    response = await client.get("/logs")
    entries = (await response.json())["entries"]
    assert len(entries) == 100
    assert entries[-1]["message"] == "line 149"
    assert entries[0]["message"] == "line 50"
    assert set(entries[0]) == {"ts", "level", "message"}
    assert entries[-1]["ts"] == "2026-01-01T00:02:29.000Z"


async def test_logs_since_limit_level(
    client: TestClient[Any, Any], service: FakeService, clock: FakeClock
) -> None:
    await fill_logs(service, clock, 50)
    # since is exclusive: polling with the last ts seen never repeats a line
    response = await client.get("/logs", params={"since": "2026-01-01T00:00:45.000Z"})
    assert [e["message"] for e in (await response.json())["entries"]] == [
        "line 46",
        "line 47",
        "line 48",
        "line 49",
    ]
    response = await client.get("/logs", params={"limit": "3"})
    assert [e["message"] for e in (await response.json())["entries"]] == [
        "line 47",
        "line 48",
        "line 49",
    ]
    response = await client.get("/logs", params={"level": "warn"})
    entries = (await response.json())["entries"]
    assert [e["message"] for e in entries] == [f"line {i}" for i in range(0, 50, 10)]
    assert {e["level"] for e in entries} == {"error"}


async def test_logs_since_with_unencoded_plus(
    client: TestClient[Any, Any], service: FakeService, clock: FakeClock
) -> None:
    await fill_logs(service, clock, 5)
    # "+" in a raw query string decodes to a space; the kit still reads the offset.
    response = await client.get("/logs?since=2026-01-01T00:00:02+00:00")
    assert response.status == 200
    assert [e["message"] for e in (await response.json())["entries"]] == ["line 3", "line 4"]


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"limit": "lots"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "1000"),
        ({"level": "loud"}, "level"),
        ({"since": "yesterday"}, "since"),
    ],
)
async def test_logs_bad_params_are_400_naming_the_param(
    client: TestClient[Any, Any], params: dict[str, str], names: str
) -> None:
    response = await client.get("/logs", params=params)
    assert response.status == 400
    assert names in (await response.json())["error"]


def test_log_query_level_is_a_minimum() -> None:
    ts = FakeClock().now()
    query = LogQuery(since=ts - timedelta(seconds=1), level="warning")
    assert query.wants(LogEntry(ts, "critical", "x"))
    assert not query.wants(LogEntry(ts, "info", "x"))
    assert not query.wants(LogEntry(ts - timedelta(seconds=2), "error", "x"))


# /control: authentication --------------------------------------------------------------


async def test_control_accepted(
    client: TestClient[Any, Any], service: FakeService, clock: FakeClock
) -> None:
    body = body_of("restart", "inc-7-restart-1")
    status, answer = await post_control(client, body, signed(clock, body))
    assert status == 202
    assert answer == {
        "accepted": True,
        "action": "restart",
        "idempotency_key": "inc-7-restart-1",
        "done_by": "fake",
    }
    assert service.actions == ["restart"]


def _bad_headers(clock: FakeClock, body: bytes) -> dict[str, dict[str, str]]:
    now = int(clock.now().timestamp())
    good = signed(clock, body)
    other = body_of("pause")
    return {
        "unsigned": {},
        "missing signature": {TIMESTAMP_HEADER: str(now)},
        "missing timestamp": {SIGNATURE_HEADER: good[SIGNATURE_HEADER]},
        "wrong secret": signed(clock, body, b"not-the-secret"),
        "another project's secret": signed(clock, body, b"orch-demo-secret:other-project"),
        "tampered body": signed(clock, other),
        "stale": {
            TIMESTAMP_HEADER: str(now - 301),
            SIGNATURE_HEADER: sign(SECRET, now - 301, body),
        },
        "future": {
            TIMESTAMP_HEADER: str(now + 301),
            SIGNATURE_HEADER: sign(SECRET, now + 301, body),
        },
        "malformed signature": {TIMESTAMP_HEADER: str(now), SIGNATURE_HEADER: "v0=nothex"},
        "unversioned signature": {
            TIMESTAMP_HEADER: str(now),
            SIGNATURE_HEADER: good[SIGNATURE_HEADER].removeprefix("v0="),
        },
        "other version": {
            TIMESTAMP_HEADER: str(now),
            SIGNATURE_HEADER: "v1=" + good[SIGNATURE_HEADER].removeprefix("v0="),
        },
        "timestamp not a number": {
            TIMESTAMP_HEADER: "soon",
            SIGNATURE_HEADER: good[SIGNATURE_HEADER],
        },
    }


@pytest.mark.parametrize(
    "case",
    [
        "unsigned",
        "missing signature",
        "missing timestamp",
        "wrong secret",
        "another project's secret",
        "tampered body",
        "stale",
        "future",
        "malformed signature",
        "unversioned signature",
        "other version",
        "timestamp not a number",
    ],
)
async def test_control_refuses_unauthenticated_calls(
    client: TestClient[Any, Any],
    service: FakeService,
    contract: Contract,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    case: str,
) -> None:
    body = body_of("restart", "secret-key-in-body")
    caplog.set_level(logging.INFO, logger="orch_kit")
    status, answer = await post_control(client, body, _bad_headers(clock, body)[case])
    assert status == 401
    assert answer["error"].startswith("unauthorized")
    assert service.actions == []
    assert contract.refused == 1
    # The refusal is logged, with neither the secret nor the body in it.
    assert any("refused" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        assert SECRET.decode() not in record.getMessage()
        assert "secret-key-in-body" not in record.getMessage()


async def test_replayed_request_is_refused_and_logged(
    client: TestClient[Any, Any],
    service: FakeService,
    contract: Contract,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A captured request sent again, byte for byte, inside the window: refused, even
    on the other route that shares the contract's authenticator."""
    body = body_of("restart", "inc-7-restart-1")
    headers = signed(clock, body)
    assert (await post_control(client, body, headers))[0] == 202
    caplog.set_level(logging.INFO, logger="orch_kit")
    await clock.advance(30)
    status, answer = await post_control(client, body, headers)
    assert status == 401
    assert "replayed" in answer["error"]
    assert service.actions == ["restart"]
    assert contract.refused == 1
    assert any("replayed request" in r.getMessage() for r in caplog.records)
    # Once outside the window the same bytes are simply stale.
    await clock.advance(300)
    status, answer = await post_control(client, body, headers)
    assert (status, service.actions) == (401, ["restart"])
    assert "old" in answer["error"]


async def test_control_accepts_a_timestamp_inside_the_window(
    client: TestClient[Any, Any], service: FakeService, clock: FakeClock
) -> None:
    body = body_of("pause")
    headers = signed(clock, body)  # signed now, delivered 299 s later
    await clock.advance(299)
    status, _ = await post_control(client, body, headers)
    assert status == 202
    assert service.actions == ["pause"]


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (b"{not json", "not valid JSON"),
        (b'["restart"]', "JSON object"),
        (body_of("reboot"), "action must be one of"),
        (body_of("restart", key=None), "idempotency_key"),
        (body_of("restart", key="  "), "idempotency_key"),
        (body_of("restart", key="k" * 201), "longer than"),
    ],
)
async def test_control_bad_body_after_auth_is_400(
    client: TestClient[Any, Any],
    service: FakeService,
    clock: FakeClock,
    body: bytes,
    complaint: str,
) -> None:
    status, answer = await post_control(client, body, signed(clock, body))
    assert status == 400
    assert complaint in answer["error"]
    assert service.actions == []


# /control: idempotency -----------------------------------------------------------------


async def test_same_idempotency_key_acts_once(
    client: TestClient[Any, Any], service: FakeService, clock: FakeClock
) -> None:
    body = body_of("restart", "inc-9-restart-1")
    first_status, first = await post_control(client, body, signed(clock, body))
    await clock.advance(5)
    second_status, second = await post_control(client, body, signed(clock, body))
    assert (first_status, second_status) == (202, 202)
    assert service.actions == ["restart"]
    assert "replayed" not in first
    assert second == {**first, "replayed": True}

    other = body_of("restart", "inc-9-restart-2")
    status, answer = await post_control(client, other, signed(clock, other))
    assert status == 202 and "replayed" not in answer
    assert service.actions == ["restart", "restart"]


async def test_same_key_for_another_action_is_409(
    client: TestClient[Any, Any], service: FakeService, clock: FakeClock
) -> None:
    first = body_of("pause", "shared")
    await post_control(client, first, signed(clock, first))
    second = body_of("resume", "shared")
    status, answer = await post_control(client, second, signed(clock, second))
    assert status == 409
    assert "pause" in answer["error"]
    assert service.actions == ["pause"]


async def test_failed_action_is_500_and_a_retry_acts(
    client: TestClient[Any, Any], service: FakeService, clock: FakeClock
) -> None:
    service.fail_next_control = True
    body = body_of("clear_cache", "retry-me")
    status, answer = await post_control(client, body, signed(clock, body))
    assert status == 500
    assert "RuntimeError" in answer["error"]
    await clock.advance(1)  # a retry is signed again
    status, answer = await post_control(client, body, signed(clock, body))
    assert status == 202 and "replayed" not in answer
    assert service.actions == ["clear_cache"]


async def test_idempotency_memory_is_bounded(service: FakeService, clock: FakeClock) -> None:
    app = web.Application()
    mount_contract(
        app,
        service.callbacks(),
        secret=SECRET,
        now=lambda: clock.now().timestamp(),
        idempotency_size=2,
    )
    async with TestClient(TestServer(app)) as client:
        for key in ("a", "b", "c", "a"):  # "a" was forgotten when "c" came
            await clock.advance(1)  # each call signed at its own second: none is a replay
            body = body_of("clear_cache", key)
            status, _ = await post_control(client, body, signed(clock, body))
            assert status == 202
    assert service.actions == ["clear_cache"] * 4


async def test_concurrent_calls_with_one_key_act_once(clock: FakeClock) -> None:
    cache = IdempotencyCache()
    gate = asyncio.Event()
    performed: list[str] = []

    async def perform() -> dict[str, Any]:
        performed.append("restart")
        await gate.wait()
        return {"accepted": True}

    first = asyncio.create_task(cache.run("k", "restart", perform))
    second = asyncio.create_task(cache.run("k", "restart", perform))
    await clock.settle()  # both are now waiting: one in perform, one on the first
    gate.set()
    outcomes = await asyncio.gather(first, second)
    assert performed == ["restart"]
    assert sorted(o.replayed for o in outcomes) == [False, True]


# mounting ------------------------------------------------------------------------------


async def test_control_on_its_own_port_shares_idempotency(
    service: FakeService, clock: FakeClock
) -> None:
    contract = Contract(service.callbacks(), secret=SECRET, now=lambda: clock.now().timestamp())
    main, supervisor = web.Application(), web.Application()
    contract.mount(main)
    contract.mount_control(supervisor)
    async with (
        TestClient(TestServer(main)) as main_client,
        TestClient(TestServer(supervisor)) as supervisor_client,
    ):
        assert (await supervisor_client.get("/health")).status == 404
        body = body_of("restart", "once")
        status, _ = await post_control(supervisor_client, body, signed(clock, body))
        assert status == 202
        await clock.advance(1)  # a retry is signed again (the same signature is a replay)
        status, answer = await post_control(main_client, body, signed(clock, body))
        assert status == 202 and answer["replayed"] is True
    assert service.actions == ["restart"]


async def test_mount_without_control(service: FakeService) -> None:
    app = web.Application()
    mount_contract(app, service.callbacks(), control=False)
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/status")).status == 200
        assert (await client.post("/control", data=b"{}")).status == 404


def test_control_needs_a_secret(service: FakeService) -> None:
    with pytest.raises(ValueError, match="secret"):
        mount_contract(web.Application(), service.callbacks(), secret=b"")


# signing -------------------------------------------------------------------------------

EXAMPLE_SECRET = b"example-secret-do-not-use"
EXAMPLE_TIMESTAMP = 1767225600  # 2026-01-01T00:00:00Z
EXAMPLE_BODY = b'{"action": "restart", "idempotency_key": "inc-42-restart-1"}'
EXAMPLE_SIGNATURE = "v0=f032c0bd4d3a28201d14fa4ce72d85a0fe30cc0bb41b7c14f862afd1621c6687"


def test_documented_worked_example() -> None:
    assert sign(EXAMPLE_SECRET, EXAMPLE_TIMESTAMP, EXAMPLE_BODY) == EXAMPLE_SIGNATURE
    doc = DOCS.read_text()
    for fact in (
        EXAMPLE_SECRET.decode(),
        str(EXAMPLE_TIMESTAMP),
        EXAMPLE_BODY.decode(),
        EXAMPLE_SIGNATURE,
    ):
        assert fact in doc
    assert verify(
        EXAMPLE_SECRET,
        str(EXAMPLE_TIMESTAMP),
        EXAMPLE_SIGNATURE,
        EXAMPLE_BODY,
        now=EXAMPLE_TIMESTAMP + 10,
    )


def test_verify_round_trip_and_rejections() -> None:
    now = 1_767_225_600.7
    headers = signed_headers(SECRET, b"{}", now)
    assert headers[TIMESTAMP_HEADER] == "1767225600"
    ts, sig = headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER]
    assert verify(SECRET, ts, sig, b"{}", now)
    assert verify(SECRET, ts, sig.upper().replace("V0=", "v0="), b"{}", now)  # hex case
    assert not verify(SECRET, ts, sig, b"{ }", now)
    assert not verify(b"other", ts, sig, b"{}", now)
    assert not verify(SECRET, ts, sig, b"{}", now + 301)
    assert not verify(SECRET, ts, sig, b"{}", now - 301)
    assert verify(SECRET, ts, sig, b"{}", now + 1000, window=1001)
    assert not verify(SECRET, None, sig, b"{}", now)
    assert not verify(SECRET, ts, None, b"{}", now)
    assert not verify(SECRET, ts, "v0=é" + sig[4:], b"{}", now)
