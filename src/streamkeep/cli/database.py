"""What the commands that work on the database directly (`users`, `keys`) share: the
`--database-url` option, and running on a `ChatStore` of the migrated database, with
the store's refusals (and an unreachable database) shown as one line and exit code 1.

They need no running server: an admin runs them on the server's machine, with its
settings (`STREAMKEEP_DATABASE_URL`, `streamkeep.toml`, the data dir's SQLite file).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from streamkeep.store import ChatStore

DATABASE_URL_HELP = (
    "SQLAlchemy URL (default: $STREAMKEEP_DATABASE_URL, else the SQLite file in the data dir)"
)


def add_database_argument(parser: argparse.ArgumentParser) -> None:
    """`--database-url`, left unset unless given, so it may come before or after the
    action (`users --database-url X list`, `users list --database-url X`)."""
    parser.add_argument("--database-url", default=argparse.SUPPRESS, help=DATABASE_URL_HELP)


def fail(message: str) -> int:
    """Say what went wrong on stderr; the exit code of a refusal."""
    Console(stderr=True, soft_wrap=True).print(f"[red]error:[/] {escape(message)}")
    return 1


def run_on_store(args: argparse.Namespace, work: Callable[[ChatStore], Awaitable[int]]) -> int:
    """Migrate the database (as `db upgrade` does), then run `work` on its store; its
    result is the exit code. A `StoreError` or an unreachable database: a message, 1."""
    # Imported here: `streamkeep --help` does not load the store.
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    from streamkeep.config import load_settings
    from streamkeep.store import StoreError

    url = load_settings(database_url=getattr(args, "database_url", None)).resolved_database_url
    try:
        return asyncio.run(_run(url, work))
    except StoreError as exc:
        return fail(exc.message)
    except (OSError, OperationalError) as exc:
        shown = make_url(url).render_as_string(hide_password=True)
        return fail(f"cannot use the database {shown}: {exc}")


async def _run(url: str, work: Callable[[ChatStore], Awaitable[int]]) -> int:
    from streamkeep.store import ChatStore, Database

    db = Database.from_url(url)
    try:
        await db.upgrade()
        return await work(ChatStore(db))
    finally:
        await db.dispose()


def when(moment: datetime | None, none: str = "", *, table: bool = False) -> str:
    """A stored time (UTC) to the minute. In a table the date and the time are two
    lines: the column is then 10 characters wide, and a narrow terminal cuts nothing."""
    if moment is None:
        return none
    between = "\n" if table else " "
    return f"{moment:%Y-%m-%d}{between}{moment:%H:%M}"
