"""A local Anthropic Messages API for tests: enough of ``POST /v1/messages`` for the real
``anthropic.AsyncAnthropic`` client pointed at it with ``base_url``.

Every request is recorded (headers, raw body bytes, parsed JSON) before it is answered, in
order, from a queue of scripted replies (``script``); when the queue is empty the
``default`` reply answers (a valid analysis unless a test changes it).  Replies:

- ``tool_answer(input)`` / ``tool_answers(...)``: a message with ``tool_use`` block(s);
- ``text_answer(text)``: prose instead of a tool call;
- ``error(status, kind, retry_after=...)``: an API error body (429 ``rate_limit_error``,
  529 ``overloaded_error``, 400 ``invalid_request_error`` …), optionally with Retry-After;
- ``hang()``: never answers until the server stops (the client's timeout fires);
- ``reset()``: closes the connection without an answer (a reset);
- ``malformed()``: HTTP 200 with a body that is not JSON.

Each answer carries ``usage``.  ``on_request`` (an async callback) runs for each request
before its reply, e.g. to move a FakeClock so latency is deterministic.  Nothing here
waits on time: a hung request waits on an event that ``stop`` sets, and
``wait_requests`` on a condition.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from agents.analysis_schema import TOOL_NAME


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: Any = None  # JSON-encoded unless ``raw`` is set
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    reset: bool = False


@dataclass(frozen=True)
class Recorded:
    headers: dict[str, str]
    body: bytes
    json: Any


def message(
    content: list[dict[str, Any]],
    *,
    stop_reason: str = "tool_use",
    usage: tuple[int, int] = (1200, 150),
    model: str = "claude-test",
) -> dict[str, Any]:
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
    }


def valid_analysis(**changes: Any) -> dict[str, Any]:
    analysis: dict[str, Any] = {
        "diagnosis": "The mailer cannot reach its database.",
        "evidence": ["ERROR connection refused db:5432"],
        "root_cause_category": "database_unavailable",
        "recommended_action": "restart",
        "confidence": 0.8,
        "risk": "low",
        "explanation": "Every send fails with connection refused since 12:00.",
    }
    analysis.update(changes)
    return analysis


_ids = itertools.count(1)


def tool_block(tool_input: Any, name: str = TOOL_NAME) -> dict[str, Any]:
    return {"type": "tool_use", "id": f"toolu_{next(_ids):04d}", "name": name, "input": tool_input}


def tool_answer(
    tool_input: Any,
    *,
    name: str = TOOL_NAME,
    usage: tuple[int, int] = (1200, 150),
    text: str | None = None,
    stop_reason: str = "tool_use",
) -> Reply:
    content = [{"type": "text", "text": text}] if text is not None else []
    return Reply(
        body=message([*content, tool_block(tool_input, name)], usage=usage, stop_reason=stop_reason)
    )


def tool_answers(*inputs: Any, usage: tuple[int, int] = (1200, 150)) -> Reply:
    return Reply(body=message([tool_block(i) for i in inputs], usage=usage))


def text_answer(text: str, usage: tuple[int, int] = (1200, 40)) -> Reply:
    return Reply(
        body=message([{"type": "text", "text": text}], stop_reason="end_turn", usage=usage)
    )


def error(
    status: int, kind: str, *, retry_after: str | None = None, retry_after_ms: str | None = None
) -> Reply:
    headers = {}
    if retry_after is not None:
        headers["retry-after"] = retry_after
    if retry_after_ms is not None:
        headers["retry-after-ms"] = retry_after_ms
    body = {"type": "error", "error": {"type": kind, "message": f"fake {kind}"}}
    return Reply(status=status, body=body, headers=headers)


def hang() -> Reply:
    return Reply(hang=True)


def reset() -> Reply:
    return Reply(reset=True)


def malformed() -> Reply:
    return Reply(raw=b'{"id": "msg_fake", "content": [')


@dataclass
class FakeAnthropic:
    default: Reply = field(default_factory=lambda: tool_answer(valid_analysis()))
    requests: list[Recorded] = field(default_factory=list)
    on_request: Callable[[], Awaitable[None]] | None = None

    def __post_init__(self) -> None:
        self._script: list[Reply] = []
        self._release = asyncio.Event()
        self._arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""

    def script(self, *replies: Reply) -> None:
        self._script.extend(replies)

    async def wait_requests(self, count: int) -> None:
        """Until at least ``count`` requests have arrived."""
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)

    @property
    def bodies(self) -> list[Any]:
        return [r.json for r in self.requests]

    async def start(self) -> None:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._messages)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = next(iter(self._runner.addresses))[1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        self.requests.append(Recorded(dict(request.headers), raw, parsed))
        async with self._arrived:
            self._arrived.notify_all()
        if self.on_request is not None:
            await self.on_request()
        reply = self._script.pop(0) if self._script else self.default
        if reply.hang:
            await self._release.wait()
            return web.Response(status=503)
        if reply.reset:
            assert request.transport is not None
            request.transport.abort()  # RST, no response
            raise asyncio.CancelledError  # the handler ends; nothing is written
        headers = {"request-id": f"req_fake_{len(self.requests)}", **reply.headers}
        if reply.raw is not None:
            return web.Response(
                status=reply.status,
                body=reply.raw,
                headers=headers,
                content_type="application/json",
            )
        return web.json_response(reply.body, status=reply.status, headers=headers)
