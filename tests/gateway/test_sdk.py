"""What an OpenAI SDK client sees through the gateway, stored or pure relay alike:
exactly the upstream's content, tool calls and usage, and OpenAI-shaped errors."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import orjson
import pytest

from tests.fakes.upstream import Script
from tests.fakes.upstream_wire import split_words
from tests.gateway.conftest import MODEL, Gateway, GatewayFactory

TEXT = "The quick brown fox jumps over the lazy dog."
USER = [{"role": "user", "content": "hello there"}]


@pytest.fixture(params=["kept", "relay"])
async def gw(request: pytest.FixtureRequest, gateway_factory: GatewayFactory) -> Gateway:
    return await gateway_factory(gateway_store=request.param == "kept")


def _sse(chunk: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def parallel_calls_script() -> Script:
    """Two tool calls whose argument deltas interleave, as OpenAI sends parallel calls."""
    head = {"id": "chatcmpl-p", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def delta(d: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse({**head, "choices": [{"index": 0, "delta": d, "finish_reason": finish}]})

    def call(i: int, **kw: Any) -> dict[str, Any]:
        return {"tool_calls": [{"index": i, **kw}]}

    usage = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
    return Script(
        raw=[
            delta({"role": "assistant", "content": None}),
            delta(
                call(0, id="call_w", type="function", function={"name": "weather", "arguments": ""})
            ),
            delta(
                call(1, id="call_t", type="function", function={"name": "time", "arguments": ""})
            ),
            delta(call(0, function={"arguments": '{"city":'})),
            delta(call(1, function={"arguments": '{"tz": "UTC"}'})),
            delta(call(0, function={"arguments": ' "Oslo"}'})),
            delta({}, "tool_calls"),
            _sse({**head, "choices": [], "usage": usage}),
            b"data: [DONE]\n\n",
        ]
    )


async def test_streaming_text_arrives_exactly(gw: Gateway) -> None:
    gw.upstream.enqueue(Script(text=TEXT))
    client = gw.async_client()
    stream = await client.chat.completions.create(model=MODEL, messages=USER, stream=True)  # type: ignore[arg-type]
    pieces: list[str] = []
    reasons: list[str | None] = []
    async for chunk in stream:
        assert chunk.model == MODEL and chunk.object == "chat.completion.chunk"
        assert chunk.usage is None
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            reasons.append(choice.finish_reason)
    await client.close()
    assert pieces[1:-1] == split_words(TEXT)  # token for token, not merged
    assert "".join(pieces) == TEXT
    assert reasons[-1] == "stop"
    # The provider was asked with the client's own messages.
    assert gw.upstream.requests[-1]["messages"] == USER


async def test_usage_only_when_asked_and_exact(gw: Gateway) -> None:
    client = gw.async_client()
    gw.upstream.enqueue(Script(tokens=5))
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},  # type: ignore[arg-type]
    )
    chunks = [c async for c in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (2, 5, 7)
    assert all(c.usage is None for c in chunks[:-1])

    gw.upstream.enqueue(Script(tokens=5))
    plain = await client.chat.completions.create(model=MODEL, messages=USER, stream=True)  # type: ignore[arg-type]
    assert all(c.choices and c.usage is None for c in [c async for c in plain])
    await client.close()


async def test_not_streaming_gives_one_completion(gw: Gateway) -> None:
    gw.upstream.enqueue(Script(text=TEXT))
    client = gw.async_client()
    done = await client.chat.completions.create(model=MODEL, messages=USER)  # type: ignore[arg-type]
    await client.close()
    assert done.choices[0].message.content == TEXT
    assert done.choices[0].finish_reason == "stop"
    assert done.usage is not None
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (2, len(split_words(TEXT)))


async def test_parallel_tool_calls_stay_apart(gw: Gateway) -> None:
    gw.upstream.enqueue(parallel_calls_script())
    tools = [
        {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
        for n in ("weather", "time")
    ]
    client = gw.sync_client()

    def run() -> Any:
        with client.chat.completions.stream(
            model=MODEL,
            messages=USER,
            tools=tools,
            stream_options={"include_usage": True},  # type: ignore[arg-type]
        ) as stream:
            for _ in stream:
                pass
            return stream.get_final_completion()

    final = await asyncio.to_thread(run)
    client.close()
    calls = final.choices[0].message.tool_calls
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [
        ("call_w", "weather", '{"city": "Oslo"}'),
        ("call_t", "time", '{"tz": "UTC"}'),
    ]
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage is not None and final.usage.total_tokens == 13
    sent = gw.upstream.requests[-1]
    assert [t["function"]["name"] for t in sent["tools"]] == ["weather", "time"]


async def test_parameters_reach_the_provider(gw: Gateway) -> None:
    gw.upstream.enqueue(Script(tokens=2))
    client = gw.async_client()
    await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "be brief"}, *USER],  # type: ignore[list-item]
        temperature=0.25,
        top_p=0.5,
        max_tokens=33,
        stop=["END"],
        seed=7,
        user="u-1",
        tool_choice="none",
        tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        parallel_tool_calls=False,
    )
    await client.close()
    sent = gw.upstream.requests[-1]
    assert sent["model"] == "fake-model"
    assert sent["messages"] == [{"role": "system", "content": "be brief"}, *USER]
    picked = {k: sent[k] for k in ("temperature", "top_p", "max_tokens", "stop", "seed", "user")}
    assert picked == {
        "temperature": 0.25,
        "top_p": 0.5,
        "max_tokens": 33,
        "stop": ["END"],
        "seed": 7,
        "user": "u-1",
    }
    assert (sent["tool_choice"], sent["parallel_tool_calls"]) == ("none", False)


async def test_unknown_model_is_404_model_not_found(gw: Gateway) -> None:
    client = gw.async_client()
    with pytest.raises(openai.NotFoundError) as info:
        await client.chat.completions.create(model="fake/nope", messages=USER, stream=True)  # type: ignore[arg-type]
    await client.close()
    assert info.value.code == "model_not_found"
    assert info.value.param == "model"
    assert gw.upstream.requests == []


async def test_n_above_one_is_refused(gw: Gateway) -> None:
    client = gw.async_client()
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model=MODEL, messages=USER, n=2)  # type: ignore[arg-type]
    await client.close()
    assert info.value.param == "n"
    assert "'n' must be 1" in info.value.message


async def test_upstream_refusal_passes_through(gw: Gateway) -> None:
    gw.upstream.enqueue(Script(status=400))
    client = gw.async_client()
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model=MODEL, messages=USER, stream=True)  # type: ignore[arg-type]
    await client.close()
    assert "fake upstream error 400" in info.value.message


async def test_upstream_5xx_before_first_byte_is_502(gw: Gateway) -> None:
    gw.upstream.default = Script(status=500)  # every retry of the provider fails too
    client = gw.async_client()
    with pytest.raises(openai.InternalServerError) as info:
        await client.chat.completions.create(model=MODEL, messages=USER)  # type: ignore[arg-type]
    await client.close()
    assert info.value.status_code == 502
    assert info.value.type == "upstream_error"


async def test_failure_mid_stream_ends_with_an_error_chunk(gw: Gateway) -> None:
    gw.upstream.enqueue(Script(tokens=6, error_after=3))
    client = gw.async_client()
    stream = await client.chat.completions.create(model=MODEL, messages=USER, stream=True)  # type: ignore[arg-type]
    seen: list[str] = []
    with pytest.raises(openai.APIError) as info:
        async for chunk in stream:
            seen += [c.delta.content or "" for c in chunk.choices]
    await client.close()
    assert "".join(seen) == "lorem ipsum dolor"
    assert "fake upstream error mid-stream" in info.value.message


@pytest.mark.parametrize("fault", [{"cut_after": 3}, {"reset_after": 3, "framing": "close"}])
async def test_a_stream_cut_short_ends_with_an_error_chunk_never_a_finish(
    gw: Gateway, fault: dict[str, Any]
) -> None:
    # The provider's body ends after three words with no finish reason: the client
    # must not get `finish_reason: "stop"` for a truncated answer.
    gw.upstream.enqueue(Script(tokens=6, **fault))
    body = {"model": MODEL, "messages": USER, "stream": True}
    async with gw.http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        raw = await r.aread()
    lines = raw.splitlines()
    payloads = [line[len(b"data: ") :] for line in lines if line.startswith(b"data: ")]
    assert payloads[-1] == b"[DONE]"
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    assert chunks[-1]["error"] == {
        "message": "the provider closed the stream before finishing",
        "type": "upstream_error",
        "param": None,
        "code": "provider_incomplete",
    }
    reasons = [c["finish_reason"] for chunk in chunks for c in chunk.get("choices", [])]
    assert set(reasons) == {None}
    content = [c["delta"].get("content") or "" for ch in chunks for c in ch.get("choices", [])]
    assert "".join(content) == "lorem ipsum dolor"

    gw.upstream.enqueue(Script(tokens=6, **fault))
    client = gw.async_client()
    with pytest.raises(openai.InternalServerError) as info:
        await client.chat.completions.create(model=MODEL, messages=USER)  # type: ignore[arg-type]
    await client.close()
    assert (info.value.status_code, info.value.code) == (502, "provider_incomplete")


async def test_models_lists_the_configured_ones(gw: Gateway) -> None:
    client = gw.async_client()
    models = [m.id async for m in client.models.list()]
    await client.close()
    assert models == [MODEL]


async def test_malformed_body_names_the_field(gw: Gateway) -> None:
    r = await gw.http.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user"}]}
    )
    assert r.status_code == 400
    assert r.json() == {
        "error": {
            "message": "Missing required parameter: 'messages[0].content'.",
            "type": "invalid_request_error",
            "param": "messages[0].content",
            "code": None,
        }
    }


async def test_openapi_documents_the_body_without_dangling_refs(gateway: Gateway) -> None:
    spec = (await gateway.http.get("/openapi.json")).json()
    post = spec["paths"]["/v1/chat/completions"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert {"model", "messages", "stream", "tools"} <= set(schema["properties"])
    assert "$ref" not in str(post)
    assert "/v1/models" in spec["paths"]
