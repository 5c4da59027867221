"""How every vendor's answer ends, one rule per test, for each vendor's parser alike:
the rules live once, in `StreamParser`, so both wire formats must follow them."""

from __future__ import annotations

import re

import pytest

from streamkeep.llm.anthropic import AnthropicStreamParser
from streamkeep.llm.errors import ProviderConnectionError, ProviderIncomplete
from streamkeep.llm.events import (
    Finish,
    StreamError,
    StreamEvent,
    TextDelta,
    ToolCallComplete,
    ToolCallStart,
    UsageReport,
)
from streamkeep.llm.openai import OpenAIChunkParser
from streamkeep.llm.parser import StreamParser
from streamkeep.llm.types import Usage


def _sse(event: str, data: str) -> bytes:
    return f"event: {event}\ndata: {data}\n\n".encode()


# Each vendor's body in pieces: an answer with text and a tool call whose usage came
# early, its finish, and an in-stream error.
OPENAI = {
    "answer": (
        b'data: {"id":"r1","model":"m","choices":[{"index":0,"delta":{"content":"Hi"}}],'
        b'"usage":{"prompt_tokens":7,"completion_tokens":3}}\n\n'
        b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1",'
        b'"function":{"name":"look","arguments":"{\\"q\\": 1}"}}]}}]}\n\n'
    ),
    "finish": b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}\n\n',
    "error": b'data: {"error":{"message":"boom","code":"overloaded"}}\n\n',
}
ANTHROPIC = {
    "answer": (
        _sse(
            "message_start",
            '{"type":"message_start","message":{"id":"r1","model":"m",'
            '"usage":{"input_tokens":7,"output_tokens":1}}}',
        )
        + _sse(
            "content_block_start",
            '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
        )
        + _sse(
            "content_block_delta",
            '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}',
        )
        + _sse(
            "content_block_start",
            '{"type":"content_block_start","index":1,"content_block":{"type":"tool_use",'
            '"id":"c1","name":"look","input":{}}}',
        )
        + _sse(
            "content_block_delta",
            '{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",'
            '"partial_json":"{\\"q\\": 1}"}}',
        )
        + _sse("content_block_stop", '{"type":"content_block_stop","index":1}')
    ),
    "finish": (
        _sse(
            "message_delta",
            '{"type":"message_delta","delta":{"stop_reason":"tool_use"},'
            '"usage":{"output_tokens":3}}',
        )
        + _sse("message_stop", '{"type":"message_stop"}')
    ),
    "error": _sse("error", '{"type":"error","error":{"type":"overloaded","message":"boom"}}'),
}
BODIES = {"openai": OPENAI, "anthropic": ANTHROPIC}
# The usage seen before the finish: OpenAI's is its total; Anthropic's message_start
# counts only the prompt (its output count is a placeholder), so it is not final.
EARLY_USAGE = {
    "openai": UsageReport(Usage(input_tokens=7, output_tokens=3)),
    "anthropic": UsageReport(Usage(input_tokens=7, output_tokens=1), final=False),
}


@pytest.fixture(params=["openai", "anthropic"])
def vendor(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def parser_for(vendor: str) -> StreamParser:
    return OpenAIChunkParser() if vendor == "openai" else AnthropicStreamParser()


def feed(parser: StreamParser, *pieces: bytes) -> list[StreamEvent]:
    out: list[StreamEvent] = []
    for piece in pieces:
        out += parser.feed(piece)
    return out


def test_a_finished_answer_ends_with_its_calls_then_its_usage_then_finish(vendor: str) -> None:
    parser = parser_for(vendor)
    body = BODIES[vendor]
    events = feed(parser, body["answer"], body["finish"]) + parser.close()
    assert events[0] == TextDelta("Hi")
    assert events[1] == ToolCallStart("c1", "look")
    complete, usage, finish = events[-3:]
    assert isinstance(complete, ToolCallComplete) and complete.call.arguments == {"q": 1}
    assert usage == UsageReport(Usage(input_tokens=7, output_tokens=3))
    assert finish == Finish(
        "tool-calls", "r1", "m", "tool_calls" if vendor == "openai" else "tool_use"
    )
    assert parser.done


def test_an_error_in_the_stream_reports_the_usage_seen_so_far_first(vendor: str) -> None:
    parser = parser_for(vendor)
    body = BODIES[vendor]
    events = feed(parser, body["answer"], body["error"])
    assert events[-2] == EARLY_USAGE[vendor]
    error = events[-1]
    assert isinstance(error, StreamError) and error.error.message == "boom"
    assert (error.response_id, error.model) == ("r1", "m")
    assert parser.done and parser.close() == []


def test_a_failed_answer_completes_no_tool_call(vendor: str) -> None:
    # A consumer might run a completed call: one that was cut off must not look done.
    parser = parser_for(vendor)
    body = BODIES[vendor]
    events = feed(parser, body["answer"], body["error"])
    assert not any(isinstance(e, ToolCallComplete | Finish) for e in events)


def test_a_body_that_just_ends_was_cut_short_and_keeps_the_usage_seen(vendor: str) -> None:
    parser = parser_for(vendor)
    events = feed(parser, BODIES[vendor]["answer"]) + parser.close()
    assert events[-2] == EARLY_USAGE[vendor]
    error = events[-1]
    assert isinstance(error, StreamError) and isinstance(error.error, ProviderIncomplete)


def test_a_broken_connection_before_the_finish_is_its_error_after_the_usage_seen(
    vendor: str,
) -> None:
    parser = parser_for(vendor)
    feed(parser, BODIES[vendor]["answer"])
    broken = ProviderConnectionError("reset by peer", provider=vendor)
    events = parser.broke_off(broken)
    assert events == [EARLY_USAGE[vendor], StreamError(broken, "r1", "m")]
    assert parser.broke_off(broken) == []


def test_a_broken_connection_after_the_finish_loses_only_the_tail() -> None:
    # OpenAI's finish reason says the answer is whole; [DONE] never came.
    parser = OpenAIChunkParser()
    feed(parser, OPENAI["answer"], OPENAI["finish"])
    assert parser.finished and not parser.done
    events = parser.broke_off(ProviderConnectionError("reset", provider="openai"))
    assert isinstance(events[-1], Finish) and events[-1].reason == "tool-calls"


def test_anthropic_usage_is_final_once_message_delta_counted_the_output() -> None:
    parser = AnthropicStreamParser()
    counted = _sse(
        "message_delta",
        '{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":5}}',
    )
    events = feed(parser, ANTHROPIC["answer"], counted, ANTHROPIC["error"])
    assert events[-2] == UsageReport(Usage(input_tokens=7, output_tokens=5))


def test_nothing_follows_the_end(vendor: str) -> None:
    parser = parser_for(vendor)
    body = BODIES[vendor]
    events = feed(parser, body["answer"], body["finish"]) + parser.close()
    assert feed(parser, body["answer"]) == []
    assert parser.close() == []
    assert parser.broke_off(ProviderConnectionError("late", provider=vendor)) == []
    assert sum(isinstance(e, Finish | StreamError) for e in events) == 1


def test_both_vendors_assemble_tool_calls_with_the_same_rules(vendor: str) -> None:
    # The assembler's rule: a call without a vendor id gets a generated one.
    parser = parser_for(vendor)
    body = BODIES[vendor]
    answer = body["answer"].replace(b'"id":"c1",', b"")
    events = feed(parser, answer, body["finish"]) + parser.close()
    [start] = [e for e in events if isinstance(e, ToolCallStart)]
    assert re.fullmatch(r"call_[0-9a-f]{24}", start.call_id)
