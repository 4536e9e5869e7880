"""The API's aiohttp routes, mounted on orch's web app (``bot.web.make_web_app(routes=)``).

Every handler is ``guarded`` (any failure answers JSON, never a traceback); a path's other
methods answer 405 with ``Allow``, and unknown paths under the prefix 404, as JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from slack_sdk.web.async_client import AsyncWebClient

from agents.clock import Clock
from bot.api.auth import Authenticator, Principal, check_api_setup
from bot.api.context import ApiContext, Call, Endpoint
from bot.api.endpoints import ENDPOINTS
from bot.api.errors import Handler, guarded, not_allowed, not_found
from bot.api.openapi import PREFIX
from bot.api.params import parse_query
from bot.cli_approvals import os_user
from bot.config import Config
from bot.settings import Settings
from bot.slack.approvers import Approvers
from storage.base import Store

_ANONYMOUS = Principal("anonymous", local=False)


@dataclass(frozen=True)
class ApiParts:
    """What the API needs from the running orch."""

    store: Store
    config: Callable[[], Config]
    clock: Clock
    settings: Settings
    wake: Callable[[], None]  # the outbox relay's wake
    slack_client: AsyncWebClient | None = None  # for user-group approvers; None: ids only
    operator: str | None = None  # local mode's actor; None: the OS user


def api_routes(parts: ApiParts) -> list[web.RouteDef]:
    """The API's routes; none when it is off.  ApiSetupError when the settings do not
    allow serving it (local mode on a non-loopback host, token mode without tokens)."""
    mode = check_api_setup(parts.settings)
    if mode == "off":
        return []
    auth = Authenticator(mode, parts.settings.api_tokens, parts.operator or os_user())
    api = ApiContext(parts.store, parts.config, parts.clock, auth,
                     Approvers(parts.slack_client, parts.clock), parts.wake)  # fmt: skip
    methods: dict[str, list[str]] = {}
    for ep in ENDPOINTS:
        methods.setdefault(ep.path, []).append(ep.method)
    routes: list[web.RouteDef] = []
    for path, allowed in methods.items():
        for ep in (e for e in ENDPOINTS if e.path == path):
            routes.append(web.route(ep.method, PREFIX + path, _handler(api, ep)))
        shown = [*allowed, "HEAD"] if "GET" in allowed else allowed
        routes.append(web.route("*", PREFIX + path, guarded(not_allowed(shown))))
    routes.append(web.route("*", PREFIX, guarded(not_found)))
    routes.append(web.route("*", PREFIX + "/{tail:.*}", guarded(not_found)))
    return routes


def _handler(api: ApiContext, ep: Endpoint) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        who = _ANONYMOUS if ep.public else api.auth.authenticate(request)
        query = parse_query(request, ep.query)
        return await ep.handler(api, Call(request, who, query))

    return guarded(handle)
