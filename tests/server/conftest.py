"""The server under test: `create_app` under a real uvicorn on a free loopback port,
against a real SQLite file or a real PostgreSQL database, and the fake upstream (a real
HTTP server speaking OpenAI's wire format)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from streamkeep.cli.serve import build_server
from streamkeep.config import ProviderConfig, Settings
from streamkeep.store import ChatStore
from tests.fakes.upstream import FakeUpstream, fake_upstream
from tests.pg import execute, private_database_sync

__all__ = ["fake_upstream"]

MODEL = "fake/fake-model"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database private to this session, dropped at its end."""
    with private_database_sync("streamkeep_server") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, data_dir: Path) -> str:
    """An empty database: a new SQLite file, or the session's PostgreSQL emptied."""
    if request.param == "sqlite":
        return f"sqlite:///{data_dir / 'streamkeep.db'}"
    url: str = request.getfixturevalue("postgres_url")
    await execute(url, "DROP SCHEMA public CASCADE", "CREATE SCHEMA public")
    return url


def make_settings(data_dir: Path, upstream_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "providers": {
            "fake": ProviderConfig(
                kind="openai", base_url=upstream_url, api_key="x", models=["fake-model"]
            )
        },
        "enable_local_model": False,
        "model": MODEL,
        "shutdown_grace": 2.0,
        **overrides,
    }
    return Settings(**values)


@dataclass
class Server:
    """A running server: its app (for `app.state`), URL and an HTTP client."""

    app: FastAPI
    url: str
    client: httpx.AsyncClient
    upstream: FakeUpstream

    @property
    def store(self) -> ChatStore:
        store: ChatStore = self.app.state.store
        return store

    async def new_chat(self, **body: Any) -> dict[str, Any]:
        r = await self.client.post("/api/chats", json=body)
        assert r.status_code == 201, r.text
        data: dict[str, Any] = r.json()
        return data


@dataclass
class Running:
    server: uvicorn.Server
    task: asyncio.Task[None]
    url: str


async def start_server(settings: Settings) -> Running:
    """`streamkeep serve`'s uvicorn server, started on a free port of this event loop."""
    # proto=IPPROTO_TCP, so asyncio's transports set TCP_NODELAY on accepted connections
    # (without it Nagle holds back a chunk written right after another by ~40 ms).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = build_server(settings, log_level="warning")
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()  # raises the start-up failure
            raise RuntimeError("the server exited during start-up")
        await asyncio.sleep(0.01)
    return Running(server, task, f"http://127.0.0.1:{port}")


async def stop_server(running: Running) -> None:
    running.server.should_exit = True
    await running.task


ServerFactory = Callable[..., Coroutine[Any, Any, Server]]


@pytest.fixture
async def server_factory(
    database_url: str, data_dir: Path, fake_upstream: FakeUpstream
) -> AsyncIterator[ServerFactory]:
    """Start servers with settings overrides (same database, same upstream)."""
    started: list[tuple[Running, httpx.AsyncClient]] = []

    async def make(**overrides: Any) -> Server:
        settings = make_settings(
            data_dir, fake_upstream.base_url, database_url=database_url, **overrides
        )
        running = await start_server(settings)
        client = httpx.AsyncClient(base_url=running.url, timeout=30)
        started.append((running, client))
        app = running.server.config.app
        assert isinstance(app, FastAPI)
        return Server(app, running.url, client, fake_upstream)

    yield make
    for running, client in reversed(started):
        await client.aclose()
        await stop_server(running)


@pytest.fixture
async def server(server_factory: ServerFactory) -> Server:
    return await server_factory()
