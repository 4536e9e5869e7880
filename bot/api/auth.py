"""Who is calling the API, and whether orch serves it at all.

Modes (``ORCH_API_MODE``; unset: ``token`` when ``ORCH_API_TOKENS`` is set, else ``off``):

- ``off``: no API routes.
- ``local`` (``orch demo``): orch must listen on a loopback address (refused otherwise,
  at start-up).  Every request is the local operator (audited as the OS user, actor kind
  ``operator``, as ``orch approve`` at a terminal is) and may approve.  A web page in the
  operator's browser must not be able to use that: requests addressed to any other host
  (DNS rebinding) or coming from a page of any other origin are refused (403).
- ``token``: ``Authorization: Bearer <token>``; the tokens and their users come from
  ``ORCH_API_TOKENS``.  No token or an unknown one: 401.  Every valid token may read;
  deciding needs the user mapped to a Slack approver (``api_users``, checked per request
  in ``bot.api.approvals``).  A browser may present the token instead as the dashboard's
  login cookie (``COOKIE``: HttpOnly, SameSite=Strict); a cookie-carrying request from a
  page of another origin is refused (403).  Tokens are compared as SHA-256 digests with
  ``hmac.compare_digest``, against every token, so the time taken says nothing about them.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlsplit

from aiohttp import web

from bot.api.errors import ApiError
from bot.config_values import is_loopback_host
from bot.settings import Settings

Mode = Literal["off", "local", "token"]
_CHALLENGE: Final = 'Bearer realm="orch"'
COOKIE: Final = "orch_token"  # the dashboard's login (bot.dashboard), a token as in the header


class ApiSetupError(ValueError):
    """The API cannot be served as configured; the message says what to change."""


def api_mode(settings: Settings) -> Mode:
    mode = settings.api_mode or ("token" if settings.api_tokens else "off")
    if mode not in ("off", "local", "token"):
        raise ApiSetupError(f"ORCH_API_MODE must be off, local or token, got {mode!r}")
    return mode  # type: ignore[return-value]


def check_api_setup(settings: Settings) -> Mode:
    """The mode, or ApiSetupError when it cannot be served as configured."""
    mode = api_mode(settings)
    if mode == "local" and not is_loopback_host(settings.host):
        raise ApiSetupError(
            f"ORCH_API_MODE=local lets anyone who reaches orch approve, so it is served only"
            f" on a loopback address, not on {settings.host!r}: set ORCH_HOST=127.0.0.1, or"
            " use ORCH_API_MODE=token with ORCH_API_TOKENS"
        )
    if mode == "token" and not settings.api_tokens:
        raise ApiSetupError("ORCH_API_MODE=token needs ORCH_API_TOKENS (user:token,...)")
    return mode


@dataclass(frozen=True, slots=True)
class Principal:
    name: str  # the API user (token mode) or the OS user running orch (local mode)
    local: bool  # the local operator (local mode): may decide without a Slack mapping


class Authenticator:
    def __init__(self, mode: Mode, tokens: Mapping[str, str], operator: str) -> None:
        if mode == "off":
            raise ApiSetupError("the API is off")
        self.mode = mode
        self._operator = operator
        self._digests = [(_digest(t), user) for t, user in tokens.items()]

    def authenticate(self, request: web.Request) -> Principal:
        if self.mode == "local":
            _check_local(request)
            return Principal(self._operator, local=True)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.strip().partition(" ")
        if not header and COOKIE in request.cookies:
            return self._from_cookie(request)
        if not header:
            raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>",
                           where="header.Authorization",
                           headers={"WWW-Authenticate": _CHALLENGE})  # fmt: skip
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "the Authorization header must be Bearer <token>",
                           where="header.Authorization",
                           headers={"WWW-Authenticate": _CHALLENGE})  # fmt: skip
        user = self._user(token.strip())
        if user is None:
            challenge = f'{_CHALLENGE}, error="invalid_token"'
            raise ApiError(401, "unauthorized", "that token is not valid",
                           where="header.Authorization",
                           headers={"WWW-Authenticate": challenge})  # fmt: skip
        return Principal(user, local=False)

    def user_for(self, token: str) -> str | None:
        """The user of ``token`` (token mode), None when it is not valid."""
        return self._user(token) if self.mode == "token" else None

    def _from_cookie(self, request: web.Request) -> Principal:
        user = self._user(request.cookies[COOKIE])
        if user is None:
            raise ApiError(401, "unauthorized", "the login cookie is not valid: log in again",
                           where="cookie", headers={"WWW-Authenticate": _CHALLENGE})  # fmt: skip
        origin = request.headers.get("Origin")
        if origin is not None and _netloc(origin) != request.host:
            raise ApiError(403, "forbidden", "a login cookie is accepted only from orch's own"
                           " pages", where="header.Origin")  # fmt: skip
        return Principal(user, local=False)

    def _user(self, token: str) -> str | None:
        presented = _digest(token)
        found = None
        for digest, user in self._digests:  # every one, found or not: constant time
            if hmac.compare_digest(presented, digest):
                found = user
        return found


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def _check_local(request: web.Request) -> None:
    host = request.headers.get("Host")
    if host is not None and not is_loopback_host(_hostname(host)):
        raise ApiError(403, "forbidden", "in local mode orch answers only requests addressed to"
                       " 127.0.0.1 or localhost", where="header.Host")  # fmt: skip
    origin = request.headers.get("Origin")
    if origin is not None and not _loopback_origin(origin):
        raise ApiError(403, "forbidden", "in local mode orch answers only its own pages, not"
                       " pages from other origins", where="header.Origin")  # fmt: skip


def _netloc(origin: str) -> str | None:
    try:
        return urlsplit(origin).netloc
    except ValueError:
        return None


def _hostname(host: str) -> str:
    """The host of a Host header (``127.0.0.1:8080``, ``[::1]:8080``, ``localhost``)."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _loopback_origin(origin: str) -> bool:
    try:
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and is_loopback_host(parts.hostname or "")
    except ValueError:
        return False
