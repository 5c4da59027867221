"""`streamkeep db upgrade`: apply the database migrations (the server also does this
at every start; this is for deploys that migrate before starting workers)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from sqlalchemy.engine import make_url


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("db", help="database maintenance")
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    upgrade = sub.add_parser("upgrade", help="apply pending migrations")
    upgrade.add_argument(
        "--database-url", help="SQLAlchemy URL (default: STREAMKEEP_DATABASE_URL or SQLite)"
    )
    upgrade.set_defaults(func=run_upgrade)


# Imports inside the functions keep `streamkeep --help` fast.


def run_upgrade(args: argparse.Namespace) -> int:
    from streamkeep.config import load_settings

    url = load_settings(database_url=args.database_url).resolved_database_url
    asyncio.run(_upgrade(url))
    print(f"database is up to date: {make_url(url).render_as_string(hide_password=True)}")
    return 0


async def _upgrade(url: str) -> None:
    from streamkeep.store.db import Database

    db = Database.from_url(url)
    try:
        await db.upgrade()
    finally:
        await db.dispose()
