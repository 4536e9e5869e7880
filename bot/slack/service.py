"""``SlackService``: the Slack app as one component the Runtime starts and stops.

It owns one aiohttp session for every Web API call and reply (the SDK would otherwise open
a session per call), the bolt app and its listeners, Socket Mode when SLACK_APP_TOKEN is
set, the HTTP route when SLACK_SIGNING_SECRET is set (both may be), and the background
work after each ack.  ``check`` is its readiness: auth.test passed and, in Socket Mode,
the WebSocket is up.

Wiring (Runtime): ``slack = build_slack(settings, runtime)``; mount ``slack.routes()`` and
``{"slack": slack.check}`` on the web app; ``await slack.start()`` before the web server
starts and ``await slack.stop()`` after it stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

import aiohttp
from aiohttp import web
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from agents.clock import Clock
from bot.config import Config
from bot.config_reload import ReloadOutcome
from bot.settings import Settings
from bot.slack.app import BotIdentity, build_app, register_listeners
from bot.slack.http import slack_route
from bot.slack.respond import Replier
from bot.slack.services import Services
from bot.slack.socket_mode import SocketModeConnection
from bot.slack.work import Background, RetryMarkers, StoreRetryMarkers
from storage.base import Store

log = logging.getLogger(__name__)

# slack_sdk logs request bodies at DEBUG from this logger; INFO keeps them out.
API_LOGGER = logging.getLogger("bot.slack.api")
API_LOGGER.setLevel(logging.INFO)

# auth.test errors that waiting will not fix: a wrong, revoked or under-scoped token.
PERMANENT_AUTH_ERRORS = frozenset(
    {
        "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired",
        "no_permission", "missing_scope", "not_allowed_token_type", "ekm_access_denied",
    }
)  # fmt: skip
MAX_AUTH_BACKOFF = 60.0
AUTH_TIMEOUT = 10.0


class _Health(Protocol):
    def statuses(self) -> dict[str, str]: ...


class _Relay(Protocol):
    def wake(self) -> None: ...


class _Live(Protocol):
    async def reload(self, trigger: str, by: str | None = None) -> ReloadOutcome: ...


class RuntimeParts(Protocol):
    """What build_slack reads from the Runtime (a Protocol: no import cycle)."""

    @property
    def config(self) -> Config: ...

    @property
    def store(self) -> Store: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def health(self) -> _Health: ...

    @property
    def relay(self) -> _Relay: ...

    @property
    def live(self) -> _Live: ...


def build_slack(settings: Settings, runtime: RuntimeParts) -> SlackService | None:
    """The Slack app for this process, or None when SLACK_BOT_TOKEN is unset."""
    if not settings.slack_bot_token:
        if settings.slack_app_token or settings.slack_signing_secret:
            log.warning("Slack is off: SLACK_BOT_TOKEN is not set")
        return None

    async def reload(trigger: str, by: str | None) -> ReloadOutcome:
        return await runtime.live.reload(trigger, by)  # built after Slack: looked up late

    return SlackService(
        settings,
        config=lambda: runtime.config,
        store=runtime.store,
        statuses=runtime.health.statuses,
        clock=runtime.clock,
        wake=runtime.relay.wake,
        reload=reload,
    )


def api_url(url: str) -> str:
    # AsyncWebClient joins method names onto base_url: without the slash, ".../api" +
    # "auth.test" would become ".../apiauth.test".
    return url if url.endswith("/") else url + "/"


class SlackService:
    def __init__(
        self,
        settings: Settings,
        *,
        config: Callable[[], Config],
        store: Store,
        statuses: Callable[[], Mapping[str, str]],
        clock: Clock,
        markers: RetryMarkers | None = None,
        ping_interval: float = 10.0,
        wake: Callable[[], None] | None = None,
        reload: Callable[[str, str | None], Awaitable[ReloadOutcome]] | None = None,
    ) -> None:
        if not settings.slack_bot_token:
            raise ValueError("SlackService needs SLACK_BOT_TOKEN")
        self._settings = settings
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self.client = AsyncWebClient(
            token=settings.slack_bot_token,
            base_url=api_url(settings.slack_api_url),
            logger=API_LOGGER,
            timeout=10,
        )
        # Filled in by our own auth.test: bolt then never calls Slack before an ack.
        self.identity = BotIdentity()
        self.app = build_app(self.client, settings.slack_signing_secret, settings.env,
                             self.identity)  # fmt: skip
        self.background = Background(markers or StoreRetryMarkers(store))
        replier = Replier(self._require_session, self.client)
        self.services = Services(config, store, statuses, clock, self.background, replier,
                                 wake=wake or (lambda: None), reload=reload)  # fmt: skip
        # The user-group cache is dropped when the config is reloaded (bot.runtime_live).
        self.approvers = register_listeners(self.app, self.services)
        self._socket = (
            SocketModeConnection(self.app, settings.slack_app_token, ping_interval=ping_interval)
            if settings.slack_app_token
            else None
        )
        if not settings.slack_signing_secret and self._socket is None:
            log.warning(
                "Slack cannot reach orch: set SLACK_SIGNING_SECRET (HTTP mode) or"
                " SLACK_APP_TOKEN (Socket Mode); orch can still post"
            )
        self._auth_problem: str | None = "not started"
        self.authenticated = asyncio.Event()  # set once auth.test has passed
        self._auth_retry: asyncio.Task[None] | None = None
        self.bot_user_id: str | None = None

    @property
    def socket_mode(self) -> SocketModeConnection | None:
        return self._socket

    def routes(self) -> list[web.RouteDef]:
        """POST /slack/events, when HTTP mode is configured."""
        secret = self._settings.slack_signing_secret
        return [slack_route(self.app, secret)] if secret else []

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            raise RuntimeError("SlackService is not started")
        return self._session

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        # bolt copies this client's session into the client it makes for each request.
        self.client.session = self._session
        try:
            retry_after = await self._authenticate()
            if retry_after is not None:
                self._auth_retry = asyncio.create_task(self._keep_authenticating(retry_after))
            if self._socket is not None:
                await self._socket.start()
        except BaseException:
            await self.stop()  # a half-started service is not left for the caller to stop
            raise

    async def stop(self) -> None:
        """Reverse of start: no new requests, finish (or cancel) the work, close."""
        if self._socket is not None:
            await self._socket.stop()
        if self._auth_retry is not None:
            self._auth_retry.cancel()
            await asyncio.gather(self._auth_retry, return_exceptions=True)
        await self.background.stop()
        if self._session is not None:
            await self._session.close()
        self._auth_problem = "stopped"

    async def check(self) -> str | None:
        """Readiness: None when Slack is usable, else a short reason."""
        if self._auth_problem is not None:
            return self._auth_problem
        if self._socket is not None:
            return await self._socket.check()
        return None

    async def _authenticate(self) -> float | None:
        """One auth.test; returns None when settled (passed, or failed for good), else the
        delay before the next attempt."""
        try:
            # Bounded: start() waits for this first attempt (the SDK may retry once).
            async with asyncio.timeout(AUTH_TIMEOUT):
                response = await self.client.auth_test()
        except SlackApiError as exc:
            data = exc.response.data if isinstance(exc.response.data, dict) else {}
            error = str(data.get("error") or f"HTTP {exc.response.status_code}")
            self._auth_problem = f"auth.test: {error}"
            if error in PERMANENT_AUTH_ERRORS:
                log.error("Slack refused the bot token (auth.test: %s)", error)
                return None
            log.warning("Slack auth.test failed (%s); retrying", error)
            retry_after = exc.response.headers.get("Retry-After") or exc.response.headers.get(
                "retry-after"
            )
            return float(retry_after) if retry_after and str(retry_after).isdigit() else 1.0
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._auth_problem = f"auth.test: {type(exc).__name__}"
            log.warning("Slack auth.test failed (%s); retrying", type(exc).__name__)
            return 1.0
        self._auth_problem = None
        self.authenticated.set()
        self.bot_user_id = response.get("user_id")
        self.identity.learn(response.get("user_id"), response.get("bot_id"))
        log.info("Slack: authenticated as %s in %s", response.get("user"), response.get("team"))
        return None

    async def _keep_authenticating(self, delay: float) -> None:
        backoff = 1.0
        while True:
            await self._clock.sleep(max(delay, backoff))
            backoff = min(backoff * 2, MAX_AUTH_BACKOFF)
            next_delay = await self._authenticate()
            if next_delay is None:
                return
            delay = next_delay
