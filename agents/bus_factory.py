"""Choose the event bus from settings: unset ``REDIS_URL`` means the in-process bus."""

from __future__ import annotations

from typing import Any

from agents.bus import EventBus, InProcessBus
from agents.redis_bus import RedisStreamsBus
from storage.base import Store


def make_bus(redis_url: str | None, store: Store, **redis_options: Any) -> EventBus:
    """The in-process bus when ``redis_url`` is None or empty (embedded mode), else the
    Redis Streams bus (production), which needs ``store`` for its per-role claims and the
    reconciler.  ``redis_options`` go to ``RedisStreamsBus`` (for example
    ``on_dead_letter``).  Nothing connects until ``start``."""
    if not redis_url:
        return InProcessBus()
    if not redis_url.startswith(("redis://", "rediss://", "unix://")):
        # Only the scheme: the rest of the URL may hold a password.
        scheme = redis_url.split(":", 1)[0]
        raise ValueError(f"REDIS_URL has unsupported scheme {scheme!r}; use redis://...")
    return RedisStreamsBus(redis_url, store, **redis_options)
