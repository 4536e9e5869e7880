"""Connecting to PostgreSQL with errors that say what failed and never show the password.

``DATABASE_URL`` usually carries a password (``postgresql://user:secret@host/db`` or
``?password=secret``).  Nothing here puts the URL into a message: errors name the host,
port, database and user, and the driver's own message is scrubbed of the password before
it is repeated.  The original exception is not chained (``from None``), because a
traceback printer would show it, and with it whatever the driver put in it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import asyncpg


class PostgresUnavailable(ConnectionError):
    """The PostgreSQL server could not be reached or refused the connection."""


def _password(dsn: str) -> str | None:
    try:
        parts = urlsplit(dsn)
        query = parse_qs(parts.query)
        return parts.password or (query["password"][0] if "password" in query else None)
    except ValueError:  # malformed netloc (e.g. a bad port): fall back to no password
        return None


def describe(dsn: str) -> str:
    """``user@host:port/database`` for messages: never the password or query string."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or "localhost"
        port = parts.port or 5432
        user = unquote(parts.username) if parts.username else "(default user)"
    except ValueError:
        return "(unparsable DATABASE_URL)"
    database = parts.path.lstrip("/") or "(default database)"
    return f"{user}@{host}:{port}/{database}"


def scrub(text: str, dsn: str) -> str:
    """``text`` with the DSN's password (raw and percent-encoded) replaced by ``***``."""
    password = _password(dsn)
    if password:
        for form in {password, quote(password, safe=""), quote(password)}:
            text = text.replace(form, "***")
    return text


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def create_pool(
    dsn: str,
    *,
    min_size: int,
    max_size: int,
    schema: str | None,
    connect_timeout: float,
) -> asyncpg.Pool:
    """A connected pool, or PostgresUnavailable with a clear, password-free message.

    ``schema`` becomes the connections' ``search_path``: every table the store and its
    migrations name, unqualified, lives there.  Without it the DSN (``?search_path=...``
    or ``?options=-csearch_path%3D...``) or the server's default decides.
    """
    settings: dict[str, Any] = {}
    if schema is not None:
        settings["search_path"] = quote_ident(schema)
    try:
        pool: asyncpg.Pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            server_settings=settings or None,
            timeout=connect_timeout,  # per connection attempt; asyncpg's default is 60 s
        )
    except Exception as exc:  # network, auth, DSN syntax: all become one clear error
        reason = scrub(f"{type(exc).__name__}: {exc}", dsn)
        raise PostgresUnavailable(
            f"cannot connect to PostgreSQL at {describe(dsn)} (from DATABASE_URL): {reason}"
        ) from None
    return pool
