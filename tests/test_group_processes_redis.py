"""One orch process per orchestrator group on the production path: one PostgreSQL schema
and one Redis, shared (DESIGN §7, issue 9).  Each group's process subscribes with its own
consumer groups (``<role>@<group>``), so a failing project of one group is carded once,
in its group's channel, restarted once, and the other group's process only acknowledges
the event without acting on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from agents.redis_bus import RedisStreamsBus
from bot.config import Config
from bot.runtime import Runtime, RuntimeOptions
from bot.settings import Settings
from tests.fake_slack import FakeSlack
from tests.redis_server import RedisServer
from tests.support import eventually
from tests.test_dependencies_e2e import ENV, Service

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(90)]

GROUPS = {"ops": ["a1", "a2"], "support": ["b1", "b2"]}
CHANNELS = {"ops": "#ops", "support": "#support"}


def group_config(services: dict[str, Service]) -> Config:
    return Config.model_validate({
        "defaults": {
            "interval": "500ms", "timeout": "300ms", "recheck_interval": "100ms",
            "remediation": {"backoff": "200ms", "verify_timeout": "20s",
                            "verify_interval": "200ms", "control_timeout": "2s"},
        },
        "orchestrators": {
            group: {"channel": CHANNELS[group], "projects": names}
            for group, names in GROUPS.items()
        },
        "projects": [
            {"name": s.name, "url": s.url, "control_secret_env": "FLEET_SECRET",
             "allowed_actions": ["restart"]}
            for s in services.values()
        ],
    })  # fmt: skip


async def test_two_group_processes_on_postgres_and_redis_card_and_act_once(
    pg_schema: tuple[str, str], tmp_path: Path
) -> None:
    url, _schema = pg_schema
    services = {name: Service(name) for names in GROUPS.values() for name in names}
    for service in services.values():
        await service.listener.start()
    slack = FakeSlack()
    await slack.start()
    config = group_config(services)
    runtimes: dict[str, Runtime] = {}
    async with RedisServer() as redis_server:
        try:
            for group in GROUPS:
                settings = Settings(
                    database_url=url, redis_url=redis_server.url, port=0, env=ENV,
                    sqlite_path=tmp_path / "unused.db", slack_bot_token="xoxb-test",
                    slack_signing_secret="signing-secret", slack_api_url=slack.api_url,
                )  # fmt: skip
                runtimes[group] = Runtime(
                    settings, config,
                    options=RuntimeOptions(serve_web=False, lease_ttl_s=3, orchestrator=group),
                )  # fmt: skip
                assert isinstance(runtimes[group].bus, RedisStreamsBus)
                await runtimes[group].start()
            ops, support = runtimes["ops"], runtimes["support"]

            def polled_own_group() -> bool:
                return (ops.monitor is not None and ops.monitor.projects == GROUPS["ops"]
                        and support.monitor is not None
                        and support.monitor.projects == GROUPS["support"])  # fmt: skip

            await eventually(polled_own_group, "each process polls its own group", timeout=20)
            await eventually(
                lambda: all(ops.health.statuses().get(n) == "healthy" for n in GROUPS["ops"]),
                "ops' projects healthy", timeout=20,
            )  # fmt: skip

            services["a1"].broken = True  # a worker of the ops group crashes

            async def a1_fixed() -> bool:
                rows = await ops.store.list_incidents(project="a1")
                return bool(rows) and all(i.state == "resolved" for i in rows)

            await eventually(a1_fixed, "a1 restarted and verified", timeout=40)

            async def slack_settled() -> bool:
                return not await ops.store.slack_rows(state="pending")

            await eventually(slack_settled, "Slack caught up", timeout=20)

            # One card, in ops' channel; support's process posted nothing about it.
            cards = [c for c in slack.calls_to("chat.postMessage") if "thread_ts" not in c.params]
            assert [c.params["channel"] for c in cards] == ["#ops"]
            assert "a1" in json.dumps(cards[0].params)
            # One restart, by ops' process; nobody else was touched.
            assert services["a1"].controls == ["restart"]
            assert all(services[n].controls == [] for n in ("a2", "b1", "b2"))
            # Every role reads the stream through its own group's consumer group, and
            # nothing is left unacknowledged in any of them.
            names, _ = await consumer_groups(redis_server.url)
            assert any(n.endswith("@ops") for n in names), names
            assert any(n.endswith("@support") for n in names), names
            # The same roles in both (a per-replica role is "<role>:<replica>@<group>").
            assert roles(names, "ops") == roles(names, "support")
            assert {"autofixer", "executor"} <= roles(names, "ops"), roles(names, "ops")

            async def all_acknowledged() -> bool:
                return (await consumer_groups(redis_server.url))[1] == 0

            await eventually(all_acknowledged, "every event acknowledged", timeout=10)
        finally:
            for runtime in runtimes.values():
                await runtime.stop()
            await slack.stop()
            for service in services.values():
                await service.listener.stop()


async def consumer_groups(redis_url: str) -> tuple[set[str], int]:
    """The consumer groups of every stream, and how many entries they hold unacknowledged."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        names: set[str] = set()
        pending = 0
        for key in await client.keys("*"):
            if await client.type(key) != b"stream":
                continue
            for info in await client.xinfo_groups(key):
                names.add(info["name"].decode())
                pending += int(info["pending"])
        return names, pending
    finally:
        await client.aclose()


def roles(names: set[str], group: str) -> set[str]:
    return {n.split("@")[0].split(":")[0] for n in names if n.endswith(f"@{group}")}
