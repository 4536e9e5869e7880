"""The dashboard's routes: the page, its token-mode login, and the event stream.

Who may see it is who may call the API (``bot.api.auth``): in local mode the local
operator (loopback only), in token mode a valid token, given once in the login form and
kept as an HttpOnly, SameSite=Strict cookie that the API accepts too.  Deciding from the
page goes through the API's approve/deny endpoints, so the same approver mapping,
compare-and-set and audit apply as for a Slack click.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from agents.bus import EventBus
from bot.api import ApiParts, api_routes, check_api_setup
from bot.api.auth import COOKIE, Authenticator, Principal
from bot.api.errors import ApiError, guarded
from bot.api.openapi import PREFIX
from bot.cli_approvals import os_user
from bot.config import Config
from bot.dashboard.stream import StreamHub

TEMPLATES: Final = Path(__file__).resolve().parent / "templates"
# HTML: autoescape on for everything this environment renders.
HTML_ENV: Final = Environment(
    loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined,
    trim_blocks=True, lstrip_blocks=True,
)  # fmt: skip
PATH: Final = "/dashboard"
COOKIE_MAX_AGE: Final = 12 * 3600
_HEADERS: Final = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline';"
        " connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'"
    ),
}


def groups(config: Config) -> list[dict[str, Any]]:
    """The fleet by orchestrator group (ungrouped projects last), as the page's skeleton."""
    grouped: dict[str, list[str]] = {}
    for project in config.projects:
        grouped.setdefault(project.orchestrator or "", []).append(project.name)
    named = [{"name": g, "projects": ps} for g, ps in sorted(grouped.items()) if g]
    rest = [{"name": "", "projects": grouped[""]}] if "" in grouped else []
    return named + rest


def render_page(config: Config, who: Principal, mode: str) -> str:
    return HTML_ENV.get_template("dashboard.html.j2").render(
        groups=groups(config), user=who.name, local=who.local, mode=mode, prefix=PREFIX,
    )  # fmt: skip


def render_login(error: str | None = None) -> str:
    return HTML_ENV.get_template("dashboard_login.html.j2").render(error=error, path=PATH)


class Dashboard:
    """The page and the live stream of one replica."""

    def __init__(self, bus: EventBus, replica_id: str, *, hub: StreamHub | None = None) -> None:
        self.hub = hub or StreamHub()
        self.hub.register(bus, role=f"dashboard:{replica_id}")

    def close(self) -> None:
        """End the open streams, so the web server stops without waiting on them."""
        self.hub.close()

    def routes(self, parts: ApiParts) -> list[web.RouteDef]:
        """The dashboard's routes followed by the API's (``api_routes``): none when the
        API is off.  The stream route must come before the API's catch-all 404."""
        mode = check_api_setup(parts.settings)
        if mode == "off":
            return []
        auth = Authenticator(mode, parts.settings.api_tokens, parts.operator or os_user())

        async def page(request: web.Request) -> web.StreamResponse:
            try:
                who = auth.authenticate(request)
            except ApiError as exc:
                if exc.status == 401:
                    return _html(render_login(), status=401)
                return _html(f"<p>{exc.status}: forbidden</p>", status=exc.status)
            return _html(render_page(parts.config(), who, mode))

        async def login(request: web.Request) -> web.StreamResponse:
            if mode != "token":
                raise web.HTTPSeeOther(PATH)
            origin = request.headers.get("Origin")
            if origin is not None and urlsplit(origin).netloc != request.host:
                return _html("<p>403: log in from orch's own page</p>", status=403)
            form = await request.post()
            token = form.get("token")
            if not isinstance(token, str) or auth.user_for(token.strip()) is None:
                return _html(render_login("That token is not valid."), status=401)
            response = _see_other()
            response.set_cookie(COOKIE, token.strip(), max_age=COOKIE_MAX_AGE, path="/",
                                httponly=True, samesite="Strict",
                                secure=request.secure)  # fmt: skip
            return response

        async def logout(_request: web.Request) -> web.StreamResponse:
            response = _see_other()
            response.del_cookie(COOKIE, path="/")
            return response

        async def stream(request: web.Request) -> web.StreamResponse:
            auth.authenticate(request)  # an ApiError answers as JSON (guarded)
            return await self.hub.serve(request)

        async def root(_request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound(PATH)

        return [
            web.get("/", root),
            web.get(PATH, page),
            web.post(PATH + "/login", login),
            web.post(PATH + "/logout", logout),
            web.get(PREFIX + "/stream", guarded(stream)),
            *api_routes(parts),
        ]


def _html(body: str, *, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", headers=_HEADERS)


def _see_other() -> web.Response:
    return web.Response(status=303, headers={**_HEADERS, "Location": PATH})
