"""Every answer of the API that is not a success: ``{"error": {"code", "message",
"where"?, "details"?}}``, as JSON, whatever went wrong.

Bad input is an ``ApiError`` raised where it is found (400 naming the parameter, 404
naming what is unknown, ...).  ``guarded`` wraps every API handler: it turns an
``ApiError`` into its answer, aiohttp's own HTTP errors (a body over the size limit, ...)
into the same JSON shape, and anything unexpected into a 500 that says nothing of the
cause (the traceback goes to the log, never to the client).  Unknown paths under the
prefix and methods a path does not have get JSON too (``not_found``, ``not_allowed``):
aiohttp's router answers those in plain text otherwise.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final

from aiohttp import web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# API answers are never cached by a browser or a proxy: they change with every probe.
HEADERS: Final = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
_CODES: Final = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "body_too_large",
    415: "unsupported_media_type", 500: "internal",
}  # fmt: skip


class ApiError(Exception):
    """An answer other than success, with a message for people: what was wrong, and
    ``where`` (``query.limit``, ``path.name``, ``body.reason``, ``header.Authorization``)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        where: str | None = None,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.where = where
        self.details = dict(details) if details else None
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.where is not None:
            error["where"] = self.where
        if self.details is not None:
            error["details"] = self.details
        return json_response({"error": error}, status=self.status, headers=self.headers)


def bad_parameter(name: str, message: str, where: str = "query") -> ApiError:
    return ApiError(400, "bad_parameter", f"{name}: {message}", where=f"{where}.{name}")


def jsonable(value: Any) -> Any:
    """``value`` with every non-finite float (a NaN metric in an event's payload) as null:
    JSON has no NaN, and a browser's ``JSON.parse`` refuses it."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def json_response(
    body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    text = json.dumps(jsonable(body), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return web.Response(
        text=text, status=status, content_type="application/json",
        headers={**HEADERS, **(headers or {})},
    )  # fmt: skip


def guarded(handler: Handler) -> Handler:
    """``handler`` whose every failure is answered as JSON."""

    async def guard(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return exc.response()
        except web.HTTPException as exc:  # aiohttp's own: 413 from a body over the limit
            if exc.status < 400:
                raise
            code = _CODES.get(exc.status, "error")
            if exc.status == 413:
                return ApiError(413, code, "the body is too large", where="body").response()
            return ApiError(exc.status, code, exc.reason or code).response()
        except Exception:
            log.exception("%s %s failed", request.method, request.rel_url.path)
            return ApiError(500, "internal", "orch failed to answer; the log says why").response()

    return guard


async def not_found(request: web.Request) -> web.StreamResponse:
    """Any path under the API's prefix that no endpoint has."""
    path = request.rel_url.path
    shown = path if len(path) <= 200 else path[:200] + "…"
    return ApiError(404, "not_found", f"no endpoint {shown}; GET /api/v1/openapi.json lists them",
                    where="path").response()  # fmt: skip


def not_allowed(methods: Iterable[str]) -> Handler:
    """A path's answer to a method it does not have: 405 with ``Allow``."""
    allow = ", ".join(sorted(set(methods)))

    async def answer(request: web.Request) -> web.StreamResponse:
        return ApiError(405, "method_not_allowed", f"{request.method} is not allowed here;"
                        f" allowed: {allow}", headers={"Allow": allow}).response()  # fmt: skip

    return answer
