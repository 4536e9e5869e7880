"""Where a project's /control HMAC secret comes from: the environment variable its config
names.  The demo arrangement (``demo_secrets: true``, loopback only, checked by the config
loader) falls back to a fixed public secret so the demo needs no set-up."""

from __future__ import annotations

from collections.abc import Mapping

from bot.config import Config, Project

DEMO_SECRET_PREFIX = "orch-demo-secret:"


def control_secret(project: Project, config: Config, env: Mapping[str, str]) -> bytes | None:
    if not project.control_secret_env:
        return None
    value = env.get(project.control_secret_env)
    if value:
        return value.encode()
    if config.demo_secrets:
        return f"{DEMO_SECRET_PREFIX}{project.name}".encode()
    return None
