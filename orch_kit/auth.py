"""Authenticate a signed request before anything else looks at it."""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable

from aiohttp import web

from orch_kit import signing

log = logging.getLogger("orch_kit.auth")
MAX_BODY = 64 * 1024  # a control call is a few hundred bytes; don't buffer more unsigned
# Signatures remembered to refuse a replay. Past this many within one window the oldest
# are forgotten; the idempotency key still keeps a forgotten replay from acting twice.
MAX_REMEMBERED = 10_000


class Authenticator:
    """Checks ``X-Orch-Timestamp`` / ``X-Orch-Signature`` against one secret.

    ``now`` returns Unix seconds; it is injected so tests can present stale and future
    timestamps without waiting.  Refusals are counted and logged with the route, the peer
    and the reason, never the body or a signature.

    A request whose exact signature was already accepted within the window is a replay
    (someone captured it): refused, though it would act at most once anyway because of
    its idempotency key. A sender retrying on purpose signs again, at a new timestamp.
    """

    def __init__(
        self, secret: bytes, now: Callable[[], float], window: float = signing.WINDOW_S
    ) -> None:
        if not secret:
            raise ValueError("a signed route needs a non-empty secret")
        self._secret = secret
        self._now = now
        self.window = window
        self.refused = 0
        self._seen: OrderedDict[str, int] = OrderedDict()  # signature -> its timestamp

    async def body(self, request: web.Request) -> bytes:
        """The raw body of an authentic request; raises a 401 JSON answer otherwise."""
        if (request.content_length or 0) > MAX_BODY:
            self.refused += 1
            raise web.HTTPRequestEntityTooLarge(
                max_size=MAX_BODY,
                actual_size=request.content_length or 0,
                text=json.dumps({"error": f"body larger than {MAX_BODY} bytes"}),
                content_type="application/json",
            )
        body = await request.read()
        reason = signing.check(
            self._secret,
            request.headers.get(signing.TIMESTAMP_HEADER),
            request.headers.get(signing.SIGNATURE_HEADER),
            body,
            self._now(),
            self.window,
        )
        signature = request.headers.get(signing.SIGNATURE_HEADER, "").lower()
        if reason is None:
            reason = self._replayed(signature, request.headers[signing.TIMESTAMP_HEADER])
        if reason is not None:
            self.refused += 1
            log.warning(
                "refused %s %s from %s: %s", request.method, request.path, request.remote, reason
            )
            raise web.HTTPUnauthorized(
                text=json.dumps({"error": f"unauthorized: {reason}"}),
                content_type="application/json",
            )
        return body

    def _replayed(self, signature: str, timestamp: str) -> str | None:
        """Remember an authentic signature; a second use of one is the reason to refuse."""
        now = self._now()
        while self._seen and (
            len(self._seen) >= MAX_REMEMBERED or now - next(iter(self._seen.values())) > self.window
        ):
            self._seen.popitem(last=False)  # out of the window: stale anyway
        if signature in self._seen:
            return "replayed request (this signature was already used)"
        self._seen[signature] = int(timestamp)
        return None
