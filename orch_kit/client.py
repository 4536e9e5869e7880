"""The calling side of the contract's signed POSTs (``/control``, the demo fault route).

One function, so every caller signs exactly what it sends: the JSON body is encoded once
and the same bytes are signed and posted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import aiohttp

from orch_kit.signing import signed_headers


async def post_signed(
    session: aiohttp.ClientSession,
    url: str,
    payload: Mapping[str, Any],
    secret: bytes,
    *,
    now: float | None = None,
    timeout: float = 5.0,
    raise_for_status: bool = False,
) -> tuple[int, dict[str, Any]]:
    """POST ``payload`` as JSON signed with ``secret``; return (HTTP status, JSON object
    answer or {}).  Redirects are never followed: a signed call goes where it was sent.
    With ``raise_for_status`` a 4xx/5xx raises ``aiohttp.ClientResponseError``."""
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    headers.update(signed_headers(secret, body, time.time() if now is None else now))
    async with session.post(
        url,
        data=body,
        headers=headers,
        allow_redirects=False,
        timeout=aiohttp.ClientTimeout(total=timeout),
    ) as response:
        if raise_for_status:
            response.raise_for_status()
        try:
            answer = await response.json(content_type=None)
        except (ValueError, aiohttp.ContentTypeError):
            answer = {}
        return response.status, answer if isinstance(answer, dict) else {}
