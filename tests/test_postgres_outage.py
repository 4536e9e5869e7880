"""PostgreSQL down for a while, during a crash loop, while people use Slack (issue 10.1).

The real Runtime runs on PostgreSQL reached through a TCP proxy in this process
(``tests.tcp_proxy``); the outage is the proxy cut (every connection dropped, new ones
refused) and later restored, so the shared server is never stopped.  A simulated service
crash-loops over real HTTP during the outage, an approver types ``/orch status`` and
``/orch restart`` (signed requests into orch's web app, answers recorded by the local
fake Slack), and readiness is read from orch's own contract ``/health``.  Checked:

- during the outage: the monitor keeps following the crash loop (live status down,
  healthy, down); ``/orch status`` answers within Slack's 3 s in a degraded mode that says
  the database is unreachable; ``/orch restart`` is refused because its audit row cannot
  be written, and no ``/control`` call goes out; ``/health`` fails on the database;
- after it: every probe result and every status event produced during the outage is in
  PostgreSQL (row counts equal to what the monitor produced, in order, nothing dropped),
  the incidents they imply are opened and resolved with their detection times, and the
  same ``/orch restart`` now runs once, with its audit rows.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest

from agents.bus import InProcessBus
from agents.events import PROJECT_STATUS_CHANGED, Event
from agents.probe_result import Level, ProbeResult
from agents.recorder import ProbeRecorder
from agents.write_buffer import BufferedRelay
from bot.runtime import Runtime, RuntimeOptions
from bot.settings import Settings
from demo.fleet import Fleet
from storage.postgres import PostgresStore
from tests.acting_fleet import ENV, FAST, SECRETS, acting_config
from tests.fake_slack import FakeSlack, form_body, signed_headers, slash_command
from tests.support import eventually
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.timeout(90)

NAME = "email-blast"
BOSS = "U0BOSS"  # an approver: a restart asked by them runs at once, after its audit row
SIGNING = "signing-secret"
SLACK_DEADLINE_S = 3.0
OUTAGE_PROBES = 40  # the outage lasts at least this many probe intervals
# Probe every 250 ms.  The outage (10 s) outlasts the leases (3 s): the only replica
# keeps polling what it holds all the same (agents.coordination, tests/test_lease_outage.py).
TIMINGS = {**FAST, "interval": "250ms", "timeout": "200ms", "recheck_interval": "100ms",
           "remediation": {**FAST["remediation"], "auto_fix": False}}  # fmt: skip
LEASE_TTL_S = 3.0


@dataclass
class World:
    runtime: Runtime
    fleet: Fleet
    slack: FakeSlack
    proxy: TcpProxy
    database_url: str  # the real server, not the proxy
    results: list[ProbeResult]
    http: aiohttp.ClientSession

    @property
    def web(self) -> str:
        assert self.runtime.web is not None
        return self.runtime.web.url

    def status(self) -> str:
        return self.runtime.health.status(NAME)

    def probes(self) -> int:
        return sum(1 for r in self.results if r.project == NAME)

    async def slash(self, text: str) -> tuple[str, float]:
        """``/orch <text>`` by the approver, signed; returns the answer's JSON (as text)
        and the seconds from sending the request to the answer reaching Slack."""
        before = len(self.slack.calls_to("response_url"))
        body = form_body(slash_command(text, self.slack.response_url("r"), user_id=BOSS))
        loop_time = _loop_time()
        async with self.http.post(
            f"{self.web}/slack/events", data=body, headers=signed_headers(SIGNING, body)
        ) as response:
            assert response.status == 200  # the ack
        calls = await self.slack.wait_for("response_url", before + 1, timeout=10)
        return json.dumps(calls[before].params, ensure_ascii=False), _loop_time() - loop_time

    async def health(self) -> tuple[int, dict[str, Any]]:
        async with self.http.get(f"{self.web}/health") as response:
            return response.status, await response.json(content_type=None)

    async def query(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.database_url)
        try:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            return rows
        finally:
            await conn.close()


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


def through(proxy: TcpProxy, url: str) -> str:
    """``url`` with its host and port replaced by the proxy's (user, database and
    options kept)."""
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    netloc = f"{user}@127.0.0.1:{proxy.port}" if user else f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
async def world(pg_schema: tuple[str, str], tmp_path: Path) -> AsyncIterator[World]:
    url, _schema = pg_schema
    target = urlsplit(url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    await proxy.start()
    slack = FakeSlack()
    await slack.start()
    fleet = Fleet.ephemeral([NAME], {NAME: SECRETS[NAME]}, starting_s=0.0)
    await fleet.start()
    settings = Settings(
        database_url=through(proxy, url), port=0, env=ENV, slack_bot_token="xoxb-test",
        slack_signing_secret=SIGNING, slack_api_url=slack.api_url,
        sqlite_path=tmp_path / "unused.db",
    )  # fmt: skip
    group = {"outreach": {"channel": "#ops-outreach", "approvers": [BOSS], "projects": [NAME]}}
    config = acting_config(fleet, [NAME], defaults=TIMINGS, orchestrators=group)
    results: list[ProbeResult] = []
    options = RuntimeOptions(lease_ttl_s=LEASE_TTL_S, extra_result_listeners=[results.append])
    runtime = Runtime(settings, config, options=options)
    await runtime.start()
    try:
        async with aiohttp.ClientSession() as http:
            yield World(runtime, fleet, slack, proxy, url, results, http)
    finally:
        await proxy.restore()  # a failed test must not leave orch stopping against nothing
        await runtime.stop()
        await fleet.stop()
        await slack.stop()
        await proxy.stop()


async def test_postgres_down_during_a_crash_loop(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    rt, service = world.runtime, world.fleet.service(NAME)
    await eventually(lambda: world.status() == "healthy", f"{NAME} healthy", timeout=20)
    await rt.recorder.flush()

    # -- the outage ---------------------------------------------------------------------
    await world.proxy.cut()
    cut_at, cut_loop = datetime.now(UTC), _loop_time()
    probes_at_cut = world.probes()

    # The crash loop, followed live although nothing can be stored.
    await world.fleet.inject(NAME, "crash")
    await eventually(lambda: world.status() == "down", "down during the outage", timeout=15)

    answer, status_took = await world.slash("status")
    assert status_took < SLACK_DEADLINE_S, f"/orch status answered after {status_took:.2f} s"
    assert "Degraded: orch's database is unreachable" in answer
    assert "uptime, incidents and history are unavailable" in answer
    assert f"*{NAME}* down" in answer  # the live status, from the monitor
    assert "could not answer" not in answer and "Traceback" not in answer

    answer, took = await world.slash(f"status {NAME}")
    assert took < SLACK_DEADLINE_S
    assert f"{NAME} is down (live, from orch's monitor)" in answer
    assert "database is unreachable" in answer

    answer, _ = await world.slash(f"restart {NAME}")
    assert f"/orch restart {NAME} was refused" in answer
    assert "audit row cannot be written" in answer and "Nothing was sent" in answer
    assert sum(service.control_calls.values()) == 0  # control failed closed

    status, health = await world.health()
    assert status == 503 and health["status"] == "fail"
    [store_check] = health["checks"]["store"]
    assert store_check["status"] == "fail"
    assert store_check["output"].startswith("database unreachable (")
    assert "probe results" in store_check["output"] and "events" in store_check["output"]

    await world.fleet.clear(NAME, "crash")  # it comes back by itself …
    await eventually(lambda: world.status() == "healthy", "healthy during the outage", timeout=15)
    await world.fleet.inject(NAME, "crash")  # … and crashes again
    await eventually(lambda: world.status() == "down", "down again", timeout=15)
    await eventually(
        lambda: world.probes() - probes_at_cut >= OUTAGE_PROBES,
        f"{OUTAGE_PROBES} probes during the outage",
        timeout=30,
    )
    assert sum(service.control_calls.values()) == 0
    held_events = rt.relay.held
    assert held_events >= 3  # down, healthy, down (and flapping, if it started)
    assert rt.recorder.held > 0
    restored_at = datetime.now(UTC)
    outage_s = _loop_time() - cut_loop
    during = [r for r in world.results if r.project == NAME and cut_at <= r.ts < restored_at]
    await world.proxy.restore()

    # -- after it -------------------------------------------------------------------------
    def written() -> bool:
        return not (rt.relay.held or rt.relay.outage.down or rt.recorder.outage.down)

    await eventually(written, "the held events and probes written", timeout=20)
    assert rt.relay.outage.dropped == 0 and rt.recorder.dropped == 0
    assert rt.relay.held_total == held_events
    assert rt.recorder.outage.written_late >= len(during)

    # Every status event of the outage is stored, in the order it happened.
    rows = await world.query(
        "SELECT type, payload FROM events WHERE ts >= $1 AND ts < $2 ORDER BY seq",
        cut_at, restored_at,
    )  # fmt: skip
    assert len(rows) == held_events
    changes = [json.loads(r["payload"])["to"] for r in rows if r["type"] == PROJECT_STATUS_CHANGED]
    assert changes == ["down", "healthy", "down"]

    # The incidents they imply, opened and resolved at the moments they were detected.
    async def incidents_follow() -> bool:
        found = await rt.store.list_incidents(project=NAME)
        return [i.state for i in found] == ["open", "resolved"]

    await eventually(incidents_follow, "the outage's incidents", timeout=20)
    for incident in await rt.store.list_incidents(project=NAME):
        assert cut_at <= incident.opened_at < restored_at

    # With the database back, status reads the store again and the restart runs once.
    answer, _ = await world.slash("status")
    assert "Degraded" not in answer and "1 open" in answer
    answer, _ = await world.slash(f"restart {NAME}")
    assert "refused" not in answer
    await eventually(lambda: service.control_calls["restart"] == 1, "the restart ran")
    await eventually(lambda: world.status() == "healthy", "healthy after the restart")
    status, health = await world.health()
    assert health["checks"]["store"][0]["status"] == "pass"

    # Stopping flushes the rest: then every probe result the monitor produced is a row.
    await rt.stop()
    [probes] = await world.query("SELECT count(*) AS n FROM probes WHERE project = $1", NAME)
    assert probes["n"] == world.probes()
    [outage_rows] = await world.query(
        "SELECT count(*) AS n FROM probes WHERE project = $1 AND ts >= $2 AND ts < $3",
        NAME, cut_at, restored_at,
    )  # fmt: skip
    assert outage_rows["n"] == len(during) >= OUTAGE_PROBES
    audit = await world.query(
        "SELECT actor, decision, outcome, at FROM audit_log WHERE project = $1 ORDER BY id", NAME
    )
    assert [(a["actor"], a["decision"]) for a in audit] == [(BOSS, "allowed"), (BOSS, "allowed")]
    assert all(a["at"] >= restored_at for a in audit)  # nothing was recorded as run before
    [actions] = await world.query("SELECT count(*) AS n FROM actions WHERE project = $1", NAME)
    assert actions["n"] == 1
    assert service.control_calls["restart"] == 1
    logged = [r.getMessage() for r in caplog.records if r.name == "agents.write_buffer"]
    assert any("database unreachable" in m for m in logged)
    assert any("database reachable again" in m for m in logged)
    # The outage is told, not a traceback per poll or per command, by the Slack side.
    slack_side = [r for r in caplog.records if r.name in ("bot.slack_outbox", "bot.slack.work")]
    assert [r for r in slack_side if r.exc_info] == []
    print(
        f"\noutage {outage_s:.1f} s; /orch status in {status_took:.2f} s; probes during it "
        f"{len(during)} (written late {rt.recorder.outage.written_late}), held events "
        f"{held_events}; rows after: probes {probes['n']} of {world.probes()} produced; "
        f"dropped 0"
    )


async def test_a_database_that_stops_answering_is_unreachable_too(world: World) -> None:
    """A black hole (no resets: connections hang) instead of refused connections: the
    monitor waits at most ``WRITE_TIMEOUT_S`` once, status and readiness still answer
    in time, and everything held is written after."""
    rt = world.runtime
    await eventually(lambda: world.status() == "healthy", f"{NAME} healthy", timeout=20)
    world.proxy.stall()
    stalled_at = datetime.now(UTC)

    await world.fleet.inject(NAME, "crash")
    await eventually(lambda: world.status() == "down", "down during the stall", timeout=15)

    answer, took = await world.slash("status")
    assert took < SLACK_DEADLINE_S, f"/orch status answered after {took:.2f} s"
    assert "Degraded: orch's database is unreachable (no answer within 1.5 s)" in answer
    assert f"*{NAME}* down" in answer
    async with world.http.get(f"{world.web}/readyz") as response:
        assert response.status == 503
        ready = await response.json(content_type=None)
    assert ready["checks"]["store"].startswith("database unreachable (no answer within 1.5 s)")
    asked = _loop_time()
    status, health = await world.health()  # orch's contract /health: bounded as well
    assert _loop_time() - asked < SLACK_DEADLINE_S
    assert status == 503 and health["checks"]["store"][0]["status"] == "fail"

    held = rt.relay.held
    assert held >= 1
    restored_at = datetime.now(UTC)
    await world.proxy.restore()

    def written() -> bool:
        return not (rt.relay.held or rt.relay.outage.down)

    await eventually(written, "the held events written", timeout=30)
    rows = await world.query(
        "SELECT type, payload FROM events WHERE ts >= $1 AND ts < $2 ORDER BY seq",
        stalled_at, restored_at,
    )  # fmt: skip
    assert len(rows) == rt.relay.held_total == held
    changes = [json.loads(r["payload"])["to"] for r in rows if r["type"] == PROJECT_STATUS_CHANGED]
    assert changes == ["down"]
    assert rt.relay.outage.dropped == 0
    print(
        f"\nstall {rt.relay.outage.last_s:.1f} s; /orch status in {took:.2f} s; held events {held}"
    )


# -- the bounds ------------------------------------------------------------------------


@pytest.fixture
async def proxied_store(
    pg_schema: tuple[str, str],
) -> AsyncIterator[tuple[PostgresStore, TcpProxy]]:
    url, _ = pg_schema
    target = urlsplit(url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    await proxy.start()
    store = PostgresStore(through(proxy, url), connect_timeout=2.0)
    await store.open()
    try:
        yield store, proxy
    finally:
        await proxy.restore()
        await store.close()
        await proxy.stop()


def status_event(n: int) -> Event:
    return Event(PROJECT_STATUS_CHANGED, datetime.now(UTC), "test", {"to": f"s{n}"}, "p")


async def test_held_events_beyond_the_bound_drop_the_oldest_and_the_rest_keep_their_order(
    proxied_store: tuple[PostgresStore, TcpProxy],
) -> None:
    store, proxy = proxied_store
    relay = BufferedRelay(store, InProcessBus(), capacity=3)
    await proxy.cut()
    events = [status_event(n) for n in range(5)]
    for event in events:
        await relay.emit([event])  # returns: held, not raised
    assert relay.held == 3 and relay.outage.dropped == 2 and relay.outage.down

    await proxy.restore()
    assert await relay.write_held() == 3
    stored = await store.list_events(project="p")
    assert [e.id for e in stored] == [e.id for e in events[2:]]
    assert not relay.outage.down and relay.outage.written_late == 3

    # What the database refuses (here: a payload it cannot encode) is raised, not held.
    with pytest.raises(TypeError):
        await relay.emit([Event(PROJECT_STATUS_CHANGED, datetime.now(UTC), "t", {"x": {1, 2}})])
    assert relay.held == 0


async def test_held_probe_results_beyond_the_bound_drop_samples_first(
    proxied_store: tuple[PostgresStore, TcpProxy],
) -> None:
    store, proxy = proxied_store
    recorder = ProbeRecorder(store, max_buffer=10)  # rows: probe results + metric samples
    await proxy.cut()
    for n in range(8):
        at = datetime.now(UTC)
        recorder.add(ProbeResult("p", at, Level.PASS, 3.0, metrics={"cpu_percent": float(n)}))
    with pytest.raises(OSError):
        await recorder.flush()
    assert recorder.held == 8  # 8 probe results kept, 6 of their 8 samples dropped
    assert (recorder.dropped_samples, recorder.dropped_probes) == (6, 0)
    for n in range(3):
        recorder.add(ProbeResult("p", datetime.now(UTC), Level.FAIL, 3.0, reason=f"r{n}"))
    with pytest.raises(OSError):
        await recorder.flush()
    assert (recorder.dropped_samples, recorder.dropped_probes) == (8, 1)  # then results

    await proxy.restore()
    await recorder.flush()
    counts = await store.count_rows()
    assert (counts["probes"], counts["metric_samples"]) == (10, 0)
    assert [p.reason for p in await store.recent_probes("p", limit=3)] == ["r2", "r1", "r0"]
    assert recorder.outage.written_late == 10 and not recorder.outage.down
