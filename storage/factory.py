"""Choose the store from settings: unset ``DATABASE_URL`` means the embedded SQLite file."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from storage.base import Store
from storage.postgres import PostgresStore
from storage.sqlite import SQLiteStore

POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})


def open_store(
    database_url: str | None, sqlite_path: str | Path, *, auto_migrate: bool = True
) -> Store:
    """Build the store for ``database_url`` (None or empty: SQLite at ``sqlite_path``).

    It does not connect: the caller awaits ``store.open()`` (which also migrates, unless
    ``auto_migrate=False``, for a command that wants ``migrate()``'s list of versions) and
    later ``store.close()``.
    """
    if not database_url:
        return SQLiteStore(sqlite_path, auto_migrate=auto_migrate)
    # Only the scheme goes into messages: the rest of the URL may hold a password.
    scheme = urlsplit(database_url).scheme.lower()
    if scheme in POSTGRES_SCHEMES:
        return PostgresStore(database_url, auto_migrate=auto_migrate)
    raise ValueError(
        f"DATABASE_URL has unsupported scheme {scheme!r}; use postgresql://... "
        "or leave it unset for the embedded SQLite store"
    )
