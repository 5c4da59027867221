"""The embedded model behind the same OpenAI wire format (real llama.cpp, on the CPU)."""

from __future__ import annotations

import pytest

from tests.gateway.conftest import Gateway, GatewayFactory

pytestmark = pytest.mark.slow

LOCAL = "local/smollm2"


@pytest.fixture
async def local(gateway_factory: GatewayFactory) -> Gateway:
    return await gateway_factory(enable_local_model=True, model=LOCAL)


async def test_local_model_streams_through_the_gateway_and_is_kept(local: Gateway) -> None:
    client = local.async_client(timeout=120)
    raw = await client.chat.completions.with_raw_response.create(
        model=LOCAL,
        messages=[{"role": "user", "content": "Say hello."}],
        stream=True,
        max_tokens=8,
        temperature=0,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in raw.parse()]
    await client.close()
    seen = "".join(c.delta.content or "" for chunk in chunks for c in chunk.choices)
    usage = chunks[-1].usage
    assert seen.strip()
    assert usage is not None and 0 < usage.completion_tokens <= 8
    reasons = [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason]
    assert reasons in (["length"], ["stop"])
    chat = await local.chat(raw.headers["x-streamkeep-chat-id"])
    reply = chat["messages"][-1]
    assert "".join(p["text"] for p in reply["parts"] if p["type"] == "text") == seen
    assert reply["usage"]["output_tokens"] == usage.completion_tokens
