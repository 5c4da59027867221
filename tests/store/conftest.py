"""Store fixtures: every store test runs on a real SQLite file and on a real
PostgreSQL database private to this test session (other suites share the server)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from streamkeep.store import ChatStore, Database
from tests.pg import private_database_sync


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this session, dropped at its end."""
    with private_database_sync("streamkeep_store") as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store' / 'streamkeep.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """An empty database (no tables yet)."""
    database = Database.from_url(database_url)
    if not database.is_sqlite:
        async with database.engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
    try:
        yield database
    finally:
        await database.dispose()


class Clock:
    """A controllable clock: each reading is `step` later than the one before."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
        self.step = timedelta(milliseconds=1)

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(db: Database, clock: Clock) -> ChatStore:
    await db.upgrade()
    return ChatStore(db, clock=clock)
