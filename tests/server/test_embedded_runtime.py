"""The server while the embedded model's runtime is prepared (`llm.runtime`): it serves
at once, lists `local/smollm2` as `preparing`, answers a request for it 503 with
`Retry-After` in each API's own error shape, serves the other models meanwhile, and once
the build ends serves the embedded model without a restart.

The build command is a real Python script (see tests/llm/test_runtime.py's BUILD); the
server is real (uvicorn on a loopback port) with the fake provider as `fake`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamkeep.cli.serve import build_server
from streamkeep.server import create_app
from tests.conftest import IN_CI
from tests.fakes.upstream import FakeUpstream
from tests.llm.test_runtime import Build
from tests.server.conftest import Running, make_settings, stop_server
from tests.server.sse import read_all

LOCAL = "local/smollm2"
CHAT = {"model": LOCAL, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}
# Each API's request for the embedded model, and where its error's kind is.
REQUESTS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "/v1/chat/completions": (CHAT, ("error", "code")),
    "/v1/messages": (CHAT, ("error", "type")),
    "/v1/responses": ({"model": LOCAL, "input": "Say hi."}, ("error", "code")),
    "/api/chats": ({"model": LOCAL}, ("error", "type")),
}
KINDS = {
    "/v1/chat/completions": "model_not_ready",
    "/v1/messages": "overloaded_error",  # Anthropic's type for a 503
    "/v1/responses": "model_not_ready",
    "/api/chats": "model_not_ready",
}


async def _serve(app: Any) -> Running:
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = build_server(app.state.settings, app=app, log_level="warning")
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    return Running(server, task, f"http://127.0.0.1:{sock.getsockname()[1]}")


@pytest.fixture
async def preparing(
    tmp_path: Path, data_dir: Path, fake_upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[httpx.AsyncClient, Build]]:
    """A server whose runtime build is half done, waiting for `build.gate`."""
    build = Build(tmp_path)
    monkeypatch.syspath_prepend(str(build.site))
    settings = make_settings(data_dir, fake_upstream.base_url, enable_local_model=True)
    running = await _serve(create_app(settings, runtime=build.runtime))
    try:
        async with httpx.AsyncClient(base_url=running.url, timeout=120) as client:
            await build.at_half()
            yield client, build
    finally:
        build.gate.touch()
        await stop_server(running)


def _models(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["id"]: m for m in body["data"]}


async def test_the_embedded_model_is_listed_as_preparing_and_the_others_serve(
    preparing: tuple[httpx.AsyncClient, Build],
) -> None:
    client, _ = preparing
    models = _models((await client.get("/v1/models")).json())
    local = models[LOCAL]
    assert local["status"] == "preparing"
    assert "building llama-cpp-python (50%)" in local["status_detail"]
    assert local["seconds_left"] >= 5
    assert "status" not in models["fake/fake-model"]
    r = await client.post("/v1/chat/completions", json={**CHAT, "model": "fake/fake-model"})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Hello! You said: Say hi."


@pytest.mark.parametrize("path", list(REQUESTS))
async def test_a_request_for_it_answers_503_with_retry_after_in_the_apis_shape(
    preparing: tuple[httpx.AsyncClient, Build], path: str
) -> None:
    client, _ = preparing
    body, where = REQUESTS[path]
    r = await client.post(path, json=body)
    assert r.status_code == 503, r.text
    assert 5 <= int(r.headers["retry-after"]) <= 30
    error = r.json()
    for key in where:
        error = error[key]
    assert error == KINDS[path]
    assert "not ready yet" in r.text


async def test_once_built_the_embedded_model_answers_without_a_restart(
    preparing: tuple[httpx.AsyncClient, Build],
) -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        if IN_CI:
            pytest.fail("llama_cpp is not importable; CI installs it with the test extras")
        pytest.skip("llama_cpp is not importable: install with `pip install -e '.[local]'`")
    client, build = preparing
    build.gate.touch()
    assert await build.runtime.wait() == "ready"
    assert "status" not in _models((await client.get("/v1/models")).json())[LOCAL]
    chat = (await client.post("/api/chats", json={"model": LOCAL})).json()
    path = f"/api/chats/{chat['id']}/messages"
    async with client.stream("POST", path, json={"content": "Say hello."}) as r:
        assert r.status_code == 200
        events = await read_all(r)
    assert events[-2].type == "finish"


async def test_a_failed_build_keeps_the_server_serving_and_says_why(
    tmp_path: Path, data_dir: Path, fake_upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = Build(tmp_path, status=1)
    monkeypatch.syspath_prepend(str(build.site))
    build.gate.touch()
    settings = make_settings(data_dir, fake_upstream.base_url, enable_local_model=True)
    running = await _serve(create_app(settings, runtime=build.runtime))
    try:
        assert await build.runtime.wait() == "failed"
        async with httpx.AsyncClient(base_url=running.url, timeout=30) as client:
            local = _models((await client.get("/v1/models")).json())[LOCAL]
            assert local["status"] == "failed"
            assert "no C compiler" in local["status_detail"]
            r = await client.post("/v1/chat/completions", json=CHAT)
            assert r.status_code == 503
            assert "restart the server" in r.json()["error"]["message"]
            ok = await client.post(
                "/v1/chat/completions", json={**CHAT, "model": "fake/fake-model"}
            )
            assert ok.status_code == 200
    finally:
        await stop_server(running)
    assert sys.modules.get(build.module) is None


async def test_a_reply_asked_of_it_in_a_chat_answers_503_and_stores_nothing(
    preparing: tuple[httpx.AsyncClient, Build],
) -> None:
    client, _ = preparing
    chat = (await client.post("/api/chats", json={"model": "fake/fake-model"})).json()
    path = f"/api/chats/{chat['id']}/messages"
    r = await client.post(path, json={"content": "hi", "model": LOCAL})
    assert r.status_code == 503, r.text
    assert r.json()["error"]["type"] == "model_not_ready"
    assert int(r.headers["retry-after"]) >= 5
    assert (await client.get(f"/api/chats/{chat['id']}")).json()["messages"] == []
