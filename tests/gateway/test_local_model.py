"""The embedded model behind the same OpenAI wire format (real llama.cpp, on the CPU)."""

from __future__ import annotations

import anthropic
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


async def test_local_model_answers_the_responses_api_streamed_and_whole(local: Gateway) -> None:
    client = local.async_client(timeout=120)
    stream = await client.responses.create(
        model=LOCAL, input="Say hello.", max_output_tokens=8, temperature=0, stream=True
    )
    events = [event async for event in stream]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response  # type: ignore[union-attr]
    assert events[-1].type in ("response.completed", "response.incomplete")
    streamed = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert streamed.strip() and final.output_text == streamed
    assert final.usage is not None and 0 < final.usage.output_tokens <= 8
    stored = await client.responses.retrieve(final.id)
    assert stored.output_text == streamed

    whole = await client.responses.create(
        model=LOCAL, input="Say hello.", max_output_tokens=8, temperature=0
    )
    await client.close()
    assert whole.output_text.strip()
    assert whole.status in ("completed", "incomplete")


async def test_local_model_answers_the_anthropic_sdk_streamed_and_whole(local: Gateway) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=local.url, api_key="unused", max_retries=0, timeout=120
    ) as client:
        async with client.messages.stream(
            model=LOCAL, max_tokens=8, messages=[{"role": "user", "content": "Say hello."}]
        ) as stream:
            texts = [text async for text in stream.text_stream]
            final = await stream.get_final_message()
        whole = await client.messages.create(
            model=LOCAL, max_tokens=8, messages=[{"role": "user", "content": "Say hello."}]
        )
    assert "".join(texts).strip()
    assert final.content[0].type == "text" and final.content[0].text == "".join(texts)
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert 0 < final.usage.output_tokens <= 8
    assert whole.content[0].type == "text" and whole.content[0].text.strip()
