"""Real Redis (keys under a prefix of the test's own, deleted afterwards) and a real
PostgreSQL database per test, for the scale-out parts."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from sqlalchemy.engine import make_url

from streamkeep.scaleout import Keys
from streamkeep.store import ChatStore, Database
from tests.conftest import TEST_DATABASE_URL, TEST_REDIS_URL, require_service


def _require_redis() -> None:
    url = urlsplit(TEST_REDIS_URL)
    require_service("Redis", url.hostname or "127.0.0.1", url.port or 6379)


@pytest.fixture
def keys() -> Keys:
    return Keys(prefix=f"sktest:{uuid.uuid4().hex[:12]}:")


@pytest_asyncio.fixture
async def redis(keys: Keys) -> AsyncIterator[aioredis.Redis]:
    """This worker's connection pool; deletes the test's keys at the end."""
    _require_redis()
    client = aioredis.from_url(TEST_REDIS_URL)
    try:
        yield client
    finally:
        stale = [k async for k in client.scan_iter(f"{keys.prefix}*")]
        if stale:
            await client.delete(*stale)
        await client.aclose()


@pytest_asyncio.fixture
async def other_redis() -> AsyncIterator[aioredis.Redis]:
    """A second, separate connection pool: what another worker would have."""
    _require_redis()
    client = aioredis.from_url(TEST_REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


@pytest_asyncio.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database of the test's own (workers share one database)."""
    url = make_url(TEST_DATABASE_URL)
    require_service("PostgreSQL", url.host or "127.0.0.1", url.port or 5432)
    name = f"sk_scale_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(TEST_DATABASE_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest_asyncio.fixture
async def store(pg_url: str) -> AsyncIterator[ChatStore]:
    database = Database.from_url(pg_url)
    await database.upgrade()
    try:
        yield ChatStore(database)
    finally:
        await database.dispose()
