"""Real Redis (keys under a prefix of the test's own, deleted afterwards) and a real
PostgreSQL database per test, for the scale-out parts."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from streamkeep.scaleout import Keys
from streamkeep.store import ChatStore, Database
from tests.conftest import TEST_REDIS_URL, require_service
from tests.pg import private_database


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
    async with private_database("sk_scale") as url:
        yield url


@pytest_asyncio.fixture
async def store(pg_url: str) -> AsyncIterator[ChatStore]:
    database = Database.from_url(pg_url)
    await database.upgrade()
    try:
        yield ChatStore(database)
    finally:
        await database.dispose()
