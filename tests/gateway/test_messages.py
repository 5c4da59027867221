"""`POST /v1/messages` through the official Anthropic SDK, over real HTTP: an
OpenAI-compatible and an Anthropic fake upstream behind it, kept or pure relay; the
named SSE events, tool use and its result, thinking, and Anthropic-shaped errors."""

from __future__ import annotations

from typing import Any

import anthropic
import orjson
import pytest

from streamkeep.config import ProviderConfig
from tests.fakes.upstream import Script
from tests.fakes.upstream_wire import split_words
from tests.gateway.conftest import MODEL, Gateway, GatewayFactory
from tests.gateway.test_sdk import parallel_calls_script

TEXT = "The quick brown fox jumps over the lazy dog."
USER: list[Any] = [{"role": "user", "content": "hello there"}]
CHAT_HEADER = "x-streamkeep-chat-id"
WEATHER = {
    "name": "weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def client(gw: Gateway, **kw: Any) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=gw.url, api_key="unused", max_retries=0, **kw)


@pytest.fixture(params=["openai", "anthropic", "openai-relay"])
async def gw(request: pytest.FixtureRequest, gateway_factory: GatewayFactory) -> Gateway:
    """The gateway over the fake speaking OpenAI's or Anthropic's wire; kept, or relay."""
    overrides: dict[str, Any] = {"gateway_store": not request.param.endswith("relay")}
    if request.param == "anthropic":
        upstream = request.getfixturevalue("fake_upstream")
        provider = ProviderConfig(
            kind="anthropic", base_url=upstream.root_url, api_key="x", models=["fake-model"]
        )
        overrides["providers"] = {"fake": provider}
    gateway = await gateway_factory(**overrides)
    gateway.kind = request.param  # type: ignore[attr-defined]
    return gateway


def kept(gw: Gateway) -> bool:
    return not str(getattr(gw, "kind", "")).endswith("relay")


def texts(message: dict[str, Any]) -> str:
    return "".join(p["text"] for p in message["parts"] if p["type"] == "text")


async def test_create_answers_a_whole_message(gw: Gateway) -> None:
    gw.upstream.enqueue(Script(text=TEXT))
    async with client(gw) as c:
        raw = await c.messages.with_raw_response.create(
            model=MODEL, max_tokens=100, messages=USER, system="be brief"
        )
        message = await raw.parse()
    assert message.id.startswith("msg_") and message.type == "message"
    assert message.role == "assistant" and message.model == MODEL
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == TEXT  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens > 0 and message.usage.input_tokens > 0
    if kept(gw):
        chat = await gw.chat(raw.headers[CHAT_HEADER])
        assert chat["system"] == "be brief"
        assert [(m["role"], texts(m)) for m in chat["messages"]] == [
            ("user", "hello there"),
            ("assistant", TEXT),
        ]


async def test_stream_sends_named_events_token_for_token(gw: Gateway) -> None:
    gw.upstream.enqueue(Script(text=TEXT))
    async with (
        client(gw) as c,
        c.messages.stream(model=MODEL, max_tokens=100, messages=USER) as stream,
    ):
        pieces = [piece async for piece in stream.text_stream]
        message = await stream.get_final_message()
    assert pieces == split_words(TEXT)
    assert message.content[0].text == TEXT  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0


async def test_stream_frames_are_anthropic_events(gw: Gateway) -> None:
    gw.upstream.enqueue(Script(text="hi there"))
    body = {"model": MODEL, "max_tokens": 10, "messages": USER, "stream": True}
    r = await gw.http.post("/v1/messages", json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    names = [line[7:] for line in r.text.splitlines() if line.startswith("event: ")]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert "data: [DONE]" not in r.text


async def test_tool_use_then_its_result(gw: Gateway) -> None:
    gw.upstream.enqueue(Script(calls=[("weather", '{"city": "Oslo"}')]))
    async with client(gw) as c:
        async with c.messages.stream(
            model=MODEL,
            max_tokens=100,
            messages=USER,
            tools=[WEATHER],  # type: ignore[list-item]
        ) as stream:
            first = await stream.get_final_message()
        chat_id = stream.response.headers.get(CHAT_HEADER)
        assert first.stop_reason == "tool_use"
        (call,) = [b for b in first.content if b.type == "tool_use"]
        assert call.name == "weather" and call.input == {"city": "Oslo"}
        history = [
            *USER,
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}],
            },
        ]
        gw.upstream.enqueue(Script(text="It is sunny."))
        headers = {CHAT_HEADER: chat_id} if kept(gw) and chat_id else {}
        answer = await c.messages.create(
            model=MODEL,
            max_tokens=100,
            messages=history,  # type: ignore[arg-type]
            tools=[WEATHER],  # type: ignore[list-item]
            extra_headers=headers,
        )
    assert answer.content[0].text == "It is sunny."  # type: ignore[union-attr]
    sent = gw.upstream.requests[-1]["messages"]
    if str(getattr(gw, "kind", "")) == "anthropic":
        result = sent[-1]["content"][0]
        assert result["type"] == "tool_result" and result["tool_use_id"] == call.id
    else:
        assert sent[-1] == {"role": "tool", "tool_call_id": call.id, "content": "sunny"}
    if kept(gw):
        assert chat_id is not None
        chat = await gw.chat(chat_id)
        roles = [m["role"] for m in chat["messages"]]
        assert roles == ["user", "assistant", "tool", "assistant"]
        tool_part = chat["messages"][1]["parts"][-1]
        assert tool_part["type"] == "tool-weather" and tool_part["input"] == {"city": "Oslo"}
        assert chat["messages"][2]["parts"][0]["output"] == "sunny"
        assert texts(chat["messages"][3]) == "It is sunny."


async def test_unknown_model_is_a_404_in_anthropic_shape(gw: Gateway) -> None:
    async with client(gw) as c:
        with pytest.raises(anthropic.NotFoundError) as caught:
            await c.messages.create(model="fake/nope", max_tokens=10, messages=USER)
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": caught.value.body["error"]["message"]},  # type: ignore[index]
    }


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"model": MODEL, "messages": USER}, "max_tokens"),
        ({"model": MODEL, "max_tokens": 5, "messages": []}, "messages"),
        (
            {"model": MODEL, "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
            "role",
        ),
        (
            {
                "model": MODEL,
                "max_tokens": 5,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "toolu_1",
                                "content": [
                                    {"type": "image", "source": {"type": "base64", "data": "AA=="}}
                                ],
                            }
                        ],
                    }
                ],
            },
            "images in a tool_result are not supported yet",
        ),
    ],
)
async def test_a_bad_body_is_a_400_in_anthropic_shape(
    gateway: Gateway, body: dict[str, Any], needle: str
) -> None:
    r = await gateway.http.post("/v1/messages", json=body)
    assert r.status_code == 400
    error = r.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert needle in error["error"]["message"]
    assert gateway.upstream.requests == []


def is_anthropic(gw: Gateway) -> bool:
    return str(getattr(gw, "kind", "")) == "anthropic"


async def test_thinking_comes_as_blocks_and_goes_back_signed(gw: Gateway) -> None:
    gw.upstream.enqueue(Script(text="Yes.", reasoning=4, redacted=True))
    async with (
        client(gw) as c,
        c.messages.stream(model=MODEL, max_tokens=100, messages=USER) as stream,
    ):
        message = await stream.get_final_message()
    kinds = [b.type for b in message.content]
    thinking = message.content[0]
    assert thinking.type == "thinking" and thinking.thinking
    if is_anthropic(gw):
        assert kinds == ["thinking", "redacted_thinking", "text"]
        assert thinking.signature.startswith("sig-")
    else:
        assert kinds == ["thinking", "text"]
    history = [
        *USER,
        {"role": "assistant", "content": [b.model_dump() for b in message.content]},
        {"role": "user", "content": "and?"},
    ]
    gw.upstream.enqueue(Script(text="Done."))
    async with client(gw) as c:
        raw = await c.messages.with_raw_response.create(
            model=MODEL,
            max_tokens=100,
            messages=history,  # type: ignore[arg-type]
        )
        whole = await raw.parse()
    assert whole.content[-1].text == "Done."  # type: ignore[union-attr]
    if kept(gw) and is_anthropic(gw):  # stored as the chat API stores thinking
        chat = await gw.chat(raw.headers[CHAT_HEADER])
        stored = [p for p in chat["messages"][1]["parts"] if p["type"] == "reasoning"]
        assert stored == [
            {
                "type": "reasoning",
                "text": thinking.thinking,
                "providerMetadata": {"anthropic": {"signature": thinking.signature}},
            },
            {
                "type": "reasoning",
                "text": "",
                "providerMetadata": {"anthropic": {"redactedData": message.content[1].data}},  # type: ignore[union-attr]
            },
        ]
    sent = gw.upstream.requests[-1]["messages"]
    if is_anthropic(gw):  # the blocks went back verbatim, signature and redaction
        blocks = sent[1]["content"]
        assert blocks[0] == {
            "type": "thinking",
            "thinking": thinking.thinking,
            "signature": thinking.signature,
        }
        assert blocks[1] == {"type": "redacted_thinking", "data": message.content[1].data}  # type: ignore[union-attr]


async def test_a_length_stop_is_max_tokens(gw: Gateway) -> None:
    gw.upstream.enqueue(Script(text=TEXT, finish="length"))
    async with client(gw) as c:
        message = await c.messages.create(model=MODEL, max_tokens=3, messages=USER)
    assert message.stop_reason == "max_tokens"


async def test_a_failure_mid_stream_is_an_error_event(gw: Gateway) -> None:
    gw.upstream.enqueue(Script(text=TEXT, error_after=3))
    pieces: list[str] = []
    async with (
        client(gw) as c,
        c.messages.stream(model=MODEL, max_tokens=100, messages=USER) as stream,
    ):
        with pytest.raises(anthropic.APIStatusError) as caught:
            async for piece in stream.text_stream:
                pieces.append(piece)
    assert pieces and "".join(pieces) != TEXT
    assert caught.value.body["type"] == "error"  # type: ignore[index]
    assert caught.value.body["error"]["type"] == "api_error"  # type: ignore[index]


async def test_without_credentials_it_is_a_401_in_anthropic_shape(gateway: Gateway) -> None:
    store = gateway.app.state.store
    user = await store.create_user("alice", "a long enough password")
    _, key = await store.create_api_key(user.id, name="tests")
    async with client(gateway) as c:
        with pytest.raises(anthropic.AuthenticationError) as caught:
            await c.messages.create(model=MODEL, max_tokens=10, messages=USER)
    assert caught.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    gateway.upstream.enqueue(Script(text="hi"))
    async with anthropic.AsyncAnthropic(base_url=gateway.url, api_key=key, max_retries=0) as c:
        message = await c.messages.create(model=MODEL, max_tokens=10, messages=USER)  # x-api-key
    assert message.content[0].text == "hi"  # type: ignore[union-attr]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_provider_refusal_keeps_its_status(gw: Gateway, stream: bool) -> None:
    gw.upstream.enqueue(Script(status=400))
    body = {"model": MODEL, "max_tokens": 10, "messages": USER, "stream": stream}
    r = await gw.http.post("/v1/messages", json=body)
    assert r.status_code == 400
    assert r.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": r.json()["error"]["message"]},
    }


async def test_empty_user_content_is_an_empty_message(gateway: Gateway) -> None:
    gateway.upstream.enqueue(Script(text="ok"))
    messages = [{"role": "user", "content": []}]
    r = await gateway.http.post(
        "/v1/messages", json={"model": MODEL, "max_tokens": 5, "messages": messages}
    )
    assert r.status_code == 200, r.text
    assert gateway.upstream.requests[-1]["messages"] == [{"role": "user", "content": ""}]


async def test_the_documented_body_names_nothing_left_undefined(gateway: Gateway) -> None:
    doc = (await gateway.http.get("/openapi.json")).json()
    operation = doc["paths"]["/v1/messages"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert "max_tokens" in schema["required"]
    assert "#/$defs/" not in orjson.dumps(operation).decode()  # a discriminator's mapping too


async def test_a_failed_tool_result_is_stored_as_an_error(gateway: Gateway) -> None:
    gateway.upstream.enqueue(Script(text="Sorry."))
    history = [
        *USER,
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "no such city"}],
                    "is_error": True,
                }
            ],
        },
    ]
    async with client(gateway) as c:
        raw = await c.messages.with_raw_response.create(
            model=MODEL,
            max_tokens=10,
            messages=history,  # type: ignore[arg-type]
        )
    chat = await gateway.chat(raw.headers[CHAT_HEADER])
    (result,) = chat["messages"][2]["parts"]
    assert result["state"] == "output-error" and result["errorText"] == "no such city"
    assert result["type"] == "tool-weather" and "output" not in result
    sent = gateway.upstream.requests[-1]["messages"]
    assert sent[-1]["role"] == "tool" and sent[-1]["content"] == "no such city"


async def test_parallel_openai_calls_keep_their_own_blocks(gateway: Gateway) -> None:
    gateway.upstream.enqueue(parallel_calls_script())  # argument deltas interleave
    async with (
        client(gateway) as c,
        c.messages.stream(model=MODEL, max_tokens=100, messages=USER) as stream,
    ):
        message = await stream.get_final_message()
    calls = [(b.id, b.name, b.input) for b in message.content if b.type == "tool_use"]
    assert calls == [("call_w", "weather", {"city": "Oslo"}), ("call_t", "time", {"tz": "UTC"})]
    assert message.stop_reason == "tool_use"
    assert message.usage.input_tokens == 9 and message.usage.output_tokens == 4
