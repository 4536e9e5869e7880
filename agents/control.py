"""Signed calls to a project's ``/control`` (DESIGN §3).

The Action Executor builds on this; the demo's scripted "operator" uses it directly.
"""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp

from orch_kit.client import post_signed


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
    payload = {"action": action, "idempotency_key": idempotency_key or uuid.uuid4().hex}
    return await post_signed(
        session, f"{base_url}/control", payload, secret, now=now, timeout=timeout
    )
