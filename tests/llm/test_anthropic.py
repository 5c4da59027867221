"""The Anthropic provider: request mapping, recorded transcripts, the fake end to end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from streamkeep.llm.accumulator import Accumulator
from streamkeep.llm.anthropic import AnthropicProvider, AnthropicStreamParser, request_body
from streamkeep.llm.errors import (
    ProviderConnectionError,
    ProviderHTTPError,
    ProviderIncomplete,
    ProviderStreamError,
)
from streamkeep.llm.events import (
    Finish,
    StreamError,
    StreamEvent,
    TextDelta,
    ToolCallComplete,
    ToolCallDelta,
    ToolCallStart,
    UsageReport,
)
from streamkeep.llm.provider import Provider, complete
from streamkeep.llm.transport import RetryPolicy, Timeouts
from streamkeep.llm.types import ChatRequest, Message, ToolCall, ToolSpec, Usage
from tests.fakes.upstream import FakeUpstream, Script

TRANSCRIPTS = Path(__file__).parent / "transcripts"
HELLO = ChatRequest(model="claude-test", messages=[Message("user", "hello there")])


@pytest.fixture
async def provider(fake_upstream: FakeUpstream) -> AsyncIterator[AnthropicProvider]:
    p = AnthropicProvider(
        "anthropic",
        fake_upstream.root_url,
        "sk-ant-test",
        timeouts=Timeouts(first_token=5, idle=5),
        retry=RetryPolicy(max_retries=1, base_delay=0.001),
        extra_headers={"anthropic-beta": "fake-beta"},
    )
    yield p
    await p.aclose()


async def events_of(provider: AnthropicProvider, request: ChatRequest = HELLO) -> list[StreamEvent]:
    return [e async for e in provider.stream(request)]


def parse(body: bytes, piece: int | None = None) -> list[StreamEvent]:
    """Parse a body fed whole, or in pieces of `piece` bytes."""
    parser = AnthropicStreamParser()
    step = piece or len(body) or 1
    out: list[StreamEvent] = []
    for i in range(0, len(body), step):
        out += parser.feed(body[i : i + step])
    return out + parser.close()


def transcript(name: str) -> bytes:
    return (TRANSCRIPTS / f"anthropic_{name}.sse").read_bytes()


# -- request mapping -------------------------------------------------------------------


def test_request_maps_system_tools_and_sampling() -> None:
    request = ChatRequest(
        model="claude-test",
        messages=[
            Message("system", "Be brief."),
            Message("system", "Use metric units."),
            Message("user", "weather?"),
        ],
        tools=[ToolSpec("get_weather", "Look it up", {"type": "object", "properties": {}})],
        tool_choice="required",
        temperature=0.2,
        top_p=0.9,
        stop=["END"],
        user="u-1",
        extra={"top_k": 5},
    )
    body = request_body(request, default_max_tokens=1000)
    assert body["system"] == "Be brief.\n\nUse metric units."
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "weather?"}]}]
    assert body["max_tokens"] == 1000
    assert body["stream"] is True
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Look it up",
            "input_schema": {"type": "object", "properties": {}},
        }
    ]
    assert body["tool_choice"] == {"type": "any"}
    assert (body["temperature"], body["top_p"]) == (0.2, 0.9)
    assert body["stop_sequences"] == ["END"]
    assert body["metadata"] == {"user_id": "u-1"}
    assert body["top_k"] == 5


def test_tool_calls_and_results_become_blocks_with_results_merged() -> None:
    call_a = ToolCall("toolu_a", "get_weather", {"city": "Paris"})
    call_b = ToolCall("toolu_b", "get_time", {})
    request = ChatRequest(
        model="claude-test",
        max_tokens=10,
        messages=[
            Message("user", "weather and time?"),
            Message("assistant", "Checking.", tool_calls=[call_a, call_b]),
            Message("tool", "18C", tool_call_id="toolu_a"),
            Message("tool", "noon", tool_call_id="toolu_b"),
            Message("user", "thanks"),
        ],
    )
    messages = request_body(request)["messages"]
    assert request_body(request)["max_tokens"] == 10
    assert "system" not in request_body(request)
    assert messages == [
        {"role": "user", "content": [{"type": "text", "text": "weather and time?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_a",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {"type": "tool_use", "id": "toolu_b", "name": "get_time", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_a", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "toolu_b", "content": "noon"},
                {"type": "text", "text": "thanks"},
            ],
        },
    ]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        ({"type": "function", "function": {"name": "f"}}, {"type": "tool", "name": "f"}),
        ({"type": "tool", "name": "f"}, {"type": "tool", "name": "f"}),
    ],
)
def test_tool_choice_mapping(given: object, expected: dict[str, str]) -> None:
    request = ChatRequest(
        model="m", messages=[Message("user", "x")], tools=[ToolSpec("f")], tool_choice=given
    )
    assert request_body(request)["tool_choice"] == expected


# -- recorded transcripts --------------------------------------------------------------


@pytest.mark.parametrize("piece", [None, 1, 7])
def test_text_transcript(piece: int | None) -> None:
    events = parse(transcript("text"), piece)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "Hello! How can I help you today? ☀️\nAsk me anything."
    assert events[-2:] == [
        UsageReport(Usage(input_tokens=2060, output_tokens=17, cached_input_tokens=2048)),
        Finish("stop", "msg_01HCvRq6NN9xEbyKuTE9rW4m", "claude-sonnet-4-5-20250929", "end_turn"),
    ]


def test_tool_use_transcript() -> None:
    events = parse(transcript("tool_use"), 5)
    calls = [e for e in events if not isinstance(e, TextDelta)]
    weather_id, time_id = "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "toolu_01BKFa1gMyHzxMZPz4SdSkJz"
    assert calls[0] == ToolCallStart(weather_id, "get_weather")
    deltas = [e.arguments_delta for e in calls if isinstance(e, ToolCallDelta)]
    assert "".join(deltas) == '{"location": "San Francisco, CA", "unit": "fahrenheit"}'
    assert "" not in deltas
    done = [e.call for e in calls if isinstance(e, ToolCallComplete)]
    assert done[0].arguments == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert done[1] == ToolCall(time_id, "get_time", {}, "", None)
    # Calls complete at message_stop, in order, once stop_reason says they were not cut.
    assert events.index(ToolCallStart(time_id, "get_time")) < events.index(
        ToolCallComplete(done[0])
    )
    assert events[-1] == Finish(
        "tool-calls", "msg_014p7gG3wDgGV9EUtLvnow3U", "claude-sonnet-4-5-20250929", "tool_use"
    )


def test_thinking_transcript_gives_reasoning_then_text() -> None:
    acc = Accumulator()
    for event in parse(transcript("thinking"), 3):
        acc.add(event)
    result = acc.result()
    assert result.reasoning == "The user asks for 27 * 453.\n27 * 453 = 12231."
    assert result.text == "27 \u00d7 453 = **12,231**"
    assert [p.type for p in result.parts] == ["reasoning", "text"]
    assert result.usage == Usage(input_tokens=38, output_tokens=112)


def test_a_lone_surrogate_escape_reads_as_the_replacement_character() -> None:
    def event(name: str, data: str) -> str:
        return f"event: {name}\ndata: {data}\n\n"

    body = "".join(
        [
            event("message_start", '{"type":"message_start","message":{"id":"msg_1","model":"c"}}'),
            event(
                "content_block_start",
                '{"type":"content_block_start","index":0,'
                '"content_block":{"type":"thinking","thinking":""}}',
            ),
            event(
                "content_block_delta",
                '{"type":"content_block_delta","index":0,'
                '"delta":{"type":"thinking_delta","thinking":"hm \\udc00"}}',
            ),
            event("content_block_stop", '{"type":"content_block_stop","index":0}'),
            event(
                "content_block_start",
                '{"type":"content_block_start","index":1,'
                '"content_block":{"type":"text","text":""}}',
            ),
            event(
                "content_block_delta",
                '{"type":"content_block_delta","index":1,'
                '"delta":{"type":"text_delta","text":"a \\ud800 b"}}',
            ),
            event("content_block_stop", '{"type":"content_block_stop","index":1}'),
            event(
                "content_block_start",
                '{"type":"content_block_start","index":2,'
                '"content_block":{"type":"tool_use","id":"t1","name":"f","input":{}}}',
            ),
            event(
                "content_block_delta",
                '{"type":"content_block_delta","index":2,"delta":'
                '{"type":"input_json_delta","partial_json":"{\\"q\\": \\"\\\\udbff\\"}"}}',
            ),
            event("content_block_stop", '{"type":"content_block_stop","index":2}'),
            event("message_delta", '{"type":"message_delta","delta":{"stop_reason":"tool_use"}}'),
            event("message_stop", '{"type":"message_stop"}'),
        ]
    ).encode()
    acc = Accumulator()
    events = parse(body, 9)
    for e in events:
        acc.add(e)
    result = acc.result()
    assert (result.reasoning, result.text) == ("hm \ufffd", "a \ufffd b")
    assert result.tool_calls[0].arguments == {"q": "\ufffd"}
    assert events[-1] == Finish("tool-calls", "msg_1", "c", "tool_use")


def test_error_event_ends_the_stream_with_the_partial_text_kept() -> None:
    events = parse(transcript("error"))
    assert events[0] == TextDelta("Once upon a time")
    last = events[-1]
    assert isinstance(last, StreamError)
    assert isinstance(last.error, ProviderStreamError)
    assert last.error.code == "overloaded_error"
    assert last.error.message == "Overloaded"
    assert last.response_id == "msg_01Ve6aLkWc8bhHP4oXkgNXHC"
    assert len([e for e in events if isinstance(e, StreamError | Finish)]) == 1


def test_an_error_event_reports_the_usage_seen_so_far_first() -> None:
    # As OpenAI's parser does: the vendor's count (here message_start's, the prompt
    # only, so not final) beats an estimate of the whole.
    events = parse(transcript("error"))
    assert events[-2] == UsageReport(Usage(input_tokens=25, output_tokens=1), final=False)
    assert isinstance(events[-1], StreamError)


def test_max_tokens_cuts_a_tool_call() -> None:
    events = parse(transcript("max_tokens"))
    [complete_call] = [e for e in events if isinstance(e, ToolCallComplete)]
    assert complete_call.call.arguments == {}
    assert complete_call.call.parse_error is not None
    assert complete_call.call.raw_arguments.startswith('{"path": "notes.md"')
    usage = [e.usage for e in events if isinstance(e, UsageReport)]
    assert usage == [Usage(input_tokens=130, output_tokens=16)]
    assert events[-1] == Finish(
        "length", "msg_01Gm5dFCHEg1yBEbDmhdDJvr", "claude-haiku-4-5-20251001", "max_tokens"
    )


def test_a_body_without_message_stop_was_cut_short() -> None:
    events = parse(transcript("cut_off"))
    assert events[0] == TextDelta("The answer is")
    last = events[-1]
    assert isinstance(last, StreamError) and isinstance(last.error, ProviderIncomplete)
    assert last.error.message == "the provider closed the stream before finishing"
    assert (last.response_id, last.model) == (
        "msg_01NcM3T6UtvDyR1pd8qcXKaz",
        "claude-sonnet-4-5-20250929",
    )
    assert not any(isinstance(e, Finish) for e in events)


def test_a_body_ending_after_the_stop_reason_but_before_message_stop_was_cut_short() -> None:
    body = transcript("tool_use")
    cut = body[: body.index(b"event: message_stop")]
    events = parse(cut)
    assert isinstance(events[-1], StreamError)
    assert isinstance(events[-1].error, ProviderIncomplete)
    assert not any(isinstance(e, ToolCallComplete) for e in events)


async def test_transcript_replayed_over_http(
    fake_upstream: FakeUpstream, provider: AnthropicProvider
) -> None:
    body = transcript("tool_use")
    fake_upstream.enqueue(Script(raw=[body[i : i + 40] for i in range(0, len(body), 40)]))
    assert await events_of(provider) == parse(body)


# -- end to end against the fake -------------------------------------------------------


async def test_is_a_provider_and_sends_headers_and_body(
    fake_upstream: FakeUpstream, provider: AnthropicProvider
) -> None:
    assert isinstance(provider, Provider)
    result = await complete(provider, HELLO)
    assert result.text == "Hello! You said: hello there"
    assert result.finish_reason == "stop"
    assert result.response_id == "msg_fake1"
    assert result.usage == Usage(input_tokens=2, output_tokens=5)
    headers = fake_upstream.request_headers[0]
    assert headers["x-api-key"] == "sk-ant-test"
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["anthropic-beta"] == "fake-beta"
    sent = fake_upstream.requests[0]
    assert sent["stream"] is True and sent["model"] == "claude-test"
    assert sent["max_tokens"] == 4096


async def test_thinking_text_and_tool_use_from_the_fake(
    fake_upstream: FakeUpstream, provider: AnthropicProvider
) -> None:
    fake_upstream.default = Script(reasoning=3, text="Searching now.", tool="search")
    result = await complete(provider, HELLO)
    assert result.reasoning == "let me think"
    assert result.text == "Searching now."
    [call] = result.tool_calls
    assert (call.id, call.name, call.arguments) == ("toolu_fake1", "search", {"q": "hello there"})
    assert result.finish_reason == "tool-calls"
    deltas = [e for e in await events_of(provider) if isinstance(e, ToolCallDelta)]
    # The fake counts every output piece: 3 reasoning, 2 text and the argument pieces.
    assert result.usage is not None and result.usage.output_tokens == 3 + 2 + len(deltas)


async def test_in_stream_error_from_the_fake(
    fake_upstream: FakeUpstream, provider: AnthropicProvider
) -> None:
    fake_upstream.enqueue(Script(text="a b c d", error_after=2))
    events = await events_of(provider)
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["a", " b"]
    last = events[-1]
    assert isinstance(last, StreamError) and isinstance(last.error, ProviderStreamError)
    assert last.error.code == "overloaded_error"


async def test_http_error_is_retried_then_reported_as_stream_error(
    fake_upstream: FakeUpstream, provider: AnthropicProvider
) -> None:
    fake_upstream.enqueue(Script(status=529))
    fake_upstream.enqueue(Script(status=529))
    events = await events_of(provider)
    assert len(events) == 1 and isinstance(events[0], StreamError)
    error = events[0].error
    assert isinstance(error, ProviderHTTPError)
    assert error.status == 529 and error.provider_message == "fake upstream error 529"
    assert len(fake_upstream.requests) == 2


async def test_dropped_connection_keeps_the_partial_answer(
    fake_upstream: FakeUpstream, provider: AnthropicProvider
) -> None:
    fake_upstream.enqueue(Script(text="one two three", fail_after=2))
    events = await events_of(provider)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "one two"
    last = events[-1]
    assert isinstance(last, StreamError) and isinstance(last.error, ProviderConnectionError)
    assert last.response_id == "msg_fake1"


async def test_closing_the_stream_closes_upstream(
    fake_upstream: FakeUpstream, provider: AnthropicProvider
) -> None:
    fake_upstream.enqueue(Script(tokens=10, hang_after=2))
    stream = provider.stream(HELLO)
    assert isinstance(await anext(stream), TextDelta)
    await stream.aclose()
    async with asyncio.timeout(5):
        await fake_upstream.wait_idle()
    assert fake_upstream.closed_by_client == 1


async def test_base_url_with_version_segment_and_shared_client(
    fake_upstream: FakeUpstream,
) -> None:
    async with aiohttp.ClientSession() as client:
        p = AnthropicProvider("claude", fake_upstream.root_url + "/v1/", client=client)
        result = await complete(p, HELLO)
        await p.aclose()  # a shared client stays open
        assert not client.closed
    assert result.text == "Hello! You said: hello there"
    assert "x-api-key" not in fake_upstream.request_headers[0]


def test_a_tool_call_cut_before_any_input_is_reported_cut_off_not_empty() -> None:
    # The block stops before message_delta says max_tokens: a consumer must not run
    # the tool with {} as if the model had asked for that.
    body = (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1",'
        b'"model":"claude-x","usage":{"input_tokens":5,"output_tokens":1}}}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"tool_use","id":"toolu_1","name":"delete_all","input":{}}}\n\n'
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":'
        b'"max_tokens"},"usage":{"output_tokens":4}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    events = parse(body)
    [complete] = [e for e in events if isinstance(e, ToolCallComplete)]
    assert complete.call.name == "delete_all"
    assert complete.call.parse_error is not None
    assert isinstance(events[-1], Finish) and events[-1].reason == "length"


def _tool_block(index: int, block: str) -> bytes:
    return (
        b'event: content_block_start\ndata: {"type":"content_block_start","index":%d,'
        b'"content_block":{"type":"tool_use",%s,"input":{}}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
        b'"delta":{"type":"input_json_delta","partial_json":"{}"}}\n\n'
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":%d}\n\n'
    ) % (index, block.encode(), index, index)


def _message(*blocks: bytes) -> bytes:
    return (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1"}}\n\n'
        + b"".join(blocks)
        + b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":'
        b'"tool_use"},"usage":{"output_tokens":9}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )


def test_tool_use_blocks_follow_the_shared_assembler_rules() -> None:
    # A repeated id is made unique, and a block without a name is held (no start with
    # an empty name) and reported with the error saying so.
    events = parse(
        _message(
            _tool_block(0, '"id":"toolu_1","name":"a"'),
            _tool_block(1, '"id":"toolu_1","name":"b"'),
            _tool_block(2, '"id":"toolu_2"'),
        )
    )
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert [s.name for s in starts] == ["a", "b"]
    assert starts[0].call_id == "toolu_1" and starts[1].call_id != "toolu_1"
    calls = [e.call for e in events if isinstance(e, ToolCallComplete)]
    assert [(c.name, c.parse_error is None) for c in calls] == [
        ("a", True),
        ("b", True),
        ("", False),
    ]


def test_input_json_outside_a_tool_use_block_is_ignored() -> None:
    stray = (
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":5,'
        b'"delta":{"type":"input_json_delta","partial_json":"{\\"x\\": 1}"}}\n\n'
    )
    events = parse(_message(stray))
    assert not any(isinstance(e, ToolCallComplete | ToolCallDelta) for e in events)
    assert isinstance(events[-1], Finish)


def test_a_tool_block_left_open_does_not_cut_off_the_calls_that_stopped() -> None:
    # The second block never stops (cut off); the first one stopped whole, with no
    # input: its call is complete and must not read as cut off (a consumer would then
    # refuse to run it).
    body = (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1"}}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"tool_use","id":"toolu_a","name":"now","input":{}}}\n\n'
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":1,'
        b'"content_block":{"type":"tool_use","id":"toolu_b","name":"g","input":{}}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,'
        b'"delta":{"type":"input_json_delta","partial_json":"{\\"x\\": 1"}}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":'
        b'"tool_use"},"usage":{"output_tokens":9}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    whole, cut = [e.call for e in parse(body) if isinstance(e, ToolCallComplete)]
    assert (whole.id, whole.arguments, whole.parse_error) == ("toolu_a", {}, None)
    assert cut.id == "toolu_b" and cut.parse_error is not None
