"""Typed events -> UI message stream chunks (their SSE framing: tests/test_sse.py)."""

from __future__ import annotations

from typing import Any

import orjson

from streamkeep.generation.ui_stream import UIStreamEncoder
from streamkeep.llm.events import (
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCallComplete,
    ToolCallDelta,
    ToolCallStart,
    UsageReport,
)
from streamkeep.llm.types import ToolCall, Usage


def chunks(encoder: UIStreamEncoder, events: list[StreamEvent]) -> list[dict[str, Any]]:
    return [orjson.loads(p) for e in events for p in encoder.encode(e)]


def test_start_then_start_step() -> None:
    out = [orjson.loads(p) for p in UIStreamEncoder().start("msg_1", {"chatId": "c"})]
    assert out == [
        {"type": "start", "messageId": "msg_1", "messageMetadata": {"chatId": "c"}},
        {"type": "start-step"},
    ]


def test_text_deltas_share_one_block() -> None:
    enc = UIStreamEncoder()
    out = chunks(enc, [TextDelta("Hel"), TextDelta("lo"), TextDelta("")])
    assert out == [
        {"type": "text-start", "id": "t1"},
        {"type": "text-delta", "id": "t1", "delta": "Hel"},
        {"type": "text-delta", "id": "t1", "delta": "lo"},
    ]
    assert [orjson.loads(p)["type"] for p in enc.error("boom")] == ["text-end", "error"]


def test_reasoning_then_text_closes_the_reasoning_block() -> None:
    out = chunks(UIStreamEncoder(), [ReasoningDelta("hm"), TextDelta("yes")])
    assert out == [
        {"type": "reasoning-start", "id": "r1"},
        {"type": "reasoning-delta", "id": "r1", "delta": "hm"},
        {"type": "reasoning-end", "id": "r1"},
        {"type": "text-start", "id": "t2"},
        {"type": "text-delta", "id": "t2", "delta": "yes"},
    ]


def test_tool_call_chunks() -> None:
    call = ToolCall(id="call_1", name="search", arguments={"q": "x"}, raw_arguments='{"q":"x"}')
    events: list[StreamEvent] = [
        TextDelta("Let me look."),
        ToolCallStart("call_1", "search"),
        ToolCallDelta("call_1", '{"q":'),
        ToolCallDelta("call_1", '"x"}'),
        UsageReport(Usage(input_tokens=3, output_tokens=4)),
        ToolCallComplete(call),
    ]
    out = chunks(UIStreamEncoder(), events)
    assert [c["type"] for c in out] == [
        "text-start",
        "text-delta",
        "text-end",
        "tool-input-start",
        "tool-input-delta",
        "tool-input-delta",
        "tool-input-available",
    ]
    assert out[3] == {"type": "tool-input-start", "toolCallId": "call_1", "toolName": "search"}
    assert out[4] == {"type": "tool-input-delta", "toolCallId": "call_1", "inputTextDelta": '{"q":'}
    assert out[6] == {
        "type": "tool-input-available",
        "toolCallId": "call_1",
        "toolName": "search",
        "input": {"q": "x"},
    }


def test_unparseable_tool_arguments_become_tool_input_error() -> None:
    call = ToolCall(id="c", name="f", arguments={}, raw_arguments='{"a":', parse_error="cut off")
    (out,) = chunks(UIStreamEncoder(), [ToolCallComplete(call)])
    assert out == {
        "type": "tool-input-error",
        "toolCallId": "c",
        "toolName": "f",
        "input": '{"a":',
        "errorText": "cut off",
    }


def test_end_of_a_complete_answer() -> None:
    enc = UIStreamEncoder()
    enc.encode(TextDelta("hi"))
    out = enc.end({"status": "complete"}, "stop")
    assert out[-1] == b"[DONE]"
    assert [orjson.loads(p) for p in out[:-1]] == [
        {"type": "text-end", "id": "t1"},
        {"type": "finish-step"},
        {"type": "message-metadata", "messageMetadata": {"status": "complete"}},
        {"type": "finish", "finishReason": "stop"},
    ]


def test_end_of_a_stopped_answer_aborts_and_maps_unknown_reasons() -> None:
    out = UIStreamEncoder().end({"status": "stopped"}, None, aborted=True)
    assert [orjson.loads(p)["type"] for p in out[:-1]] == [
        "finish-step",
        "message-metadata",
        "abort",
        "finish",
    ]
    assert orjson.loads(out[-2]) == {"type": "finish"}
    unknown = UIStreamEncoder().end({}, "unknown")
    assert orjson.loads(unknown[-2]) == {"type": "finish", "finishReason": "other"}
