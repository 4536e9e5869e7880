"""``GET /metrics`` on orch's own web app, negotiated exactly as the project contract says
(docs/contract.md): JSON numbers by default, Prometheus text 0.0.4 when ``Accept`` prefers
``text/plain`` or ``application/openmetrics-text``.  So a parent orch watches this one like
any project, and a Prometheus server scrapes every ``orch_*`` metric from the same URL.
"""

from __future__ import annotations

from aiohttp import web

from bot.telemetry.registry import Telemetry
from orch_kit import prometheus


def metrics_route(telemetry: Telemetry) -> web.RouteDef:
    async def metrics(request: web.Request) -> web.Response:
        headers = {"Cache-Control": "no-store"}
        if prometheus.wants_text(request.headers.get("Accept", "")):
            headers["Content-Type"] = prometheus.CONTENT_TYPE
            return web.Response(body=await telemetry.exposition(), headers=headers)
        return web.json_response(await telemetry.contract_numbers(), headers=headers)

    return web.get("/metrics", metrics)
