"""The simulated fleet configured for orch to act on: each project's /control secret in
an environment variable (as production does it), every action allowed, and timings
shortened by configuration only, so tests of the Auto-Fixer and the Action Executor run
in seconds against real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from bot.config import Config
from demo.fleet import Fleet

NAMES = ("email-blast", "chatbot", "social-media")
SECRETS = {name: f"secret-{name}".encode() for name in NAMES}

# Probe fast, recheck fast, give up on a fix quickly.
FAST: dict[str, Any] = {
    "interval": "1s",
    "timeout": "500ms",
    "recheck_interval": "200ms",
    "remediation": {
        "backoff": "500ms",
        "verify_timeout": "4s",
        "verify_interval": "200ms",
        "control_timeout": "2s",
    },
}


def secret_env(name: str) -> str:
    return f"{name.upper().replace('-', '_')}_SECRET"


# What orch's environment holds: the variables the config names.
ENV = {secret_env(n): s.decode() for n, s in SECRETS.items()}


@asynccontextmanager
async def running_fleet(names: Iterable[str] = NAMES) -> AsyncIterator[Fleet]:
    """The demo services ``names`` on ephemeral ports with their test secrets, stopped
    afterwards (the fleet fixture of the end-to-end autonomy tests)."""
    fleet = Fleet.ephemeral(list(names), {n: SECRETS[n] for n in names})
    await fleet.start()
    try:
        yield fleet
    finally:
        await fleet.stop()


def acting_config(
    fleet: Fleet,
    names: Iterable[str] = NAMES,
    *,
    defaults: Mapping[str, Any] = FAST,
    orchestrators: Mapping[str, Any] | None = None,
) -> Config:
    projects = [
        {
            "name": n,
            "url": fleet.url(n),
            "control_url": fleet.control_url(n),
            "control_secret_env": secret_env(n),
            "allowed_actions": ["restart", "clear_cache", "pause", "resume"],
        }
        for n in names
    ]
    return Config.model_validate(
        {
            "defaults": dict(defaults),
            "orchestrators": dict(orchestrators or {}),
            "projects": projects,
        }
    )
