"""End to end with the embedded model and no configuration at all (`make run`'s setup)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import httpx
import pytest

from streamkeep.config import LOCAL_MODEL, load_settings
from streamkeep.llm import Accumulator, ChatRequest, Message
from streamkeep.llm.usage import estimate_tokens
from tests.conftest import IN_CI
from tests.server.conftest import start_server, stop_server
from tests.server.sse import events, read_all, text_of, until

pytestmark = pytest.mark.slow


def _require_llama_cpp() -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        if IN_CI:
            pytest.fail("llama_cpp is not importable; CI installs it with the test extras")
        pytest.skip("llama_cpp is not importable: install with `pip install -e '.[local]'`")


async def test_a_chat_streams_from_the_local_model_and_is_stored(data_dir: Path) -> None:
    _require_llama_cpp()
    settings = load_settings(data_dir=str(data_dir))  # the defaults: SQLite + local/smollm2
    assert settings.default_model() == LOCAL_MODEL
    running = await start_server(settings)
    try:
        async with httpx.AsyncClient(base_url=running.url, timeout=120) as client:
            chat = (await client.post("/api/chats", json={})).json()
            assert chat["model"] == LOCAL_MODEL
            path = f"/api/chats/{chat['id']}/messages"
            async with client.stream("POST", path, json={"content": "Say hello."}) as r:
                assert r.status_code == 200
                evts = await read_all(r)
            assert evts[0].type == "start"
            assert evts[-2].type == "finish" and evts[-1].type == "[DONE]"
            text = text_of(evts)
            assert text.strip()
            message = (await client.get(f"/api/messages/{evts[0].data['messageId']}")).json()
    finally:
        await stop_server(running)
    assert message["status"] == "complete"
    assert message["model"] == LOCAL_MODEL
    assert "".join(p["text"] for p in message["parts"] if p["type"] == "text") == text


async def exact_input_tokens(content: str) -> int:
    """The embedded model's own count of a one-message prompt (a whole, short answer)."""
    from streamkeep.llm.local import LocalProvider

    provider = LocalProvider()
    acc = Accumulator()
    try:
        request = ChatRequest("smollm2", [Message("user", content)], max_tokens=1)
        async for event in provider.stream(request):
            acc.add(event)
    finally:
        await provider.aclose()
    usage = acc.result().usage
    assert usage is not None and not usage.estimated
    return usage.input_tokens


async def test_a_stopped_reply_keeps_the_exact_input_token_count(data_dir: Path) -> None:
    _require_llama_cpp()
    content = "Write a long story about a dragon who guards a library."
    running = await start_server(load_settings(data_dir=str(data_dir)))
    try:
        async with httpx.AsyncClient(base_url=running.url, timeout=120) as client:
            chat = (await client.post("/api/chats", json={})).json()
            path = f"/api/chats/{chat['id']}/messages"
            async with client.stream("POST", path, json={"content": content}) as r:
                stream = events(r)
                seen = await until(stream, "text-delta")
                stop = await client.post(f"/api/chats/{chat['id']}/stop")
                assert stop.json() == {"stopped": True}
                seen += [e async for e in stream]
            message = (await client.get(f"/api/messages/{seen[0].data['messageId']}")).json()
    finally:
        await stop_server(running)
    exact = await exact_input_tokens(content)
    assert message["status"] == "stopped"
    text = text_of(seen)
    usage = message["usage"]
    # The model tokenised the prompt before answering: that count is known, not guessed.
    assert usage["input_tokens"] == exact != estimate_tokens(len(content))
    # What it wrote before the stop is counted from the text: that part is an estimate.
    assert usage["output_tokens"] == estimate_tokens(len(text))
    assert usage["estimated"] is True
