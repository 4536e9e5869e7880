"""``POST /slack/events``: Slack's HTTP mode, on orch's own aiohttp app.

A thin translation (DESIGN §8): verify, then ``to_bolt_request`` → ``async_dispatch`` →
``to_aiohttp_response``.  The signature is checked here, before bolt, with slack_sdk's
``SignatureVerifier`` (the class bolt's own middleware uses; that middleware stays on
behind this as a second gate) because bolt's middleware logs the whole raw body at INFO on
every rejected request, and raises a 500 on a non-numeric timestamp header.  Unsigned,
tampered or stale (more than 5 minutes either way) requests get 401 and bolt never sees
them, so no listener runs.
"""

from __future__ import annotations

import logging

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier

log = logging.getLogger(__name__)

PATH = "/slack/events"
# Slack's payloads are a few KB; a view submission can reach a few hundred.
MAX_BODY = 512 * 1024


def slack_route(app: AsyncApp, signing_secret: str) -> web.RouteDef:
    verifier = SignatureVerifier(signing_secret)

    async def slack_events(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY:
            return web.json_response({"error": "request too large"}, status=413)
        raw = await request.read()
        if not _verified(verifier, raw, request):
            # Neither the body nor the signature is logged: only that it happened.
            log.info("rejected a Slack request with a missing, wrong or stale signature")
            return web.json_response({"error": "invalid request"}, status=401)
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            return web.json_response({"error": "body is not UTF-8"}, status=400)
        bolt_request = AsyncBoltRequest(
            body=body,
            query=request.query_string,
            # bolt copies these into its own lower-cased dict of lists.
            headers=request.headers,  # type: ignore[arg-type]
        )
        return await to_aiohttp_response(await app.async_dispatch(bolt_request))

    return web.post(PATH, slack_events)


def _verified(verifier: SignatureVerifier, raw: bytes, request: web.Request) -> bool:
    timestamp = request.headers.get("X-Slack-Request-Timestamp")
    signature = request.headers.get("X-Slack-Signature")
    if not timestamp or not signature or not timestamp.isascii() or not timestamp.isdigit():
        return False
    return verifier.is_valid(body=raw, timestamp=timestamp, signature=signature)
