"""What a Slack listener may use: orch's data and the Slack-side helpers, never the
Runtime itself (so listeners are testable against a real store without a process)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from agents.clock import Clock
from bot.config import Config
from bot.slack.respond import Replier
from bot.slack.work import Background
from storage.base import Store


@dataclass(frozen=True)
class Services:
    config: Callable[[], Config]  # a function: the config may be reloaded while running
    store: Store
    statuses: Callable[[], Mapping[str, str]]  # HealthMonitor.statuses
    clock: Clock
    background: Background
    replier: Replier
