"""Who may approve a project's actions (DESIGN §5): the approvers of the project's
orchestrator group, from the config as it is now.

An approver is a Slack user id (U…, W…) listed directly, or a member of a listed user
group (S…), resolved with ``usergroups.users.list`` (scope ``usergroups:read``).  A
group's members are cached for ``ttl_s`` (5 minutes) per group on the injected clock, and
concurrent checks share one lookup.  A lookup that fails (a Slack error, a network error,
a timeout) denies: it is not cached, so the next check asks again.  An empty list, or a
project in no group, is nobody.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Final, Literal

import aiohttp
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web.async_client import AsyncWebClient

from agents.clock import Clock
from bot.config import Config, Project

log = logging.getLogger(__name__)

CACHE_TTL_S: Final = 300.0
LOOKUP_TIMEOUT_S: Final = 5.0

# approver: listed, or in a listed group.  not_approver: looked everywhere, not there.
# lookup_failed: not listed, and some group could not be read (denied: the safe side).
# no_group: the project is in no orchestrator group (nobody approves).
Why = Literal["approver", "not_approver", "lookup_failed", "no_group"]


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    why: Why
    group: str | None  # the orchestrator group's name; None when the project has none
    via: str | None = None  # the user group that made them an approver, if one did
    failed: tuple[str, ...] = ()  # user groups whose lookup failed

    def explain(self, project: str) -> str:
        """One sentence for people (Slack replies, the audit's details)."""
        if self.why == "approver":
            via = f" (through {self.via})" if self.via else ""
            return f"an approver of {self.group}{via}"
        if self.why == "no_group":
            return f"{project} is in no orchestrator group, so it has no approvers"
        if self.why == "lookup_failed":
            return (
                f"the approvers of {self.group} could not be checked just now"
                f" (user group lookup failed: {', '.join(self.failed)})"
            )
        return f"not an approver of {self.group}"


@dataclass(slots=True)
class _Cached:
    members: frozenset[str]
    until: float  # the clock's monotonic seconds


class Approvers:
    """One per Slack app: the user-group cache is shared by every listener of a process.

    ``client`` is None where there is no Slack (then only listed user ids approve)."""

    def __init__(
        self,
        client: AsyncWebClient | None,
        clock: Clock,
        *,
        ttl_s: float = CACHE_TTL_S,
        timeout_s: float = LOOKUP_TIMEOUT_S,
    ) -> None:
        self._client = client
        self._clock = clock
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s
        self._cache: dict[str, _Cached] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.lookups = 0  # usergroups.users.list calls made (tests, metrics)

    async def check(self, config: Config, project: Project, user: str) -> Verdict:
        return await self.check_group(config, project.orchestrator, user)

    async def check_group(self, config: Config, group_name: str | None, user: str) -> Verdict:
        """Whether ``user`` approves for the orchestrator group ``group_name``."""
        group = config.orchestrators.get(group_name or "")
        if group is None or group_name is None:
            return Verdict(False, "no_group", None)
        if user in group.approvers and user[:1] in ("U", "W"):  # listed by their user id
            return Verdict(True, "approver", group_name)
        failed: list[str] = []
        for usergroup in (a for a in group.approvers if a.startswith("S")):
            members = await self.members(usergroup)
            if members is None:
                failed.append(usergroup)
            elif user in members:
                return Verdict(True, "approver", group_name, via=usergroup)
        if failed:
            return Verdict(False, "lookup_failed", group_name, failed=tuple(failed))
        return Verdict(False, "not_approver", group_name)

    async def members(self, usergroup: str) -> frozenset[str] | None:
        """The group's member ids, from the cache while fresh; None when Slack could not
        say (never cached)."""
        cached = self._fresh(usergroup)
        if cached is not None:
            return cached
        lock = self._locks.setdefault(usergroup, asyncio.Lock())
        async with lock:  # concurrent checks wait for the one lookup in flight
            cached = self._fresh(usergroup)
            if cached is not None:
                return cached
            found = await self._lookup(usergroup)
            if found is not None:
                self._cache[usergroup] = _Cached(found, self._clock.monotonic() + self._ttl_s)
            return found

    def forget(self) -> None:
        """Drop every cached group (a config reload may have changed who is in which)."""
        self._cache.clear()

    def _fresh(self, usergroup: str) -> frozenset[str] | None:
        cached = self._cache.get(usergroup)
        if cached is None or cached.until <= self._clock.monotonic():
            return None
        return cached.members

    async def _lookup(self, usergroup: str) -> frozenset[str] | None:
        if self._client is None:
            return None
        self.lookups += 1
        try:
            async with asyncio.timeout(self._timeout_s):
                response = await self._client.usergroups_users_list(usergroup=usergroup)
        except (SlackApiError, SlackRequestError, aiohttp.ClientError, TimeoutError) as exc:
            # The log names Slack's error code or the exception type, never a token.
            data = exc.response.data if isinstance(exc, SlackApiError) else None
            error = data.get("error") if isinstance(data, dict) else None
            log.warning("usergroups.users.list %s failed (%s): its members do not approve",
                        usergroup, error or type(exc).__name__)  # fmt: skip
            return None
        users = response.get("users")
        if not isinstance(users, list):
            log.warning("usergroups.users.list %s: no user list in the answer", usergroup)
            return None
        return frozenset(u for u in users if isinstance(u, str))
