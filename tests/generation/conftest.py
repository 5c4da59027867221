"""Real parts for the generation engine: a store on SQLite and PostgreSQL, the model
registry pointed at a fake OpenAI-compatible upstream over loopback HTTP, a manager."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from streamkeep.config import ProviderConfig, Settings
from streamkeep.generation import GenerationManager
from streamkeep.llm.registry import ModelRegistry
from streamkeep.store import ChatStore, Database
from tests.fakes.upstream import FakeUpstream, fake_upstream
from tests.pg import private_database

__all__ = ["fake_upstream"]

MODEL = "fake/fake-model"


@pytest_asyncio.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, data_dir: Path) -> AsyncIterator[str]:
    """A fresh, empty database: a SQLite file, or a PostgreSQL database of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{data_dir / 'streamkeep.db'}"
        return
    async with private_database("sk_gen") as url:
        yield url


@pytest_asyncio.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database.from_url(database_url)
    await database.upgrade()
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def store(db: Database) -> ChatStore:
    return ChatStore(db)


def make_settings(up: FakeUpstream, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "providers": {
            "fake": ProviderConfig(
                kind="openai", base_url=up.base_url, api_key="x", models=["fake-model"]
            )
        },
        "enable_local_model": False,
        # Tests tick the checkpointer themselves, so what each tick writes is exact.
        "checkpoint_interval": 3600.0,
        "shutdown_grace": 5.0,
        **overrides,
    }
    return Settings(**values)


ManagerFactory = Callable[..., contextlib.AbstractAsyncContextManager[GenerationManager]]


@pytest.fixture
def manager_factory(
    store: ChatStore, fake_upstream: FakeUpstream, data_dir: Path
) -> ManagerFactory:
    """`async with manager_factory(**settings) as manager:` a started manager."""

    @contextlib.asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[GenerationManager]:
        settings = make_settings(fake_upstream, data_dir, **overrides)
        registry = ModelRegistry(settings)
        manager = GenerationManager(store, registry, settings)
        await manager.start()
        try:
            yield manager
        finally:
            await manager.shutdown()
            await registry.aclose()

    return factory


@pytest_asyncio.fixture
async def manager(manager_factory: ManagerFactory) -> AsyncIterator[GenerationManager]:
    async with manager_factory() as m:
        yield m
