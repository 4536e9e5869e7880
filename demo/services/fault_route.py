"""Demo only: ``POST /_demo/fault`` on a supervisor port, signed exactly like ``/control``.

Lets another process (``orch demo``'s story, the dashboard) break ``orch fleet``'s
services.  Not part of the contract: real services must not have it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import web

from demo.faults import FAULTS
from orch_kit import Authenticator

Handler = Callable[[web.Request], Awaitable[web.Response]]


class Breakable(Protocol):
    name: str

    @property
    def faults(self) -> set[str]: ...

    def inject(self, fault: str) -> Awaitable[None]: ...

    def clear(self, fault: str | None = None) -> Awaitable[None]: ...


def fault_route(service: Breakable, auth: Authenticator) -> Handler:
    """``{"fault": "crash", "clear": false}`` → 200 ``{"project", "faults"}``;
    ``clear: true`` with ``fault: null`` clears everything."""

    async def handle(request: web.Request) -> web.Response:
        body = await auth.body(request)  # 401 before anything else
        try:
            data = json.loads(body)
        except ValueError:
            return _error("body is not valid JSON")
        if not isinstance(data, dict):
            return _error("body must be a JSON object")
        fault, clear = data.get("fault"), data.get("clear", False)
        if not isinstance(clear, bool):
            return _error("clear must be true or false")
        if fault is not None and fault not in FAULTS:
            return _error(f"fault must be one of {', '.join(FAULTS)}, got {fault!r}")
        if clear:
            await service.clear(fault)
        elif fault is not None:
            await service.inject(fault)
        else:
            return _error("fault is required unless clear is true")
        return web.json_response({"project": service.name, "faults": sorted(service.faults)})

    return handle


def _error(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)
