"""Connecting to PostgreSQL with errors that say what failed and never show the password.

``DATABASE_URL`` usually carries a password (``postgresql://user:secret@host/db`` or
``?password=secret``).  Nothing here puts the URL into a message: errors name the host,
port, database and user, and the driver's own message is scrubbed of the password before
it is repeated.  The original exception is not chained (``from None``), because a
traceback printer would show it, and with it whatever the driver put in it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, unquote, urlsplit

import asyncpg

T = TypeVar("T")


class PostgresUnavailable(ConnectionError):
    """The PostgreSQL server could not be reached or refused the connection."""


# Server-side errors that mean "no database to talk to right now", not "your request was
# wrong": shutting down, starting up, crashed, out of connection slots.
_OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable host (ConnectionError is an OSError)
    TimeoutError,
    asyncpg.PostgresConnectionError,  # class 08, includes "closed in the middle of operation"
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
)


def unreachable(exc: BaseException) -> bool:
    """True when ``exc`` says the database could not be reached (refused or dropped
    connection, a timeout, a server shutting down or starting), as opposed to the
    database refusing what was asked (a constraint, bad SQL, a permission), which waiting
    will not fix.  Writers hold back their rows on the first kind only (issue 10.1)."""
    if isinstance(exc, _OUTAGE_ERRORS):
        return True
    # A pooled connection the server (or the network) closed under us.
    return isinstance(exc, asyncpg.InterfaceError) and "connection is closed" in str(exc)


async def within(seconds: float, call: Awaitable[T]) -> T:
    """``call``'s result if it comes within ``seconds``; else TimeoutError, and ``call``
    is left to finish in the background rather than cancelled.

    Cancelling an asyncpg call in flight makes asyncpg send a cancel request over a new
    connection and wait for it: over a dead link that drops packets without resets (a
    "black hole") that takes a minute (measured: 61 s), so ``asyncio.timeout`` cannot
    bound a store call.  Only for calls that may safely go on running: reads, and writes
    that are idempotent (``append_events`` ignores ids already stored).
    """
    task = asyncio.ensure_future(call)
    task.add_done_callback(_retrieve)  # an abandoned call's error is not "never retrieved"
    return await asyncio.wait_for(asyncio.shield(task), seconds)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


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
