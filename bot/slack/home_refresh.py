"""``HomeRefresher``: the App Home board follows the fleet, debounced.

On every event that changes what the board shows (a status, an incident, an approval, a
silence) it schedules one refresh: after ``debounce_s`` the board is read once and
published to each user who opened Home recently (``Services.home_users``).  Events that
arrive while a refresh is scheduled join it, so a storm of 100 events costs one read and
one ``views.publish`` per user, and two refreshes are always at least ``debounce_s``
apart (trailing edge: the board may lag a change by up to ``debounce_s``).

Wiring (Runtime), after ``build_slack``::

    refresher = HomeRefresher(slack.services, slack.client)
    refresher.register(bus)            # before bus.start()
    ...
    await refresher.stop()             # before slack.stop()

With several replicas on Redis a role is handled by one replica per event, while each
replica remembers only the users whose ``app_home_opened`` it received: pass a role per
replica (``register(bus, role=f"slack-home:{replica_id}")``) to refresh every user.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from slack_sdk.web.async_client import AsyncWebClient

from agents.bus import EventBus
from agents.clock import Clock
from agents.events import (
    APPROVAL_DENIED,
    APPROVAL_EXPIRED,
    APPROVAL_GRANTED,
    APPROVAL_REQUESTED,
    INCIDENT_OPENED,
    INCIDENT_RESOLVED,
    INCIDENT_UPDATED,
    PROJECT_STATUS_CHANGED,
    SILENCE_CREATED,
    SILENCE_ENDED,
    Event,
)
from bot.slack import fleet
from bot.slack.services import Services

log = logging.getLogger(__name__)

ROLE: Final = "slack-home"
DEBOUNCE_S: Final = 30.0
HOME_EVENTS: Final = frozenset(
    {
        PROJECT_STATUS_CHANGED, INCIDENT_OPENED, INCIDENT_UPDATED, INCIDENT_RESOLVED,
        APPROVAL_REQUESTED, APPROVAL_GRANTED, APPROVAL_DENIED, APPROVAL_EXPIRED,
        SILENCE_CREATED, SILENCE_ENDED,
    }
)  # fmt: skip


class HomeRefresher:
    def __init__(
        self,
        services: Services,
        client: AsyncWebClient,
        *,
        debounce_s: float = DEBOUNCE_S,
        clock: Clock | None = None,
    ) -> None:
        self._services = services
        self._client = client
        self._debounce_s = debounce_s
        self._clock = clock or services.clock
        self._scheduled: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._closed = False
        self.refreshes = 0  # boards read and published (tests, metrics)

    def register(self, bus: EventBus, role: str = ROLE) -> None:
        bus.subscribe(role, self.handle, types=HOME_EVENTS)

    async def handle(self, event: Event) -> None:
        self.poke()

    def poke(self) -> None:
        """Something changed: refresh within ``debounce_s`` unless one is scheduled."""
        if self._closed or self._scheduled is not None:
            return
        if not self._services.home_users.recent(self._clock.monotonic()):
            return  # nobody is looking: nothing to publish
        task = asyncio.create_task(self._after_debounce(), name="slack-home-refresh")
        self._scheduled = task
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _after_debounce(self) -> None:
        try:
            await self._clock.sleep(self._debounce_s)
        finally:
            # From here on a change schedules the next refresh: it may be newer than the
            # board this one is about to read.
            self._scheduled = None
        await self.refresh()

    async def refresh(self) -> None:
        """Read the board once and publish it to every recent user; never raises (a
        failed publish is logged, the others still go out)."""
        users = self._services.home_users.recent(self._clock.monotonic())
        if not users:
            return
        try:
            view = await fleet.home_view(self._services)
        except Exception:
            log.exception("App Home refresh: reading the board failed")
            return
        self.refreshes += 1
        for user in users:
            try:
                await self._client.views_publish(user_id=user, view=view)
            except Exception as exc:  # one user's failure must not stop the others
                log.warning("App Home refresh for %s failed: %s", user, type(exc).__name__)

    async def stop(self) -> None:
        """Cancel a scheduled refresh and wait for a running one to end."""
        self._closed = True
        tasks = set(self._running)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
