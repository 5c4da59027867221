"""PostgreSQL databases private to a test (or a session): created on the shared server,
handed out as a URL, dropped afterwards, so suites running at once never collide."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url

from tests.conftest import TEST_DATABASE_URL, require_service


async def execute(url: str, *sql: str) -> None:
    """Run statements outside a transaction (CREATE / DROP DATABASE need that)."""
    conn = await asyncpg.connect(url)
    try:
        for statement in sql:
            await conn.execute(statement)
    finally:
        await conn.close()


def _new_name(prefix: str) -> str:
    server = make_url(TEST_DATABASE_URL)
    require_service("PostgreSQL", server.host or "127.0.0.1", server.port or 5432)
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def _url(name: str) -> str:
    return make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False)


@contextlib.asynccontextmanager
async def private_database(prefix: str) -> AsyncIterator[str]:
    """A new, empty database on the test server; yields its URL, drops it at the end."""
    name = _new_name(prefix)
    await execute(TEST_DATABASE_URL, f'CREATE DATABASE "{name}"')
    try:
        yield _url(name)
    finally:
        await execute(TEST_DATABASE_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _run(coro: Coroutine[Any, Any, None]) -> None:
    # Its own thread and loop: session set-up must not disturb pytest-asyncio's loop.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


@contextlib.contextmanager
def private_database_sync(prefix: str) -> Iterator[str]:
    """`private_database` for synchronous (e.g. session-scoped) fixtures."""
    name = _new_name(prefix)
    _run(execute(TEST_DATABASE_URL, f'CREATE DATABASE "{name}"'))
    try:
        yield _url(name)
    finally:
        _run(execute(TEST_DATABASE_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
