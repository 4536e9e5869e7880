"""What every API handler gets: the parts of orch it reads (``ApiContext``) and the call
it answers (``Call``: who, the parsed query, the path's parameters); and how an endpoint
is declared (``Endpoint``), once, for both the router and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from agents.clock import Clock
from bot.api.auth import Authenticator, Principal
from bot.api.errors import ApiError
from bot.api.params import QueryParam
from bot.config import Config, Project
from bot.slack.approvers import Approvers
from storage.base import Store


@dataclass(frozen=True)
class ApiContext:
    store: Store
    config: Callable[[], Config]  # the config as it is now (a reload swaps it)
    clock: Clock
    auth: Authenticator
    approvers: Approvers  # who approves which project (Slack user groups, when Slack is on)
    wake: Callable[[], None]  # the outbox relay's: a decision's event is published at once


@dataclass(frozen=True)
class Call:
    request: web.Request
    who: Principal
    query: Mapping[str, Any]

    def path(self, name: str) -> str:
        return self.request.match_info[name]


Handler = Callable[[ApiContext, Call], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Endpoint:
    method: str  # GET | POST
    path: str  # under the prefix, e.g. /projects/{name}
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    ok: str  # the component schema of the 200 answer
    query: tuple[QueryParam, ...] = ()
    errors: tuple[int, ...] = ()  # besides 401 (token mode), 403 (local mode) and 500
    body: str | None = None  # the component schema of an optional JSON body
    public: bool = False  # answered without authentication (the OpenAPI document)
    description: str = ""


def configured(config: Config, name: str, where: str) -> Project:
    """The project ``name`` as configured now, or a 404 saying which."""
    try:
        return config.project(name)
    except KeyError:
        raise ApiError(404, "unknown_project", f"no project {name[:64]!r} is configured",
                       where=where) from None  # fmt: skip
