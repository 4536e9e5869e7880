"""orch's HTTP API under ``/api/v1/`` (issue 8): the fleet, its history, incidents,
events, actions, approvals and analyses, and deciding approvals as a Slack click does.
``docs/api.md`` describes it; ``GET /api/v1/openapi.json`` is its OpenAPI document.

Mount it with ``api_routes(ApiParts(...))`` on the web app (``bot.web.make_web_app``)."""

from bot.api.auth import ApiSetupError, api_mode, check_api_setup
from bot.api.routes import ApiParts, api_routes

__all__ = ["ApiParts", "ApiSetupError", "api_mode", "api_routes", "check_api_setup"]
