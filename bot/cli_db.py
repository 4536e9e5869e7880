"""``orch db grant-runtime ROLE``: let ``ROLE`` run orch without owning its tables.

Run with the owner's ``DATABASE_URL`` (the one ``orch migrate`` uses), after every
``orch migrate``; ``orch run`` then connects as ``ROLE``, which may neither change audit
rows nor drop their trigger (``storage.postgres_roles`` says what is granted and why).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bot.settings import Settings

DB_COMMAND = "db"


def add_db_parser(sub: Any) -> None:
    """``sub`` is the ``add_subparsers`` of ``orch``'s parser."""
    db = sub.add_parser(DB_COMMAND, help="database administration (run as the tables' owner)")
    actions = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    grant = actions.add_parser(
        "grant-runtime",
        help="grant ROLE what `orch run` needs, audit log append-only (re-run after migrate)",
    )
    grant.add_argument("role", help="the existing LOGIN role `orch run` will connect as")


def db_command(args: argparse.Namespace, settings: Settings) -> int:
    from bot import event_loop

    return event_loop.run(_grant_runtime(args.role, settings))


async def _grant_runtime(role: str, settings: Settings) -> int:
    """0 when granted; 1 when refused or the database failed; 2 without PostgreSQL."""
    import asyncpg

    from storage.factory import POSTGRES_SCHEMES
    from storage.postgres import PostgresStore
    from storage.postgres_connect import scrub
    from storage.postgres_roles import GrantRefused, grant_runtime

    url = settings.database_url
    if not url or url.split(":", 1)[0].lower() not in POSTGRES_SCHEMES:
        print("orch db: DATABASE_URL must be the owner's postgresql:// URL", file=sys.stderr)
        return 2
    store = PostgresStore(url, auto_migrate=False, min_size=1, max_size=1)
    try:
        await store.open()
        async with store.transaction() as conn:
            granted = await grant_runtime(conn, role)
    except (GrantRefused, OSError) as exc:  # OSError: PostgresUnavailable, password-free
        print(f"orch db: {exc}", file=sys.stderr)
        return 1
    except asyncpg.PostgresError as exc:  # e.g. the URL's role may not grant on the tables
        print(f"orch db: {scrub(f'{type(exc).__name__}: {exc}', url)}", file=sys.stderr)
        return 1
    finally:
        await store.close()
    print(
        f"orch db: {granted.role} may read and write the {granted.tables} tables of schema "
        f"{granted.schema}, and only read and append to {', '.join(granted.append_only)}"
    )
    return 0
