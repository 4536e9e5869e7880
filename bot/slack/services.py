"""What a Slack listener may use: orch's data and the Slack-side helpers, never the
Runtime itself (so listeners are testable against a real store without a process)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from agents.clock import Clock
from bot.config import Config
from bot.config_reload import ReloadOutcome
from bot.slack.respond import Replier
from bot.slack.work import Background
from storage.base import Store

# Whose App Home is refreshed on change (bot.slack.home_refresh): at most this many users,
# each for this long after they last opened it.  With the refresher's 30 s debounce that
# is at most 100 views.publish a minute, Slack's rate for the method.
HOME_USERS: Final = 50
HOME_USER_TTL_S: Final = 8 * 3600.0


class RecentUsers:
    """A bounded memory of who opened the App Home, oldest forgotten first.

    Kept in this process only: a user is refreshed by the replica that received their
    ``app_home_opened``, and opening Home always publishes a fresh view anyway."""

    def __init__(self, capacity: int = HOME_USERS, ttl_s: float = HOME_USER_TTL_S) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._capacity = capacity
        self._ttl_s = ttl_s

    def add(self, user: str, now: float) -> None:
        """``now``: the clock's monotonic seconds."""
        self._seen[user] = now
        self._seen.move_to_end(user)
        while len(self._seen) > self._capacity:
            self._seen.popitem(last=False)

    def recent(self, now: float) -> list[str]:
        """Users seen within the TTL, oldest first; the others are forgotten."""
        while self._seen and next(iter(self._seen.values())) < now - self._ttl_s:
            self._seen.popitem(last=False)
        return list(self._seen)


@dataclass(frozen=True)
class Services:
    config: Callable[[], Config]  # a function: the config may be reloaded while running
    store: Store
    statuses: Callable[[], Mapping[str, str]]  # HealthMonitor.statuses
    clock: Clock
    background: Background
    replier: Replier
    home_users: RecentUsers = field(default_factory=RecentUsers)
    # The outbox relay's wake: events a listener stored are published now, not at the
    # relay's next sweep (an approval then runs a second sooner).
    wake: Callable[[], None] = lambda: None
    # Reload projects.yml now (trigger, who asked): the Runtime's, None without one.
    reload: Callable[[str, str | None], Awaitable[ReloadOutcome]] | None = None
