"""OpenAIProvider: the request it sends, and streams over real HTTP on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvloop

from streamkeep.llm.accumulator import Accumulator
from streamkeep.llm.errors import (
    ProviderConnectionError,
    ProviderHTTPError,
    ProviderStreamError,
)
from streamkeep.llm.events import Finish, StreamError, StreamEvent, TextDelta
from streamkeep.llm.openai import OpenAIChunkParser, OpenAIProvider, request_body
from streamkeep.llm.provider import Provider, complete
from streamkeep.llm.transport import RetryPolicy
from streamkeep.llm.types import ChatRequest, Completion, Message, ToolCall, ToolSpec, Usage
from tests.conftest import free_port
from tests.fakes import upstream_wire as wire
from tests.fakes.upstream import FakeUpstream, Script

TRANSCRIPTS = Path(__file__).parent / "transcripts"
NO_RETRY = RetryPolicy(max_retries=0)


@pytest.fixture
async def provider(fake_upstream: FakeUpstream) -> AsyncIterator[OpenAIProvider]:
    p = OpenAIProvider("fake", fake_upstream.base_url, "sk-test", retry=NO_RETRY)
    yield p
    await p.aclose()


def hello(**kwargs: Any) -> ChatRequest:
    return ChatRequest(model="fake-model", messages=[Message("user", "Hello")], **kwargs)


async def collect(provider: OpenAIProvider, request: ChatRequest) -> list[StreamEvent]:
    return [event async for event in provider.stream(request)]


def accumulate(events: list[StreamEvent]) -> Completion:
    acc = Accumulator()
    for event in events:
        acc.add(event)
    return acc.result()


def test_the_request_body_maps_every_field() -> None:
    call = ToolCall("call_1", "get_weather", {"city": "Oslo"}, raw_arguments='{"city":"Oslo"}')
    broken = ToolCall("call_2", "f", {}, raw_arguments='{"cut', parse_error="cut off")
    request = ChatRequest(
        model="gpt-4o-mini",
        messages=[
            Message("system", "Be brief."),
            Message("user", "Weather?"),
            Message("assistant", "", reasoning="secret", tool_calls=[call, broken]),
            Message("tool", '{"temp": 3}', tool_call_id="call_1", name="get_weather"),
            Message("assistant", "It is 3 degrees."),
        ],
        tools=[ToolSpec("get_weather", "Current weather", {"type": "object"}), ToolSpec("f")],
        tool_choice="auto",
        max_tokens=100,
        temperature=0.0,
        top_p=0.9,
        stop=["\n\n"],
        seed=7,
        response_format={"type": "text"},
        user="u-1",
        extra={"reasoning_effort": "low", "stream_options": {"chunk_size": 1}},
    )
    assert request_body(request) == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "f", "arguments": "{}"},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 3}'},
            {"role": "assistant", "content": "It is 3 degrees."},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Current weather",
                    "parameters": {"type": "object"},
                },
            },
            {
                "type": "function",
                "function": {"name": "f", "parameters": {"type": "object", "properties": {}}},
            },
        ],
        "tool_choice": "auto",
        "max_tokens": 100,
        "temperature": 0.0,
        "top_p": 0.9,
        "stop": ["\n\n"],
        "seed": 7,
        "response_format": {"type": "text"},
        "user": "u-1",
        "reasoning_effort": "low",
        "stream": True,
        "stream_options": {"chunk_size": 1, "include_usage": True},
    }


def test_extra_cannot_turn_streaming_or_usage_off() -> None:
    body = request_body(hello(extra={"stream": False, "stream_options": {"include_usage": False}}))
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert "tools" not in request_body(hello()) and "max_tokens" not in request_body(hello())


async def test_streams_text_and_usage_and_sends_auth(
    fake_upstream: FakeUpstream, provider: OpenAIProvider
) -> None:
    assert isinstance(provider, Provider)
    events = await collect(provider, hello())
    completion = accumulate(events)
    assert completion.text == "Hello! You said: Hello"
    assert completion.usage == Usage(input_tokens=1, output_tokens=4)
    assert events[-1] == Finish("stop", "chatcmpl_fake1", "fake-model", "stop")
    assert fake_upstream.request_headers[0]["authorization"] == "Bearer sk-test"
    assert fake_upstream.requests[0]["stream_options"] == {"include_usage": True}


async def test_no_api_key_sends_no_authorization(fake_upstream: FakeUpstream) -> None:
    provider = OpenAIProvider(
        "local", fake_upstream.base_url + "/", extra_headers={"x-title": "streamkeep"}
    )
    try:
        await collect(provider, hello())
    finally:
        await provider.aclose()
    headers = fake_upstream.request_headers[0]
    assert "authorization" not in headers and headers["x-title"] == "streamkeep"


async def test_a_tool_call_end_to_end(
    fake_upstream: FakeUpstream, provider: OpenAIProvider
) -> None:
    fake_upstream.enqueue(Script(tool="search"))
    completion = await complete(provider, hello(tools=[ToolSpec("search")]))
    assert [(c.id, c.name, c.arguments) for c in completion.tool_calls] == [
        ("call_fake1", "search", {"q": "Hello"})
    ]
    assert completion.finish_reason == "tool-calls"


async def test_a_transcript_split_inside_utf8_characters_over_http(
    fake_upstream: FakeUpstream, provider: OpenAIProvider
) -> None:
    data = (TRANSCRIPTS / "openai_gpt4o_text.sse").read_bytes()
    cut = data.index("東".encode()) + 1  # inside the three bytes of one character
    emoji = data.index("👋".encode()) + 2
    fake_upstream.enqueue(Script(raw=[data[:cut], data[cut:emoji], data[emoji:]], delay=0.01))
    events = await collect(provider, hello())
    parser = OpenAIChunkParser("fake")
    assert events == parser.feed(data) + parser.close()


async def test_an_http_error_is_a_stream_error_with_the_vendors_message(
    fake_upstream: FakeUpstream, provider: OpenAIProvider
) -> None:
    fake_upstream.enqueue(Script(status=401))
    events = await collect(provider, hello())
    assert len(events) == 1 and isinstance(events[0], StreamError)
    error = events[0].error
    assert isinstance(error, ProviderHTTPError)
    assert (error.status, error.provider_message) == (401, "fake upstream error 401")


async def test_an_in_stream_error_keeps_the_partial_answer(
    fake_upstream: FakeUpstream, provider: OpenAIProvider
) -> None:
    fake_upstream.enqueue(Script(tokens=5, error_after=2))
    events = await collect(provider, hello())
    assert accumulate(events).text == "lorem ipsum"
    last = events[-1]
    assert isinstance(last, StreamError) and isinstance(last.error, ProviderStreamError)
    assert last.response_id == "chatcmpl_fake1"


async def test_a_dropped_connection_is_a_stream_error_after_the_partial_answer(
    fake_upstream: FakeUpstream, provider: OpenAIProvider
) -> None:
    fake_upstream.enqueue(Script(tokens=5, fail_after=3))
    events = await collect(provider, hello())
    assert accumulate(events).text == "lorem ipsum dolor"
    last = events[-1]
    assert isinstance(last, StreamError)
    assert isinstance(last.error, ProviderConnectionError)


async def test_the_stream_ends_at_done_even_if_the_server_keeps_the_body_open(
    fake_upstream: FakeUpstream, provider: OpenAIProvider
) -> None:
    data = (TRANSCRIPTS / "openai_gpt4o_text.sse").read_bytes()
    fake_upstream.enqueue(Script(raw=[data, wire.HANG]))  # type: ignore[list-item]
    async with asyncio.timeout(30):  # a guard against hanging, not a measurement
        events = await collect(provider, hello())
        await fake_upstream.wait_idle()
    assert isinstance(events[-1], Finish) and events[-1].reason == "stop"
    assert fake_upstream.closed_by_client == 1


async def test_a_stream_ended_by_done_leaves_its_connection_for_the_next(
    fake_upstream: FakeUpstream, provider: OpenAIProvider
) -> None:
    # The consumer stops at Finish, as a generation does: the body's rest (its last
    # chunk) must still have been read, or every answer pays a new (TLS) connection.
    for _ in range(3):
        stream = provider.stream(hello())
        async for event in stream:
            if isinstance(event, Finish):
                break
        await stream.aclose()  # type: ignore[attr-defined]
    assert fake_upstream.connections == 1


async def test_closing_the_stream_early_closes_the_upstream_connection(
    fake_upstream: FakeUpstream, provider: OpenAIProvider
) -> None:
    fake_upstream.enqueue(Script(tokens=1000, delay=0.05))
    stream = provider.stream(hello())
    assert isinstance(await anext(stream), TextDelta)
    await stream.aclose()  # type: ignore[attr-defined]
    async with asyncio.timeout(30):
        await fake_upstream.wait_idle()
    assert fake_upstream.closed_by_client == 1


async def test_cancelling_the_consumer_closes_the_upstream_connection(
    fake_upstream: FakeUpstream, provider: OpenAIProvider
) -> None:
    fake_upstream.enqueue(Script(tokens=1000, delay=0.05))
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in provider.stream(hello()):
            first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(30):
        await fake_upstream.wait_idle()
    assert fake_upstream.closed_by_client == 1


async def test_the_upstream_connection_is_closed_before_aclose_returns(
    fake_upstream: FakeUpstream,
) -> None:
    # Not left to the garbage collector: closed by the time the consumer's aclose ends.
    responses: list[aiohttp.ClientResponse] = []

    async def on_request_end(
        session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestEndParams
    ) -> None:
        responses.append(params.response)

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        provider = OpenAIProvider("fake", fake_upstream.base_url, client=session)
        fake_upstream.enqueue(Script(tokens=1000, delay=0.05))
        stream = provider.stream(hello())
        assert isinstance(await anext(stream), TextDelta)
        [response] = responses
        assert response.connection is not None
        transport = response.connection.transport
        assert transport is not None and not transport.is_closing()
        await stream.aclose()  # type: ignore[attr-defined]
        assert response.closed and response.connection is None
        assert transport.is_closing()  # dropped, not handed back to the pool
        await provider.aclose()
        assert not session.closed  # a session passed in belongs to the caller


async def test_a_provider_makes_its_own_session_on_first_use_and_closes_it(
    fake_upstream: FakeUpstream,
) -> None:
    provider = OpenAIProvider("fake", fake_upstream.base_url)
    assert provider._client is None  # built outside a stream: no session yet
    assert accumulate(await collect(provider, hello())).text == "Hello! You said: Hello"
    session = provider._client
    assert session is not None and not session.closed
    await provider.aclose()
    assert session.closed and provider._client is None
    # A later stream makes a new one.
    assert accumulate(await collect(provider, hello())).text == "Hello! You said: Hello"
    await provider.aclose()


def test_a_provider_built_outside_an_event_loop_streams_under_uvloop() -> None:
    # As the server does: the registry builds providers wherever, uvicorn runs uvloop.
    port = free_port()
    provider = OpenAIProvider("fake", f"http://127.0.0.1:{port}/v1", retry=NO_RETRY)

    async def main() -> tuple[list[str], int, int]:
        async with FakeUpstream(port=port) as up:
            up.enqueue(Script(text="fast loop words", delay=0.01))
            up.enqueue(Script(tokens=1000, delay=0.05))
            try:
                texts = [accumulate(await collect(provider, hello())).text]
                stream = provider.stream(hello())
                assert isinstance(await anext(stream), TextDelta)
                await stream.aclose()  # type: ignore[attr-defined]
                async with asyncio.timeout(5):
                    await up.wait_idle()
            finally:
                await provider.aclose()
            return texts, up.closed_by_client, up.connections

    texts, closed_by_client, connections = uvloop.run(main())
    assert texts == ["fast loop words"]
    assert closed_by_client == 1
    assert connections == 1


async def test_a_provider_goes_through_the_proxy_the_environment_names(
    fake_upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fake serves a proxy's absolute-form request line too, so it stands in for one:
    # the upstream's own host does not exist.
    for name in ("http_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", fake_upstream.root_url)
    provider = OpenAIProvider("fake", "http://upstream.invalid/v1", retry=NO_RETRY)
    try:
        assert accumulate(await collect(provider, hello())).text == "Hello! You said: Hello"
    finally:
        await provider.aclose()
