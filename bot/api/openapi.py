"""The OpenAPI 3.1 document of the API, built from the same ``Endpoint`` table the router
mounts (``bot.api.endpoints``), so every path, parameter and answer it lists is one the
code has.  Served at GET /api/v1/openapi.json; ``docs/api.md`` explains it for people."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

from bot import __version__
from bot.api.auth import Mode
from bot.api.context import Endpoint
from bot.api.schemas import SCHEMAS, ref
from bot.config_values import NAME_PATTERN

PREFIX: Final = "/api/v1"
_PATH_PARAMS: Final[dict[str, dict[str, Any]]] = {
    "name": {"description": "A configured project's name.",
             "schema": {"type": "string", "pattern": NAME_PATTERN, "maxLength": 63}},
    "id": {"description": "An id as the API shows it (32 hex digits).",
           "schema": {"type": "string", "minLength": 1, "maxLength": 64}},
}  # fmt: skip
_WHY: Final = {
    400: "A query parameter (or one it does not have) or the body is not valid; the error"
    " names it.",
    401: "No token, or not a valid one (token mode).",
    403: "Not allowed: not an approver, four-eyes, or (local mode) a request from another"
    " host or origin.",
    404: "Unknown project, incident or approval; the error says which.",
    409: "Already decided (by whom and when is in details), expired, or no longer allowed by"
    " the configuration.",
    413: "The body is larger than 1 MiB.",
    500: "orch failed; the log says why (never bad input).",
}
_DESCRIPTION: Final = """\
orch's HTTP API: the fleet, its history, incidents, events, actions, approvals and
analyses, and deciding approvals.  Every answer is JSON; every error is
`{"error": {"code", "message", "where"?, "details"?}}`.  Instants are ISO 8601 UTC.
Lists are newest first, a page at a time (`limit`, `offset`, `page.next_offset`).
See docs/api.md."""


def document(endpoints: Sequence[Endpoint], mode: Mode) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        paths.setdefault(PREFIX + ep.path, {})[ep.method.lower()] = _operation(ep, mode)
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "orch API", "version": __version__, "description": _DESCRIPTION},
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }
    if mode == "token":
        doc["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "A token from ORCH_API_TOKENS."},
        }  # fmt: skip
        doc["security"] = [{"bearer": []}]
    return doc


def _operation(ep: Endpoint, mode: Mode) -> dict[str, Any]:
    params = [{"name": n, "in": "path", "required": True, **_PATH_PARAMS[n]}
              for n in re.findall(r"{(\w+)}", ep.path)]  # fmt: skip
    params += [p.openapi() for p in ep.query]
    statuses = set(ep.errors) | {400, 500}  # 400: a parameter it does not have, too
    if ep.body:
        statuses.add(413)
    if not ep.public:
        statuses.add(403)
        if mode == "token":
            statuses.add(401)
    error = {"content": {"application/json": {"schema": ref("Error")}}}
    responses: dict[str, Any] = {
        "200": {"description": "OK", "content": {"application/json": {"schema": ref(ep.ok)}}}
    }
    responses |= {str(s): {"description": _WHY[s], **error} for s in sorted(statuses)}
    op: dict[str, Any] = {
        "operationId": ep.operation_id, "summary": ep.summary, "tags": [ep.tag],
        "parameters": params, "responses": responses,
    }  # fmt: skip
    if ep.description:
        op["description"] = ep.description
    if ep.body:
        op["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": ref(ep.body)}},
        }
    if ep.public:
        op["security"] = []
    return op
