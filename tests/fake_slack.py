"""A local Slack for tests: Web API, response_urls and a Socket Mode WebSocket.

- ``POST|GET /api/<method>``: records ``(method, params, token)`` in order and answers like
  Slack for the methods orch uses (``usergroups.users.list`` from ``usergroups``);
  ``fail()`` makes a method answer 429 with Retry-After, HTTP 500, or ``{"ok": false,
  "error": ...}`` for its next calls, or ``stall()`` makes it hang until ``unstall()``
  (a timeout, without waiting on time in the fake).
- ``POST /response/<name>``: a response_url; records the JSON it receives (method
  ``"response_url"``, params = the JSON plus ``_name``).
- File uploads as ``files_upload_v2`` makes them: ``files.getUploadURLExternal`` hands out
  ``POST /upload/<file_id>`` on this server, which records the bytes (method
  ``"file_upload"``; ``uploads[file_id]`` keeps them; ``fail("file_upload", status=500)``
  refuses one), and ``files.completeUploadExternal`` answers with the files it shared.
- ``GET /socket``: the Socket Mode endpoint ``apps.connections.open`` points at.  It
  greets with ``hello``; ``send_envelope`` pushes an envelope to the connected client and
  ``wait_ack`` returns what the client sent back for it.

Everything waits on conditions (``wait_for``, ``wait_ack``), never on time.  Also here:
building and signing requests exactly as Slack does (``SignatureVerifier``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import WSMsgType, web
from slack_sdk.signature import SignatureVerifier

TEAM_ID = "T0TEST"
BOT_USER_ID = "U0BOT"


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    token: str | None = None


@dataclass
class Failure:
    status: int = 200
    error: str | None = None
    retry_after: int | None = None
    times: int = 1


@dataclass
class FakeSlack:
    usergroups: dict[str, list[str]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    acks: list[dict[str, Any]] = field(default_factory=list)
    uploads: dict[str, bytes] = field(default_factory=dict)  # file id -> the bytes POSTed

    def __post_init__(self) -> None:
        self._failures: dict[str, list[Failure]] = {}
        self._stalled: dict[str, asyncio.Event] = {}
        self._changed: asyncio.Condition | None = None
        self._sockets: list[web.WebSocketResponse] = []
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        self._changed = asyncio.Condition()
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)  # slack_sdk GETs some (usergroups.*)
        app.router.add_post("/response/{name}", self._response_url)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/socket", self._socket)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = next(iter(self._runner.addresses))[1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        for method in list(self._stalled):
            self.unstall(method)
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def response_url(self, name: str = "r") -> str:
        return f"{self.url}/response/{name}"

    # -- configuration and inspection ----------------------------------------------------
    def fail(
        self,
        method: str,
        *,
        status: int = 200,
        error: str | None = None,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """The next ``times`` calls of ``method`` fail: HTTP ``status`` (429 adds
        Retry-After), or ``ok: false`` with ``error``."""
        self._failures.setdefault(method, []).append(Failure(status, error, retry_after, times))

    def stall(self, method: str) -> None:
        """Calls of ``method`` hang (recorded, unanswered) until ``unstall``."""
        self._stalled.setdefault(method, asyncio.Event())

    def unstall(self, method: str) -> None:
        event = self._stalled.pop(method, None)
        if event is not None:
            event.set()

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def methods(self, *, ignore: tuple[str, ...] = ("auth.test",)) -> list[str]:
        """Every method called so far, in order (auth.test left out by default)."""
        return [c.method for c in self.calls if c.method not in ignore]

    async def wait_for(self, method: str, count: int = 1, timeout: float = 5) -> list[Call]:
        await self._wait(lambda: len(self.calls_to(method)) >= count, timeout)
        return self.calls_to(method)

    async def wait_socket(self, timeout: float = 5) -> None:
        await self._wait(lambda: bool(self._sockets), timeout)

    async def send_envelope(
        self, type_: str, payload: dict[str, Any], *, retry_attempt: int | None = None
    ) -> str:
        envelope_id = f"env-{next(self._ids)}"
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id,
            "type": type_,
            "payload": payload,
            "accepts_response_payload": type_ != "events_api",
        }
        if type_ == "events_api":
            envelope["retry_attempt"] = retry_attempt or 0
            envelope["retry_reason"] = "timeout" if retry_attempt else ""
        await self._sockets[-1].send_str(json.dumps(envelope))
        return envelope_id

    async def wait_ack(self, envelope_id: str, timeout: float = 5) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((a for a in self.acks if a.get("envelope_id") == envelope_id), None)

        await self._wait(lambda: found() is not None, timeout)
        ack = found()
        assert ack is not None
        return ack

    async def _wait(self, predicate: Any, timeout: float) -> None:
        assert self._changed is not None
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    async def _record(self, call: Call) -> None:
        assert self._changed is not None
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()

    def _next_failure(self, method: str) -> Failure | None:
        queue = self._failures.get(method)
        if not queue:
            return None
        failure = queue[0]
        failure.times -= 1
        if failure.times <= 0:
            queue.pop(0)
        return failure

    # -- handlers ------------------------------------------------------------------------
    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            params.update(await request.json())
        elif request.can_read_body:
            params.update(dict(await request.post()))
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth else params.get("token")
        await self._record(Call(method, params, token))
        stalled = self._stalled.get(method)
        if stalled is not None:
            await stalled.wait()
        failure = self._next_failure(method)
        if failure is not None:
            return _failure_response(failure)
        return web.json_response({"ok": True, **self._answer(method, params)})

    def _answer(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        ts = f"{time.time():.6f}"
        if method == "auth.test":
            return {
                "url": "https://orch-test.slack.com/",
                "team": "orch-test",
                "user": "orch",
                "team_id": TEAM_ID,
                "user_id": BOT_USER_ID,
                "bot_id": "B0BOT",
                "is_enterprise_install": False,
            }
        if method in ("chat.postMessage", "chat.update"):
            return {"channel": params.get("channel"), "ts": params.get("ts") or ts}
        if method == "chat.postEphemeral":
            return {"message_ts": ts}
        if method == "views.publish":
            return {"view": {"id": "V0HOME", **(_as_dict(params.get("view")))}}
        if method == "apps.connections.open":
            return {"url": self.url.replace("http://", "ws://") + "/socket?ticket=t"}
        if method == "usergroups.users.list":
            return {"users": self.usergroups.get(str(params.get("usergroup")), [])}
        if method == "files.getUploadURLExternal":
            file_id = f"F{next(self._ids):08d}"
            return {"upload_url": f"{self.url}/upload/{file_id}", "file_id": file_id}
        if method == "files.completeUploadExternal":
            files = _as_list(params.get("files"))
            return {"files": [{"id": f.get("id"), "title": f.get("title")} for f in files]}
        return {}

    async def _upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        data = await request.read()
        failure = self._next_failure("file_upload")
        if failure is None:
            self.uploads[file_id] = data
        await self._record(Call("file_upload", {"file_id": file_id, "length": len(data)}))
        if failure is not None:
            return web.Response(status=failure.status, text="upload refused")
        return web.Response(text=f"OK - {len(data)}")

    async def _response_url(self, request: web.Request) -> web.Response:
        body = await request.json()
        await self._record(Call("response_url", {**body, "_name": request.match_info["name"]}))
        failure = self._next_failure("response_url")
        if failure is not None:
            return _failure_response(failure)
        return web.Response(text="ok")

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        hello = {"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0"}}
        await ws.send_str(json.dumps(hello))
        assert self._changed is not None
        async with self._changed:
            self._sockets.append(ws)
            self._changed.notify_all()
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    async with self._changed:
                        self.acks.append(json.loads(message.data))
                        self._changed.notify_all()
        finally:
            self._sockets.remove(ws)
        return ws


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(value)
    return value if isinstance(value, dict) else {}


def _as_list(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        value = json.loads(value)
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _failure_response(failure: Failure) -> web.Response:
    if failure.status == 429:
        headers = {"Retry-After": str(failure.retry_after or 1)}
        return web.json_response({"ok": False, "error": "ratelimited"}, status=429, headers=headers)
    if failure.status >= 500:
        return web.Response(status=failure.status, text="upstream trouble")
    return web.json_response({"ok": False, "error": failure.error or "fatal_error"})


# -- requests into orch, built and signed like Slack's ---------------------------------

_trigger_ids = itertools.count(1)


def slash_command(text: str, response_url: str, **overrides: str) -> dict[str, str]:
    """The fields of a slash-command request (form-encoded over HTTP, JSON in Socket Mode)."""
    fields = {
        "token": "deprecated-verification-token",
        "team_id": TEAM_ID,
        "team_domain": "orch-test",
        "channel_id": "C0OPS",
        "channel_name": "ops",
        "user_id": "U0ASKER",
        "user_name": "asker",
        "command": "/orch",
        "text": text,
        "api_app_id": "A0ORCH",
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": f"{next(_trigger_ids)}.1.abcdef",
    }
    fields.update(overrides)
    return fields


def form_body(fields: dict[str, str]) -> str:
    return urlencode(fields)


def block_action(
    action_id: str,
    value: str,
    *,
    user: str = "U0ASKER",
    response_url: str | None = None,
    container: str = "message",
    channel: str = "C0OPS",
    message_ts: str = "1700000000.000100",
) -> dict[str, Any]:
    """A ``block_actions`` payload for one button click, on a message (with its channel
    and response_url) or on the App Home (``container="view"``: neither)."""
    trigger = f"{next(_trigger_ids)}.1.abcdef"
    payload: dict[str, Any] = {
        "type": "block_actions",
        "team": {"id": TEAM_ID, "domain": "orch-test"},
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM_ID},
        "api_app_id": "A0ORCH",
        "token": "deprecated-verification-token",
        "trigger_id": trigger,
        "is_enterprise_install": False,
        "enterprise": None,
        "actions": [
            {"action_id": action_id, "block_id": "approval", "value": value, "type": "button",
             "text": {"type": "plain_text", "text": "Approve"}, "action_ts": "1700000001.0"}
        ],
    }  # fmt: skip
    if container == "view":
        payload["container"] = {"type": "view", "view_id": "V0HOME"}
        payload["view"] = {"id": "V0HOME", "type": "home", "team_id": TEAM_ID, "blocks": []}
    else:
        payload["container"] = {"type": "message", "message_ts": message_ts,
                                "channel_id": channel, "is_ephemeral": False}  # fmt: skip
        payload["channel"] = {"id": channel, "name": "ops"}
        payload["message"] = {"type": "message", "ts": message_ts, "text": "approval"}
        payload["response_url"] = response_url or "http://127.0.0.1:9/response/none"
    return payload


def interactive_body(payload: dict[str, Any]) -> str:
    """How Slack posts an interaction: form-encoded, the JSON in ``payload``."""
    return urlencode({"payload": json.dumps(payload)})


def event_callback(event: dict[str, Any], event_id: str) -> dict[str, Any]:
    return {
        "token": "deprecated-verification-token",
        "team_id": TEAM_ID,
        "api_app_id": "A0ORCH",
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(time.time()),
        "authorizations": [{"team_id": TEAM_ID, "user_id": BOT_USER_ID, "is_bot": True}],
    }


def signed_headers(
    secret: str, body: str, *, timestamp: int | None = None, content_type: str | None = None
) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    assert signature is not None
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature,
        "Content-Type": content_type or "application/x-www-form-urlencoded",
    }
