"""Reload ``projects.yml`` while running: a file change (polled), SIGHUP, ``/orch reload``.

All three end in ``ConfigReloader.reload``: the file is loaded and validated by the same
loader as at start (``bot.config_loader``: every problem at file:line:field).  A valid
file that differs from the running one is handed to ``apply`` (the Runtime swaps its
config and tells the parts that hold copies), and a ``config.reloaded`` event says what
was added, removed and changed.  An invalid file changes nothing: the running config
stays, the problems are logged and go out in a ``config.reloaded`` event with
``ok: false`` (the notifier posts them to the group channels).  The same bytes twice are
a no-op, and the poller reports a bad file once, not at every poll.

Polling the file (size, mtime, then a hash) needs no new dependency and works on every
filesystem, including the bind mounts and ConfigMaps where inotify events get lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agents.clock import Clock
from agents.events import CONFIG_RELOADED, Event
from agents.lifecycle import cancel_and_wait
from bot.config import Config
from bot.config_loader import ConfigError, load_config

log = logging.getLogger(__name__)

POLL_EVERY_S = 2.0
MAX_ERRORS_IN_EVENT = 20  # a file with hundreds of problems still makes a readable message


@dataclass(frozen=True)
class ConfigChange:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()  # projects whose settings differ (defaults included)
    groups: tuple[str, ...] = ()  # orchestrator groups added, removed or changed
    other: bool = False  # defaults-only keys, api_users, demo_secrets

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.groups or self.other)


def diff_configs(old: Config, new: Config) -> ConfigChange:
    before = {p.name: p for p in old.projects}
    after = {p.name: p for p in new.projects}
    groups = set(old.orchestrators) | set(new.orchestrators)
    rest = {"projects", "orchestrators"}
    return ConfigChange(
        added=tuple(sorted(after.keys() - before.keys())),
        removed=tuple(sorted(before.keys() - after.keys())),
        changed=tuple(sorted(n for n in before.keys() & after.keys() if before[n] != after[n])),
        groups=tuple(
            sorted(g for g in groups if old.orchestrators.get(g) != new.orchestrators.get(g))
        ),
        other=old.model_dump(exclude=rest) != new.model_dump(exclude=rest),
    )


@dataclass(frozen=True)
class ReloadOutcome:
    result: Literal["applied", "unchanged", "refused"]
    change: ConfigChange = field(default_factory=ConfigChange)
    errors: tuple[str, ...] = ()


Apply = Callable[[Config, ConfigChange], Awaitable[None]]
Emit = Callable[[Sequence[Event]], Awaitable[None]]


class ConfigReloader:
    def __init__(
        self,
        path: Path,
        env: Mapping[str, str],
        current: Callable[[], Config],
        apply: Apply,
        emit: Emit,
        *,
        clock: Clock,
        source: str,
        check: Callable[[Config], None] = lambda _config: None,
        groups: Callable[[Config], list[str]] = lambda config: sorted(config.orchestrators),
        poll_s: float = POLL_EVERY_S,
    ) -> None:
        """``check`` raises ValueError for a valid file this process cannot run (its
        ``--orchestrator`` group is gone); ``groups``: whose channels hear a refusal."""
        self._path = path
        self._env = env
        self._current = current
        self._apply = apply
        self._emit = emit
        self._clock = clock
        self._source = source
        self._check = check
        self._groups = groups
        self._poll_s = poll_s
        self._lock = asyncio.Lock()  # one reload at a time, whoever triggers it
        self._applied: str | None = None  # hash of the bytes the running config came from
        self._stamp: tuple[int, int] | None = None  # (mtime_ns, size) at the last poll
        self._seen: str | None = None  # hash at the last poll
        self._task: asyncio.Task[None] | None = None

    async def start(self, *, watch: bool = True) -> None:
        """Take the file as it is now as the running config's; ``watch``: poll it."""
        self._stamp = _stamp(self._path)
        self._seen = self._applied = _hash(self._path)
        if watch:
            self._task = asyncio.create_task(self._watch(), name="config-watch")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def poll_once(self) -> ReloadOutcome | None:
        """Reload if the file changed since the last poll; None when it did not."""
        stamp = _stamp(self._path)
        if stamp == self._stamp:
            return None  # same size and mtime: not even worth reading
        self._stamp = stamp
        digest = _hash(self._path)
        if digest == self._seen:
            return None  # touched, same bytes (or still missing: said once already)
        self._seen = digest
        return await self.reload("file change")

    async def reload(self, trigger: str, by: str | None = None) -> ReloadOutcome:
        """Load, validate and apply the file now; ``by``: who asked (a Slack user id)."""
        async with self._lock:
            digest = _hash(self._path)
            if digest is not None and digest == self._applied:
                return ReloadOutcome("unchanged")
            try:
                new = load_config(self._path, self._env)
                self._check(new)
            except ConfigError as exc:
                return await self._refuse(trigger, by, [str(i) for i in exc.issues])
            except ValueError as exc:
                return await self._refuse(trigger, by, [f"{self._path}: {exc}"])
            change = diff_configs(self._current(), new)
            self._applied = digest
            if change.empty:  # comments or formatting only
                log.info("config reload (%s): %s has no effective change", trigger, self._path)
                return ReloadOutcome("unchanged")
            await self._apply(new, change)
            log.info("config reloaded (%s): added %s, removed %s, changed %s", trigger,
                     list(change.added), list(change.removed), list(change.changed))  # fmt: skip
            await self._emit([self._event(trigger, by, change=change)])
            return ReloadOutcome("applied", change)

    async def _refuse(self, trigger: str, by: str | None, errors: list[str]) -> ReloadOutcome:
        log.error("config reload (%s) refused, the running config is kept:\n%s",
                  trigger, "\n".join(errors))  # fmt: skip
        await self._emit([self._event(trigger, by, errors=errors)])
        return ReloadOutcome("refused", errors=tuple(errors))

    def _event(
        self,
        trigger: str,
        by: str | None,
        *,
        change: ConfigChange | None = None,
        errors: Sequence[str] = (),
    ) -> Event:
        payload: dict[str, Any] = {"ok": change is not None, "trigger": trigger, "by": by,
                                   "file": str(self._path),
                                   "groups": self._groups(self._current())}  # fmt: skip
        if change is not None:
            payload.update(
                added=list(change.added),
                removed=list(change.removed),
                changed=list(change.changed),
                orchestrators=list(change.groups),
            )
        else:
            payload["errors"] = list(errors[:MAX_ERRORS_IN_EVENT])
            payload["error_count"] = len(errors)
        return Event(CONFIG_RELOADED, self._clock.now(), self._source, payload)

    async def _watch(self) -> None:
        while True:
            await self._clock.sleep(self._poll_s)
            try:
                await self.poll_once()
            except Exception:  # a failing apply must not end the watching
                log.exception("config reload after a file change failed")


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _hash(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
