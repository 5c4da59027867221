"""Alembic revisions, shipped inside the package and applied programmatically.

No alembic.ini is needed at run time: `Database.upgrade()` (at start) and
`streamkeep db upgrade` call `upgrade_to_head` on an open connection. Developers
write a new revision with
`alembic -c src/streamkeep/store/alembic.ini revision --autogenerate -m "..."`.
Revisions are append-only: never edit one that has landed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection

MIGRATIONS_DIR = Path(__file__).resolve().parent
# Serialises concurrent upgrades from several PostgreSQL clients (any constant).
_PG_MIGRATION_LOCK = 0x5354524D4B4550


def alembic_config(
    connection: Connection | None = None, *, location: Path = MIGRATIONS_DIR
) -> Config:
    """A config pointing at the revisions (`location` exists for tests); env.py uses
    `connection` if given."""
    config = Config()
    config.set_main_option("script_location", str(location))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade_to_head(connection: Connection, *, location: Path = MIGRATIONS_DIR) -> None:
    """Apply every pending revision, in one transaction, on a connection not in one."""
    with _migrating(connection):
        command.upgrade(alembic_config(connection, location=location), "head")


def downgrade_to(connection: Connection, revision: str) -> None:
    """Undo the revisions after `revision`, in one transaction (for a developer going
    back; streamkeep itself only upgrades)."""
    with _migrating(connection):
        command.downgrade(alembic_config(connection), revision)


@contextlib.contextmanager
def _migrating(connection: Connection) -> Iterator[None]:
    """One transaction on a connection not in one; on PostgreSQL under a lock that
    serialises concurrent migrations, on SQLite with foreign keys off meanwhile."""
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch mode rebuilds a SQLite table by dropping the old one, which would
        # cascade-delete the rows referencing it while foreign keys are on. The pragma
        # is ignored inside a transaction, so it is switched before BEGIN.
        _pragma(connection, "foreign_keys=OFF")
    try:
        with connection.begin():
            if connection.dialect.name == "postgresql":
                connection.execute(text(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})"))
            yield
            if sqlite and connection.exec_driver_sql("PRAGMA foreign_key_check").first():
                raise RuntimeError("the migration left rows that break a foreign key")
    finally:
        if sqlite:
            _pragma(connection, "foreign_keys=ON")


def _pragma(connection: Connection, pragma: str) -> None:
    # Straight to the driver: SQLAlchemy would begin a transaction first.
    cursor = connection.connection.cursor()
    try:
        cursor.execute(f"PRAGMA {pragma}")
    finally:
        cursor.close()
