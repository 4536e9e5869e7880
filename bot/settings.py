"""Settings from the environment. The only module that reads ``os.environ``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "demo" / "projects.yml"


# Passed on to control commands (agents.command_adapter); everything else is withheld.
COMMAND_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME", "KUBECONFIG",
               "XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS")  # fmt: skip


@dataclass(frozen=True)
class Settings:
    config_path: Path = DEFAULT_CONFIG
    database_url: str | None = None  # postgresql://… ; None keeps the embedded SQLite
    sqlite_path: Path = Path("orch.db")
    redis_url: str | None = None  # None keeps the in-process bus
    host: str = "127.0.0.1"
    port: int = 8080
    slack_bot_token: str | None = None
    slack_signing_secret: str | None = None
    slack_app_token: str | None = None
    slack_api_url: str = "https://slack.com/api/"
    anthropic_api_key: str | None = None
    anthropic_base_url: str | None = None
    claude_model: str = "claude-sonnet-5-5"
    env: Mapping[str, str] = field(default_factory=dict, repr=False)  # for secret lookups

    def command_env(self) -> dict[str, str]:
        """The environment a configured control command runs with: what finding and
        running a program needs, none of orch's secrets."""
        return {k: self.env[k] for k in COMMAND_ENV if k in self.env}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        return cls(
            config_path=Path(env.get("ORCH_CONFIG") or DEFAULT_CONFIG),
            database_url=env.get("DATABASE_URL") or None,
            sqlite_path=Path(env.get("ORCH_SQLITE_PATH") or "orch.db"),
            redis_url=env.get("REDIS_URL") or None,
            host=env.get("ORCH_HOST") or "127.0.0.1",
            port=int(env.get("PORT") or 8080),
            slack_bot_token=env.get("SLACK_BOT_TOKEN") or None,
            slack_signing_secret=env.get("SLACK_SIGNING_SECRET") or None,
            slack_app_token=env.get("SLACK_APP_TOKEN") or None,
            slack_api_url=env.get("SLACK_API_URL") or "https://slack.com/api/",
            anthropic_api_key=env.get("ANTHROPIC_API_KEY") or None,
            anthropic_base_url=env.get("ANTHROPIC_BASE_URL") or None,
            claude_model=env.get("ORCH_CLAUDE_MODEL") or "claude-sonnet-5-5",
            env=env,
        )
