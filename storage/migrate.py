"""Versioned SQL migration files, shared by every backend.

Each backend keeps its own folder, ``storage/migrations/<backend>/``, of files named
``NNNN_name.sql`` (four-digit version, lower-case name).  This module only finds, names and
orders them; applying them (transactions, the ``schema_migrations`` bookkeeping table) is
the backend's job because each engine does DDL and locking differently.

A migration file, once released, is never edited: a change is a new file with the next
version.  Versions need not be contiguous but must be unique per backend.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations_dir(backend: str) -> Traversable:
    """The packaged folder for ``backend`` (works from a source tree and from a wheel)."""
    return resources.files("storage").joinpath("migrations", backend)


def load_migrations(backend: str, root: Traversable | Path | None = None) -> list[Migration]:
    """All migrations for ``backend``, ordered by version.

    ``root`` overrides the folder (tests).  Files not ending in ``.sql`` are ignored;
    a ``.sql`` file with a malformed name or a duplicate version is an error, because a
    silently skipped migration is a schema that differs between machines.
    """
    folder = root if root is not None else migrations_dir(backend)
    if not folder.is_dir():
        raise FileNotFoundError(f"no migrations folder for backend {backend!r}: {folder}")
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql") or not entry.is_file():
            continue
        match = FILE_NAME.match(entry.name)
        if match is None:
            raise ValueError(
                f"migration file {entry.name!r} ({backend}) is not named NNNN_name.sql "
                "(four digits, lower-case letters, digits and underscores)"
            )
        version = int(match["version"])
        if version in found:
            raise ValueError(
                f"duplicate migration version {version:04d} ({backend}): "
                f"{found[version].name!r} and {match['name']!r}"
            )
        found[version] = Migration(version, match["name"], entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def pending(migrations: Iterable[Migration], applied: Iterable[int]) -> list[Migration]:
    """The migrations whose versions are not in ``applied``, in version order."""
    done = set(applied)
    return sorted((m for m in migrations if m.version not in done), key=lambda m: m.version)
