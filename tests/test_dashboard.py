"""The dashboard without a browser: its page and login on orch's real web app, and the
event stream (``GET /api/v1/stream``) fed by the real in-process bus, read by a real
aiohttp client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import pytest

from agents.bus import InProcessBus
from agents.clock import FakeClock
from agents.events import INCIDENT_OPENED, Event
from bot.api import ApiParts
from bot.api.auth import COOKIE, Principal
from bot.dashboard import Dashboard, StreamHub
from bot.dashboard.page import TEMPLATES, render_page
from bot.settings import Settings
from bot.web import WebServer, make_web_app
from storage.sqlite import SQLiteStore
from tests.api_harness import TOKENS, api_config, token_settings
from tests.support import eventually

pytestmark = pytest.mark.timeout(20)

HOSTILE = '<img src=x onerror="alert(1)"></script><script>alert(2)</script>'
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@dataclass
class Site:
    bus: InProcessBus
    dashboard: Dashboard
    web: WebServer
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return self.web.url


@asynccontextmanager
async def site(settings: Settings, hub: StreamHub | None = None) -> AsyncIterator[Site]:
    clock = FakeClock()
    store = SQLiteStore(":memory:", clock=clock)
    bus = InProcessBus()
    dashboard = Dashboard(bus, "r1", hub=hub)
    config = api_config()
    parts = ApiParts(store, lambda: config, clock, settings, lambda: None, operator="ann")
    await store.open()
    await bus.start()
    web = WebServer(make_web_app(dict, routes=dashboard.routes(parts)), "127.0.0.1", 0)
    await web.start()
    try:
        async with aiohttp.ClientSession() as http:
            yield Site(bus, dashboard, web, http)
    finally:
        dashboard.close()
        await web.stop()
        await bus.stop()
        await store.close()


def bearer(user: str = "alice") -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[user]}"}


def hostile_event() -> Event:
    payload = {"summary": HOSTILE, "severity": "critical", "fingerprint": "f"}
    return Event(INCIDENT_OPENED, NOW, "incidents", payload, "email-blast", "inc-1")


async def read_until(response: aiohttp.ClientResponse, prefix: bytes) -> bytes:
    while True:
        line = await response.content.readline()
        assert line, "the stream ended"
        if line.startswith(prefix):
            return line


# -- the page ---------------------------------------------------------------------------


async def test_the_page_renders_the_fleet_grouped_by_orchestrator() -> None:
    async with site(Settings(api_mode="local")) as s:
        async with s.http.get(s.url + "/dashboard") as r:
            assert r.status == 200 and r.content_type == "text/html"
            html = await r.text()
            assert r.headers["Cache-Control"] == "no-store"
            assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
        assert 'data-group="outreach"' in html and 'data-group="support"' in html
        assert 'data-project="email-blast"' in html and 'data-project="chatbot"' in html
        assert "(local operator)" in html
        async with s.http.get(s.url + "/", allow_redirects=False) as r:
            assert r.status == 302 and r.headers["Location"] == "/dashboard"


async def test_local_mode_refuses_another_host_name() -> None:
    async with site(Settings(api_mode="local")) as s:
        headers = {"Host": "evil.example"}
        async with s.http.get(s.url + "/dashboard", headers=headers) as r:
            assert r.status == 403
        async with s.http.get(s.url + "/api/v1/stream", headers=headers) as r:
            assert r.status == 403


def test_server_rendered_values_are_escaped() -> None:
    html = render_page(api_config(), Principal(HOSTILE, local=False), "token")
    assert HOSTILE not in html and "<img" not in html and "alert(2)</script>" not in html
    assert "&lt;img src=x" in html


def test_the_script_inserts_text_never_html() -> None:
    source = (TEMPLATES / "dashboard.html.j2").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in source, sink
    assert "textContent" in source


# -- the stream -------------------------------------------------------------------------


async def test_a_published_event_reaches_a_connected_client() -> None:
    async with (
        site(Settings(api_mode="local")) as s,
        s.http.get(s.url + "/api/v1/stream") as r,
    ):
        assert r.status == 200 and r.content_type == "text/event-stream"
        await read_until(r, b": connected")
        await s.bus.publish(hostile_event())
        line = await read_until(r, b"data: ")
        body = json.loads(line.removeprefix(b"data: "))
        assert body["type"] == INCIDENT_OPENED and body["project"] == "email-blast"
        assert body["payload"]["summary"] == HOSTILE  # data, for the page's textContent
        assert body["ts"] == "2026-05-01T12:00:00Z"


async def test_a_stalled_client_is_dropped_and_never_holds_the_bus() -> None:
    hub = StreamHub(queue_size=2)
    stalled = hub.connect()  # never reads
    async with (
        site(Settings(api_mode="local"), hub=hub) as s,
        s.http.get(s.url + "/api/v1/stream") as r,
    ):
        await read_until(r, b": connected")
        assert hub.clients == 2
        for n in range(5):
            event = Event(INCIDENT_OPENED, NOW, "incidents", {"n": n}, "email-blast", f"i{n}")
            await s.bus.publish(event)
            await s.bus.drain()  # the bus delivered it: the stalled client did not hold it
            line = await read_until(r, b"data: ")
            assert json.loads(line.removeprefix(b"data: "))["payload"] == {"n": n}
        assert stalled.dropped and hub.dropped == 1 and hub.clients == 1
        assert stalled.queue.get_nowait() is None  # its stream ends


async def test_a_closed_client_is_forgotten() -> None:
    async with site(Settings(api_mode="local")) as s:
        hub = s.dashboard.hub
        async with s.http.get(s.url + "/api/v1/stream") as r:
            await read_until(r, b": connected")
            assert hub.clients == 1
            r.close()

        async def gone() -> bool:
            await s.bus.publish(hostile_event())  # the next write finds the socket closed
            await s.bus.drain()
            return hub.clients == 0

        await eventually(gone, "the closed client is dropped", timeout=10)


async def test_closing_ends_every_stream() -> None:
    async with (
        site(Settings(api_mode="local")) as s,
        s.http.get(s.url + "/api/v1/stream") as r,
    ):
        await read_until(r, b": connected")
        s.dashboard.close()
        assert (await r.content.read()).strip() == b""  # read to its end: the server ended it


# -- token mode -------------------------------------------------------------------------


async def test_token_mode_needs_a_token_for_the_page_and_the_stream() -> None:
    async with site(token_settings()) as s:
        async with s.http.get(s.url + "/dashboard") as r:
            assert r.status == 401 and r.content_type == "text/html"
            assert 'name="token"' in await r.text()
        async with s.http.get(s.url + "/api/v1/stream") as r:
            assert r.status == 401 and r.content_type == "application/json"
            assert (await r.json())["error"]["code"] == "unauthorized"
        async with s.http.get(s.url + "/dashboard", headers=bearer()) as r:
            assert r.status == 200 and "alice" in await r.text()


async def test_the_login_form_sets_a_strict_http_only_cookie_the_api_accepts() -> None:
    async with site(token_settings()) as s:
        login = s.url + "/dashboard/login"
        async with s.http.post(login, data={"token": "wrong-token-0123456789"}) as r:
            assert r.status == 401 and COOKIE not in r.cookies
        async with s.http.post(login, data={"token": TOKENS["dave"]},
                               allow_redirects=False) as r:  # fmt: skip
            assert r.status == 303 and r.headers["Location"] == "/dashboard"
            cookie = r.cookies[COOKIE]
            assert cookie.value == TOKENS["dave"]
            assert cookie["httponly"] and cookie["samesite"] == "Strict"
        sent = {"Cookie": f"{COOKIE}={TOKENS['dave']}"}
        async with s.http.get(s.url + "/dashboard", headers=sent) as r:
            assert r.status == 200 and "dave" in await r.text()
        async with s.http.get(s.url + "/api/v1/projects", headers=sent) as r:
            assert r.status == 200
        async with s.http.get(s.url + "/api/v1/stream", headers=sent) as r:
            assert r.status == 200
            await read_until(r, b": connected")
        bad = {"Cookie": f"{COOKIE}=not-a-valid-token-at-all"}
        async with s.http.get(s.url + "/api/v1/projects", headers=bad) as r:
            assert r.status == 401
        foreign = {**sent, "Origin": "https://evil.example"}
        async with s.http.post(s.url + "/api/v1/approvals/x/approve", headers=foreign) as r:
            assert r.status == 403
        async with s.http.post(login, data={"token": TOKENS["dave"]},
                               headers={"Origin": "https://evil.example"}) as r:  # fmt: skip
            assert r.status == 403


async def test_the_api_is_off_so_is_the_dashboard() -> None:
    async with site(Settings(api_mode="off")) as s, s.http.get(s.url + "/dashboard") as r:
        assert r.status == 404
