"""The OpenAI chunk encoder, specified by typed events in and parsed frames out."""

from __future__ import annotations

from typing import Any

import orjson
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from streamkeep import sse
from streamkeep.gateway.chunks import ChunkEncoder, completion_body
from streamkeep.llm import (
    Accumulator,
    Finish,
    ProviderConnectionError,
    ReasoningDelta,
    StreamError,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallComplete,
    ToolCallDelta,
    ToolCallStart,
    Usage,
    UsageReport,
)
from streamkeep.sse import DONE

USAGE = Usage(input_tokens=11, output_tokens=7, reasoning_tokens=2, cached_input_tokens=3)


def run(events: list[StreamEvent], *, include_usage: bool = False) -> list[bytes]:
    enc = ChunkEncoder(
        model="openai/m", completion_id="chatcmpl-x", created=5, include_usage=include_usage
    )
    frames: list[bytes] = []
    for event in events:
        frames += enc.encode(event)
    return frames


def payloads(frames: list[bytes]) -> list[dict[str, Any]]:
    """Parse as an SSE client would: every frame `data: {json}`, the last `[DONE]`."""
    events = sse.frames(frames).split(b"\n\n")
    assert events[-2:] == [b"data: [DONE]", b""]
    out = []
    for event in events[:-2]:
        assert event.startswith(b"data: {")
        out.append(orjson.loads(event[6:]))
    return out


def test_text_stream_has_role_chunk_deltas_and_finish() -> None:
    chunks = payloads(run([TextDelta("Hel"), TextDelta('lo "x"'), Finish("stop")]))
    parsed = [ChatCompletionChunk.model_validate(c) for c in chunks]
    assert parsed[0].choices[0].delta.role == "assistant"
    assert [p.choices[0].delta.content for p in parsed[1:3]] == ["Hel", 'lo "x"']
    assert parsed[-1].choices[0].finish_reason == "stop"
    assert {(p.id, p.created, p.model, p.object) for p in parsed} == {
        ("chatcmpl-x", 5, "openai/m", "chat.completion.chunk")
    }
    assert all("usage" not in c for c in chunks)


def test_usage_chunk_only_when_asked_and_with_exact_numbers() -> None:
    events: list[StreamEvent] = [TextDelta("a"), UsageReport(USAGE), Finish("stop")]
    without = payloads(run(events))
    assert all(c["choices"] for c in without)
    with_usage = payloads(run(events, include_usage=True))
    assert all(c["usage"] is None for c in with_usage[:-1])
    last = ChatCompletionChunk.model_validate(with_usage[-1])
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (
        11,
        7,
        18,
    )
    assert last.usage.completion_tokens_details is not None
    assert last.usage.completion_tokens_details.reasoning_tokens == 2
    assert last.usage.prompt_tokens_details is not None
    assert last.usage.prompt_tokens_details.cached_tokens == 3


def test_parallel_tool_calls_keep_their_own_index() -> None:
    a = ToolCall(
        id="call_a", name="weather", arguments={"city": "Oslo"}, raw_arguments='{"city": "Oslo"}'
    )
    b = ToolCall(id="call_b", name="time", arguments={"tz": "UTC"}, raw_arguments='{"tz": "UTC"}')
    events: list[StreamEvent] = [
        ToolCallStart("call_a", "weather"),
        ToolCallStart("call_b", "time"),
        ToolCallDelta("call_a", '{"city": '),
        ToolCallDelta("call_b", '{"tz": "UTC"}'),
        ToolCallDelta("call_a", '"Oslo"}'),
        ToolCallComplete(a),
        ToolCallComplete(b),
        Finish("tool-calls", raw_reason="tool_calls"),
    ]
    chunks = [ChatCompletionChunk.model_validate(c) for c in payloads(run(events))]
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for d in chunk.choices[0].delta.tool_calls or []:
            slot = calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
            slot["id"] += d.id or ""
            assert d.function is not None
            slot["name"] += d.function.name or ""
            slot["arguments"] += d.function.arguments or ""
    assert calls == {
        0: {"id": "call_a", "name": "weather", "arguments": '{"city": "Oslo"}'},
        1: {"id": "call_b", "name": "time", "arguments": '{"tz": "UTC"}'},
    }
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_a_call_given_whole_is_sent_as_start_and_arguments() -> None:
    call = ToolCall(id="c1", name="f", arguments={"x": 1}, raw_arguments="")
    chunks = payloads(run([ToolCallComplete(call), Finish("tool-calls")]))
    deltas = [d for c in chunks for d in c["choices"][0]["delta"].get("tool_calls", [])]
    assert deltas[0]["id"] == "c1" and deltas[0]["function"]["name"] == "f"
    assert "".join(d["function"]["arguments"] for d in deltas) == '{"x":1}'


def arguments_of(frames: list[bytes]) -> list[str]:
    """The `arguments` pieces of call 0, in order, as a client receives them."""
    return [
        d["function"]["arguments"]
        for chunk in payloads(frames)
        for choice in chunk["choices"]
        for d in choice["delta"].get("tool_calls", [])
        if d["function"].get("arguments")
    ]


def test_object_arguments_after_blanks_stream_live() -> None:
    enc = ChunkEncoder(model="m")
    call = ToolCall("c1", "f", {"a": 1}, raw_arguments=' {"a": ', parse_error=None)
    frames = enc.encode(ToolCallStart("c1", "f")) + enc.encode(ToolCallDelta("c1", " "))
    assert arguments_of([*frames, DONE]) == []  # blanks alone say nothing yet
    frames += enc.encode(ToolCallDelta("c1", '{"a": '))
    assert arguments_of([*frames, DONE]) == [' {"a": ']  # an object: out at once
    frames += enc.encode(ToolCallDelta("c1", "1}"))
    call.raw_arguments += "1}"
    frames += enc.encode(ToolCallComplete(call)) + enc.encode(Finish("tool-calls"))
    assert arguments_of(frames) == [' {"a": ', "1}"]


def test_a_call_stopped_before_its_end_still_gets_object_arguments() -> None:
    enc = ChunkEncoder(model="m")
    frames = enc.encode(ToolCallStart("c1", "f")) + enc.encode(ToolCallDelta("c1", "nu"))
    frames += enc.end({"status": "stopped"}, "stop")
    assert arguments_of(frames) == ["{}"]
    assert payloads(frames)[-1]["choices"][0]["finish_reason"] == "stop"


def test_reasoning_goes_out_as_reasoning_content() -> None:
    chunks = payloads(run([ReasoningDelta("think"), TextDelta("ok"), Finish("stop")]))
    assert chunks[1]["choices"][0]["delta"] == {"reasoning_content": "think"}
    assert chunks[2]["choices"][0]["delta"] == {"content": "ok"}


def test_finish_reasons_back_in_openai_words() -> None:
    for ours, raw, theirs in [
        ("length", None, "length"),
        ("content-filter", None, "content_filter"),
        ("tool-calls", "tool_use", "tool_calls"),
        ("stop", "end_turn", "stop"),
        ("other", None, "stop"),
    ]:
        chunks = payloads(run([TextDelta("x"), Finish(ours, raw_reason=raw)]))  # type: ignore[arg-type]
        assert chunks[-1]["choices"][0]["finish_reason"] == theirs


def test_failure_after_first_byte_is_a_final_error_chunk() -> None:
    frames = run([TextDelta("partial"), StreamError(ProviderConnectionError("reset by peer"))])
    chunks = payloads(frames)
    assert chunks[1]["choices"][0]["delta"]["content"] == "partial"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["error"]["message"] == "reset by peer"
    assert chunks[-1]["error"]["code"] == "provider_connection_error"


def test_empty_reply_still_opens_with_the_role_chunk() -> None:
    chunks = payloads(run([Finish("stop")]))
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[1]["choices"][0]["finish_reason"] == "stop"


def test_whole_completion_body_matches_the_accumulated_stream() -> None:
    acc = Accumulator()
    call = ToolCall(id="c1", name="f", arguments={"x": 1}, raw_arguments='{"x": 1}')
    for event in [
        ReasoningDelta("hm"),
        TextDelta("Hi"),
        TextDelta(" there"),
        ToolCallStart("c1", "f"),
        ToolCallDelta("c1", '{"x": 1}'),
        ToolCallComplete(call),
        UsageReport(USAGE),
        Finish("tool-calls"),
    ]:
        acc.add(event)
    body = ChatCompletion.model_validate(
        completion_body(acc.result(), model="openai/m", completion_id="chatcmpl-y", created=1)
    )
    choice = body.choices[0]
    assert choice.message.content == "Hi there"
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    assert choice.message.tool_calls[0].function.arguments == '{"x": 1}'  # type: ignore[union-attr]
    assert body.usage is not None and body.usage.total_tokens == 18
    assert (
        completion_body(acc.result(), model="m")["choices"][0]["message"]["reasoning_content"]
        == "hm"
    )


def test_generation_interface_defers_the_first_byte_and_closes_in_order() -> None:
    enc = ChunkEncoder(model="m", include_usage=True)
    assert enc.start("msg_1", {"status": "streaming"}) == []
    assert not enc.started
    frames = enc.encode(TextDelta("a")) + enc.encode(UsageReport(USAGE))
    frames += enc.end({"status": "complete"}, "length")
    chunks = payloads(frames)
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["total_tokens"] == 18


def test_generation_error_then_end_has_no_finish_or_usage() -> None:
    enc = ChunkEncoder(model="m", include_usage=True)
    frames = enc.encode(TextDelta("a")) + enc.encode(UsageReport(USAGE))
    frames += enc.error("HTTP 500: boom") + enc.end({"status": "error"}, "error")
    chunks = payloads(frames)
    assert chunks[-1]["error"] == {
        "message": "HTTP 500: boom",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    assert all(c["choices"] == [] or c["choices"][0]["finish_reason"] is None for c in chunks)
    assert frames[-1] == DONE
