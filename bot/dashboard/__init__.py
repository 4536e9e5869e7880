"""orch's dashboard (issue 8): one HTML page served by orch's web app, filled from the
HTTP API (``bot.api``) and kept live by server-sent events (``GET /api/v1/stream``).

The runtime builds one ``Dashboard`` per replica before the bus starts (its stream
subscribes as ``dashboard:<replica_id>``) and mounts ``dashboard.routes(parts)`` in place
of ``api_routes(parts)``: the dashboard's routes, then the API's."""

from bot.dashboard.page import Dashboard
from bot.dashboard.stream import StreamHub

__all__ = ["Dashboard", "StreamHub"]
