"""Signed calls to a project's ``/control`` (DESIGN §3).

The Action Executor builds on this; the demo's scripted "operator" uses it directly.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import aiohttp

from orch_kit.signing import signed_headers


async def send_control(
    session: aiohttp.ClientSession,
    base_url: str,
    secret: bytes,
    action: str,
    *,
    idempotency_key: str | None = None,
    timeout: float = 5.0,
    now: float | None = None,
) -> tuple[int, dict[str, Any]]:
    """POST {base_url}/control; return (HTTP status, JSON answer or {})."""
    body = json.dumps(
        {"action": action, "idempotency_key": idempotency_key or uuid.uuid4().hex}
    ).encode()
    headers = {"Content-Type": "application/json"}
    headers.update(signed_headers(secret, body, time.time() if now is None else now))
    async with session.post(
        f"{base_url}/control",
        data=body,
        headers=headers,
        allow_redirects=False,
        timeout=aiohttp.ClientTimeout(total=timeout),
    ) as response:
        try:
            answer = await response.json(content_type=None)
        except (ValueError, aiohttp.ContentTypeError):
            answer = {}
        return response.status, answer if isinstance(answer, dict) else {}
