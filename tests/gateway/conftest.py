"""The gateway under test: `create_app` under a real uvicorn on a free loopback port, a
SQLite file in the test's data directory, and the fake upstream (real HTTP, OpenAI's
wire format) as the provider `fake`. Clients are the official OpenAI SDK."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from openai import AsyncOpenAI, OpenAI

from streamkeep.cli.serve import build_server
from streamkeep.config import ProviderConfig, Settings
from tests.fakes.upstream import FakeUpstream, fake_upstream

__all__ = ["fake_upstream"]

MODEL = "fake/fake-model"


@dataclass
class Gateway:
    url: str
    app: FastAPI
    upstream: FakeUpstream
    http: httpx.AsyncClient

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def sync_client(self, **kw: Any) -> OpenAI:
        return OpenAI(base_url=self.base_url, api_key="unused", max_retries=0, **kw)

    def async_client(self, **kw: Any) -> AsyncOpenAI:
        return AsyncOpenAI(base_url=self.base_url, api_key="unused", max_retries=0, **kw)

    async def chat(self, chat_id: str) -> dict[str, Any]:
        """The stored chat (`GET /api/chats/{id}`: the active branch's messages)."""
        r = await self.http.get(f"/api/chats/{chat_id}")
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data


def settings_for(data_dir: Path, upstream: FakeUpstream, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": f"sqlite:///{data_dir / 'streamkeep.db'}",
        "providers": {
            "fake": ProviderConfig(
                kind="openai", base_url=upstream.base_url, api_key="x", models=["fake-model"]
            )
        },
        "enable_local_model": False,
        "model": MODEL,
        "shutdown_grace": 2.0,
        **overrides,
    }
    return Settings(**values)


GatewayFactory = Callable[..., Coroutine[Any, Any, Gateway]]


@pytest.fixture
async def gateway_factory(
    data_dir: Path, fake_upstream: FakeUpstream
) -> AsyncIterator[GatewayFactory]:
    started: list[tuple[Any, asyncio.Task[None], httpx.AsyncClient]] = []

    async def make(**overrides: Any) -> Gateway:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        server = build_server(
            settings_for(data_dir, fake_upstream, **overrides), log_level="warning"
        )
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the server exited during start-up")
            await asyncio.sleep(0.01)
        http = httpx.AsyncClient(base_url=url, timeout=30)
        started.append((server, task, http))
        app = server.config.app
        assert isinstance(app, FastAPI)
        return Gateway(url, app, fake_upstream, http)

    yield make
    for server, task, http in reversed(started):
        await http.aclose()
        server.should_exit = True
        await task


@pytest.fixture
async def gateway(gateway_factory: GatewayFactory) -> Gateway:
    return await gateway_factory()
