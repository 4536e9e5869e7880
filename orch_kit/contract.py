"""The five contract routes, built from a service's callbacks.

One :class:`Contract` may be mounted on several apps (the service port and a supervisor
port that only serves ``/control``); they then share the idempotency memory and counters,
so a retry that arrives on the other port still acts once.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from aiohttp import web

from orch_kit import prometheus, signing
from orch_kit.auth import Authenticator
from orch_kit.idempotency import IdempotencyCache, KeyConflict
from orch_kit.model import (
    ACTIONS,
    LEVEL_ALIASES,
    LEVELS,
    STATUSES,
    Callbacks,
    ControlRequest,
    Health,
    LogQuery,
    MaybeAwaitable,
    iso,
)

log = logging.getLogger("orch_kit.contract")
HEALTH_CONTENT_TYPE = "application/health+json"
DEFAULT_LOG_LIMIT = 100
MAX_LOG_LIMIT = 1000
MAX_KEY_LENGTH = 200
T = TypeVar("T")


async def _call(fn: Callable[..., MaybeAwaitable[T]], *args: Any) -> T:
    result = fn(*args)
    if inspect.isawaitable(result):
        return cast(T, await result)
    return result


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


class Contract:
    def __init__(
        self,
        callbacks: Callbacks,
        *,
        secret: bytes | None = None,
        now: Callable[[], float] = time.time,
        version: str = "0.0.0",
        service_id: str | None = None,
        window: float = signing.WINDOW_S,
        idempotency_size: int = 4096,
        prometheus_namespace: str = "",
    ) -> None:
        self.callbacks = callbacks
        self.version = version
        self.service_id = service_id
        self._now = now
        self._namespace = prometheus_namespace
        self.auth = Authenticator(secret, now, window) if secret else None
        self.idempotency = IdempotencyCache(idempotency_size)
        self.performed = 0  # control actions actually carried out
        self.replayed = 0  # control calls answered from the idempotency memory
        self.rejected = 0  # authentic control calls with a bad body (400/409)

    @property
    def refused(self) -> int:
        """Control calls refused by authentication (401)."""
        return self.auth.refused if self.auth else 0

    # mounting -----------------------------------------------------------------------------

    def mount(self, app: web.Application, *, control: bool = True, metrics: bool = True) -> None:
        """Add ``/health``, ``/metrics``, ``/status``, ``/logs`` and (unless told not to)
        ``/control`` to ``app``.  ``metrics=False`` leaves ``/metrics`` to the app (one
        that already serves its own, in both formats)."""
        app.router.add_get("/health", self.handle_health)
        if metrics:
            app.router.add_get("/metrics", self.handle_metrics)
        app.router.add_get("/status", self.handle_status)
        app.router.add_get("/logs", self.handle_logs)
        if control:
            self.mount_control(app)

    def mount_control(self, app: web.Application) -> None:
        """Add only ``POST /control`` (for a supervisor or admin port)."""
        if self.auth is None:
            raise ValueError("/control needs a non-empty secret")
        if self.callbacks.control is None:
            raise ValueError("/control needs a control callback")
        app.router.add_post("/control", self.handle_control)

    # handlers -----------------------------------------------------------------------------

    async def handle_health(self, request: web.Request) -> web.Response:
        try:
            health = await _call(self.callbacks.health)
        except Exception as exc:
            # A health endpoint that errors is itself the answer: the service is failing.
            log.exception("health callback failed")
            health = Health("fail", output=f"health check raised {type(exc).__name__}")
        status = health.status if health.status in STATUSES else "fail"
        when = datetime.fromtimestamp(self._now(), UTC)
        body: dict[str, Any] = {
            "status": status,
            "version": self.version,
            "output": health.output,
            "checks": {
                name: [check.to_json(when) for check in group]
                for name, group in health.checks.items()
            },
        }
        if self.service_id:
            body["serviceId"] = self.service_id
        return web.Response(
            text=json.dumps(body),
            status=503 if status == "fail" else 200,
            content_type=HEALTH_CONTENT_TYPE,
            headers={"Cache-Control": "no-store"},
        )

    async def handle_metrics(self, request: web.Request) -> web.Response:
        metrics = dict(await _call(self.callbacks.metrics))
        if prometheus.wants_text(request.headers.get("Accept", "")):
            return web.Response(
                body=prometheus.render(metrics, self._namespace),
                headers={"Content-Type": prometheus.CONTENT_TYPE},
            )
        return web.json_response(metrics)

    async def handle_status(self, request: web.Request) -> web.Response:
        status = dict(await _call(self.callbacks.status))
        status.setdefault("version", self.version)
        return web.json_response(status)

    async def handle_logs(self, request: web.Request) -> web.Response:
        query = parse_log_query(request.query)
        entries = list(await _call(self.callbacks.logs, query))
        entries = entries[-query.limit :]  # bounded even if a callback ignores the limit
        return web.json_response({"entries": [entry.to_json() for entry in entries]})

    async def handle_control(self, request: web.Request) -> web.Response:
        assert self.auth is not None and self.callbacks.control is not None
        body = await self.auth.body(request)  # 401 before the body is even parsed
        try:
            control = _parse_control(body)
        except web.HTTPBadRequest:
            self.rejected += 1
            raise
        perform = self.callbacks.control

        async def once() -> dict[str, Any]:
            extra = await _call(perform, control) or {}
            self.performed += 1
            log.info("control %s performed (key %s)", control.action, control.idempotency_key)
            return {
                "accepted": True,
                "action": control.action,
                "idempotency_key": control.idempotency_key,
                **extra,
            }

        try:
            outcome = await self.idempotency.run(control.idempotency_key, control.action, once)
        except KeyConflict as exc:
            self.rejected += 1
            return web.json_response({"error": str(exc)}, status=409)
        except Exception as exc:
            log.exception("control %s failed", control.action)
            return web.json_response(
                {"error": f"action {control.action} failed: {type(exc).__name__}"}, status=500
            )
        if outcome.replayed:
            self.replayed += 1
            return web.json_response({**outcome.answer, "replayed": True}, status=202)
        return web.json_response(outcome.answer, status=202)


def parse_log_query(params: Mapping[str, str]) -> LogQuery:
    """``?since=ISO&limit=N&level=`` → :class:`LogQuery`; 400 naming the bad parameter."""
    since = None
    if raw := params.get("since"):
        since = _parse_since(raw)
    limit = DEFAULT_LOG_LIMIT
    if (raw := params.get("limit")) is not None:
        try:
            limit = int(raw)
        except ValueError:
            raise _bad_request(f"limit must be a whole number, got {raw!r}") from None
        if not 1 <= limit <= MAX_LOG_LIMIT:
            raise _bad_request(f"limit must be between 1 and {MAX_LOG_LIMIT}, got {limit}")
    level = None
    if raw := params.get("level"):
        level = LEVEL_ALIASES.get(raw.lower(), raw.lower())
        if level not in LEVELS:
            raise _bad_request(f"level must be one of {', '.join(LEVELS)}, got {raw!r}")
    return LogQuery(since=since, limit=limit, level=level)


def _parse_since(raw: str) -> datetime:
    # An unencoded "+00:00" reaches us as " 00:00" (a + in a query string means a space).
    for candidate in (raw, raw.replace(" ", "+")):
        try:
            since = datetime.fromisoformat(candidate)
        except ValueError:
            continue
        # A naive time is read as UTC: the contract's log times are all UTC.
        return since if since.tzinfo else since.replace(tzinfo=UTC)
    raise _bad_request(
        f"since must be an ISO 8601 time such as {iso(datetime(2026, 1, 1, tzinfo=UTC))}, "
        f"got {raw!r}"
    )


def _parse_control(body: bytes) -> ControlRequest:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _bad_request("body is not valid JSON") from None
    if not isinstance(data, dict):
        raise _bad_request("body must be a JSON object")
    action = data.get("action")
    if action not in ACTIONS:
        raise _bad_request(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
    key = data.get("idempotency_key")
    if not isinstance(key, str) or not key.strip():
        raise _bad_request("idempotency_key is required: a non-empty string")
    if len(key) > MAX_KEY_LENGTH:
        raise _bad_request(f"idempotency_key is longer than {MAX_KEY_LENGTH} characters")
    return ControlRequest(action=action, idempotency_key=key, body=data)


def mount_contract(
    app: web.Application,
    callbacks: Callbacks,
    *,
    secret: bytes | None = None,
    now: Callable[[], float] = time.time,
    control: bool = True,
    **options: Any,
) -> Contract:
    """Serve the whole contract on ``app``; ``control=False`` leaves ``/control`` out (serve
    it elsewhere with ``contract.mount_control(other_app)``)."""
    contract = Contract(callbacks, secret=secret, now=now, **options)
    contract.mount(app, control=control)
    return contract


def mount_control(
    app: web.Application,
    callbacks: Callbacks,
    *,
    secret: bytes,
    now: Callable[[], float] = time.time,
    **options: Any,
) -> Contract:
    """Serve only ``/control`` on ``app`` (a supervisor port that outlives the worker)."""
    contract = Contract(callbacks, secret=secret, now=now, **options)
    contract.mount_control(app)
    return contract
