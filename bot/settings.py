"""Settings from the environment. The only module that reads ``os.environ``."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bot.config_values import parse_duration

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "demo" / "projects.yml"


# Passed on to control commands (agents.command_adapter); everything else is withheld.
COMMAND_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME", "KUBECONFIG",
               "XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS")  # fmt: skip

# The HTTP API (bot.api): off, local (the demo: loopback only, the local operator) or
# token (Authorization: Bearer, tokens from ORCH_API_TOKENS).
API_MODES = ("off", "local", "token")
# An API user's name (ORCH_API_TOKENS, projects.yml's api_users).
API_USER_PATTERN = r"[a-z0-9][a-z0-9._-]{0,62}"
API_TOKEN_MIN_LENGTH = 16
LOG_FORMATS = ("text", "json")  # ORCH_LOG_FORMAT (bot.telemetry.logs)


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
    # None: "token" when api_tokens are set, else "off" (bot.api.auth.api_mode).
    api_mode: str | None = None
    api_tokens: Mapping[str, str] = field(default_factory=dict, repr=False)  # token -> user
    log_format: str = "text"  # ORCH_LOG_FORMAT: text (for people) or json (one object a line)
    # A dead-man switch (healthchecks.io…) pinged while orch is healthy; its URL holds a
    # token, so it is kept out of repr and logs (bot.telemetry.heartbeat).
    heartbeat_url: str | None = field(default=None, repr=False)
    heartbeat_interval: float = 60.0
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
            port=_port(env.get("PORT") or "8080"),
            slack_bot_token=env.get("SLACK_BOT_TOKEN") or None,
            slack_signing_secret=env.get("SLACK_SIGNING_SECRET") or None,
            slack_app_token=env.get("SLACK_APP_TOKEN") or None,
            slack_api_url=env.get("SLACK_API_URL") or "https://slack.com/api/",
            anthropic_api_key=env.get("ANTHROPIC_API_KEY") or None,
            anthropic_base_url=env.get("ANTHROPIC_BASE_URL") or None,
            claude_model=env.get("ORCH_CLAUDE_MODEL") or "claude-sonnet-5-5",
            api_mode=_api_mode(env.get("ORCH_API_MODE") or None),
            api_tokens=parse_api_tokens(env.get("ORCH_API_TOKENS") or ""),
            log_format=_log_format(env.get("ORCH_LOG_FORMAT") or "text"),
            heartbeat_url=_heartbeat_url(env.get("ORCH_HEARTBEAT_URL") or None),
            heartbeat_interval=_seconds(
                "ORCH_HEARTBEAT_INTERVAL", env.get("ORCH_HEARTBEAT_INTERVAL") or "60s"
            ),
            env=env,
        )


def _port(value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise ValueError(f"PORT must be a port number (0-65535), got {value!r}")
    return int(value)


def _api_mode(value: str | None) -> str | None:
    if value is not None and value not in API_MODES:
        raise ValueError(f"ORCH_API_MODE must be one of {', '.join(API_MODES)}, got {value!r}")
    return value


def _log_format(value: str) -> str:
    if value not in LOG_FORMATS:
        raise ValueError(f"ORCH_LOG_FORMAT must be text or json, got {value!r}")
    return value


def _heartbeat_url(value: str | None) -> str | None:
    # The value is a secret (a token in its path): the error never repeats it.
    if value is not None and not re.match(r"https?://[^/\s]+", value):
        raise ValueError("ORCH_HEARTBEAT_URL must be an http:// or https:// URL")
    return value


def _seconds(name: str, value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def parse_api_tokens(text: str) -> dict[str, str]:
    """``ORCH_API_TOKENS``: ``user:token`` entries separated by commas → {token: user}.
    A user may have several tokens (rotation); a token names one user.  Errors say which
    entry is wrong and never repeat a token."""
    tokens: dict[str, str] = {}
    for n, entry in enumerate((e.strip() for e in text.split(",")), start=1):
        if not entry:
            continue
        user, sep, token = entry.partition(":")
        where = f"ORCH_API_TOKENS entry {n}"
        if not sep or not re.fullmatch(API_USER_PATTERN, user):
            raise ValueError(f"{where} must be user:token with a user like alice or ci-bot")
        if len(token) < API_TOKEN_MIN_LENGTH or re.search(r"\s", token):
            raise ValueError(
                f"{where} ({user}): a token is at least {API_TOKEN_MIN_LENGTH} characters"
                " without spaces"
            )
        if token in tokens:
            raise ValueError(f"{where} ({user}): that token is already given to {tokens[token]}")
        tokens[token] = user
    return tokens
