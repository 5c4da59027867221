"""Store fixtures: every store test runs on a real SQLite file and on a real
PostgreSQL database private to this test session (other suites share the server)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from streamkeep.store import ChatStore, Database
from tests.conftest import TEST_DATABASE_URL, require_service


def _run(coro: Coroutine[Any, Any, None]) -> None:
    # Its own thread and loop: session set-up must not disturb pytest-asyncio's loop.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


async def _admin(sql: str) -> None:
    server = Database.from_url(TEST_DATABASE_URL)
    try:
        # CREATE / DROP DATABASE cannot run inside a transaction.
        async with server.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(sql))
    finally:
        await server.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this session, dropped at its end."""
    server = make_url(TEST_DATABASE_URL)
    require_service("PostgreSQL", server.host or "127.0.0.1", server.port or 5432)
    name = f"streamkeep_store_{uuid.uuid4().hex[:12]}"
    _run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        _run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


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
