"""Alembic environment: runs on the connection it is given (the normal case, see
`migrations.upgrade_to_head`), or opens one from the configured URL when run by the
`alembic` command line tool."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from streamkeep.store.models import Base


def _run(connection: Connection) -> None:
    # Batch mode lets later revisions alter SQLite tables (by copying them).
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_url() -> None:
    from streamkeep.config import load_settings
    from streamkeep.store.db import Database

    url = context.config.get_main_option("sqlalchemy.url") or (
        load_settings().resolved_database_url
    )
    db = Database.from_url(url)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(_run)
    finally:
        await db.dispose()


def _main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    elif context.is_offline_mode():
        raise SystemExit("offline (--sql) migrations are not supported")
    else:
        asyncio.run(_run_from_url())


_main()
