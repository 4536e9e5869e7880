"""Where the real PostgreSQL and Redis for tests live, and what to do when they are away.

``ORCH_TEST_DATABASE_URL`` / ``ORCH_TEST_REDIS_URL`` override the defaults (the CI
services on loopback).  Without a service a test skips with the reason, except under
``CI=true``, where it fails: CI must never go green by skipping the production path.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _answers(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 1
        ):
            return True
    except OSError:
        return False


def _require(name: str, url: str, default_port: int) -> str:
    if _answers(url, default_port):
        return url
    reason = f"{name} does not answer at {urlsplit(url).netloc} (set ORCH_TEST_{name.upper()}_URL)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def database_url() -> str:
    url = os.environ.get("ORCH_TEST_DATABASE_URL") or DEFAULT_DATABASE_URL
    return _require("database", url, 5432)


def redis_url() -> str:
    url = os.environ.get("ORCH_TEST_REDIS_URL") or DEFAULT_REDIS_URL
    return _require("redis", url, 6379)
