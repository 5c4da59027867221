"""OpenAIChunkParser on recorded transcripts: every quirk the wild sends, one test each.

The transcripts under `transcripts/openai_*.sse` are raw response bodies, byte for byte
(the CRLF one keeps its CRLFs), as the vendors named in their file names send them.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from streamkeep.llm.accumulator import Accumulator
from streamkeep.llm.errors import ProviderIncomplete, ProviderStreamError
from streamkeep.llm.events import (
    Finish,
    ReasoningDelta,
    StreamError,
    StreamEvent,
    TextDelta,
    ToolCallComplete,
    ToolCallDelta,
    ToolCallStart,
    UsageReport,
)
from streamkeep.llm.openai import OpenAIChunkParser
from streamkeep.llm.types import Completion, TextPart, ToolCallPart, Usage

TRANSCRIPTS = Path(__file__).parent / "transcripts"


def body(name: str) -> bytes:
    return (TRANSCRIPTS / f"openai_{name}.sse").read_bytes()


def parse_reads(*reads: bytes) -> tuple[list[StreamEvent], OpenAIChunkParser]:
    parser = OpenAIChunkParser("test")
    events: list[StreamEvent] = []
    for read in reads:
        events += parser.feed(read)
    return events + parser.close(), parser


def parse(name: str) -> list[StreamEvent]:
    return parse_reads(body(name))[0]


def accumulate(events: list[StreamEvent]) -> Completion:
    acc = Accumulator()
    for event in events:
        acc.add(event)
    return acc.result()


def finish(events: list[StreamEvent]) -> Finish:
    last = events[-1]
    assert isinstance(last, Finish), last
    assert sum(isinstance(e, Finish | StreamError) for e in events) == 1
    return last


def calls_of(events: list[StreamEvent]) -> list[tuple[str, dict[str, object]]]:
    return [(e.call.name, e.call.arguments) for e in events if isinstance(e, ToolCallComplete)]


def test_plain_text_stream_ends_with_usage_then_finish() -> None:
    events = parse("gpt4o_text")
    assert events == [
        TextDelta("Grüße"),
        TextDelta(" aus"),
        TextDelta(" 東京"),
        TextDelta(" 👋🏽!"),
        UsageReport(Usage(input_tokens=19, output_tokens=6)),
        Finish("stop", "chatcmpl-BXk2mQ7Yv1", "gpt-4o-mini-2024-07-18", "stop"),
    ]


@pytest.mark.parametrize(
    "name",
    ["gpt4o_text", "gpt4o_parallel_tools", "openrouter_text_around_tools", "deepseek_reasoning"],
)
def test_a_body_split_at_any_byte_gives_the_same_events(name: str) -> None:
    data = body(name)
    whole = parse_reads(data)[0]
    for cut in range(1, len(data)):
        assert parse_reads(data[:cut], data[cut:])[0] == whole, cut


def test_a_body_fed_one_byte_at_a_time_gives_the_same_events() -> None:
    data = body("azure_crlf_keepalive")
    whole = parse_reads(data)[0]
    assert parse_reads(*(data[i : i + 1] for i in range(len(data))))[0] == whole


def test_sse_comments_are_ignored() -> None:
    events = parse("openrouter_reasoning")
    assert accumulate(events).text == "Hi!"
    assert finish(events).reason == "stop"


def test_crlf_line_endings_and_keep_alive_comments() -> None:
    crlf, lf = parse("azure_crlf_keepalive"), parse("azure_prompt_filter")
    assert crlf == lf
    assert accumulate(crlf).text == "Hello there."


def test_a_first_chunk_with_empty_choices_and_chunks_without_delta() -> None:
    # Azure's prompt_filter_results chunk has choices: [] and empty id and model; its
    # finish chunk has no delta at all.
    events = parse("azure_prompt_filter")
    assert [e for e in events if isinstance(e, TextDelta)] == [
        TextDelta("Hello"),
        TextDelta(" there."),
    ]
    assert finish(events) == Finish("stop", "chatcmpl-AZ91fQ", "gpt-4o-2024-11-20", "stop")


def test_multi_line_data_is_one_chunk() -> None:
    events, parser = parse_reads(body("multiline_data"))
    assert accumulate(events).text == "two lines"
    assert parser.skipped_chunks == 0


def test_a_chunk_that_is_not_json_is_skipped_and_counted() -> None:
    events, parser = parse_reads(body("vllm_invalid_json"))
    assert accumulate(events).text == "Half done"
    assert parser.skipped_chunks == 1
    assert finish(events).reason == "stop"


def test_a_lone_surrogate_escape_reads_as_the_replacement_character() -> None:
    # Valid JSON that orjson refuses: each lone surrogate becomes U+FFFD, the rest of
    # the chunk (and the stream) is read as usual.
    reads = [
        b'data: {"choices":[{"delta":{"reasoning_content":"think \\udfff"}}]}\n\n',
        b'data: {"choices":[{"delta":{"content":"Hi \\ud800 there \\ud83d\\ude00"}}]}\n\n',
        b'data: {"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c1","function":'
        b'{"name":"f","arguments":"{\\"q\\": \\"\\\\ud800\\"}"}}]}}]}\n\n',
        b'data: {"choices":[{"delta":{},"finish_reason":"tool_calls"}]}\n\n',
        b"data: [DONE]\n\n",
    ]
    events, parser = parse_reads(*reads)
    assert parser.skipped_chunks == 0
    assert TextDelta("Hi \ufffd there 😀") in events
    assert ReasoningDelta("think \ufffd") in events
    completion = accumulate(events)
    assert completion.tool_calls[0].arguments == {"q": "\ufffd"}
    assert completion.tool_calls[0].parse_error is None
    assert finish(events).reason == "tool-calls"


def test_done_ends_the_stream_and_nothing_after_it_counts() -> None:
    parser = OpenAIChunkParser()
    events = parser.feed(body("gpt4o_text") + b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n')
    assert isinstance(events[-1], Finish) and parser.done
    assert parser.feed(b'data: {"choices":[{"delta":{"content":"y"}}]}\n\n') == []
    assert parser.close() == []


def test_an_error_object_in_a_chunk_ends_with_stream_error() -> None:
    events = parse("openrouter_error")
    assert events[0] == TextDelta("Once upon")
    assert len(events) == 2
    error = events[1]
    assert isinstance(error, StreamError)
    assert isinstance(error.error, ProviderStreamError)
    assert error.error.message == "Provider disconnected unexpectedly"
    assert (error.error.code, error.error.provider) == ("502", "test")
    assert error.response_id == "gen-1747222300-Er0rXx"


def test_finish_reason_error_without_an_error_object_is_a_stream_error() -> None:
    chunk = b'data: {"id":"r1","choices":[{"index":0,"delta":{},"finish_reason":"error"}]}\n\n'
    events, _ = parse_reads(chunk + b"data: [DONE]\n\n")
    assert len(events) == 1 and isinstance(events[0], StreamError)
    assert isinstance(events[0].error, ProviderStreamError)


@pytest.mark.parametrize(
    "data",
    [b"upstream overloaded", b'{"message": "upstream overloaded", "code": "overloaded"}'],
)
def test_an_sse_event_named_error_is_a_stream_error(data: bytes) -> None:
    events, _ = parse_reads(b"event: error\ndata: " + data + b"\n\ndata: [DONE]\n\n")
    assert len(events) == 1 and isinstance(events[0], StreamError)
    assert events[0].error.message == "upstream overloaded"


def test_parallel_tool_calls_openai_style() -> None:
    events = parse("gpt4o_parallel_tools")
    assert [e for e in events if isinstance(e, ToolCallStart)] == [
        ToolCallStart("call_Rk3yG7TbWcQ1", "get_weather"),
        ToolCallStart("call_Vm8pL2sXnA4e", "get_time"),
    ]
    deltas = "".join(
        e.arguments_delta
        for e in events
        if isinstance(e, ToolCallDelta) and e.call_id == "call_Rk3yG7TbWcQ1"
    )
    assert deltas == '{"city": "Zürich"}'
    assert calls_of(events) == [
        ("get_weather", {"city": "Zürich"}),
        ("get_time", {"tz": "Europe/Zurich"}),
    ]
    assert [type(e) for e in events[-4:]] == [
        ToolCallComplete,
        ToolCallComplete,
        UsageReport,
        Finish,
    ]
    assert finish(events).reason == "tool-calls"


def test_parallel_tool_calls_interleaved_by_index() -> None:
    events = parse("vllm_interleaved_tools")
    assert calls_of(events) == [("search", {"q": "sse spec"}), ("lookup", {"key": "k-7"})]
    assert [e.call.id for e in events if isinstance(e, ToolCallComplete)] == [
        "chatcmpl-tool-a1",
        "chatcmpl-tool-b2",
    ]


def test_tool_calls_sent_whole_at_the_same_index_told_apart_by_id() -> None:
    # Ollama: each call whole in one chunk, all at index 0, full arguments then nothing.
    events = parse("ollama_whole_tools")
    assert calls_of(events) == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Oslo"}),
    ]
    assert [e.call.id for e in events if isinstance(e, ToolCallComplete)] == [
        "call_m2x9q1ab",
        "call_p0c4r7zz",
    ]


def test_tool_calls_without_index_or_id() -> None:
    # Gemini: both calls in one chunk, no index, no id; usage and finish on the same chunk.
    events = parse("gemini_unindexed_tools")
    assert calls_of(events) == [
        ("get_weather", {"city": "Lima"}),
        ("get_weather", {"city": "Quito"}),
    ]
    ids = [e.call.id for e in events if isinstance(e, ToolCallComplete)]
    assert len(set(ids)) == 2 and all(i.startswith("call_") for i in ids)
    assert events[-2] == UsageReport(Usage(input_tokens=41, output_tokens=16))
    assert finish(events).reason == "tool-calls"


def test_null_index_and_empty_id_and_name_on_continuations() -> None:
    events = parse("toolcall_quirks")
    assert [e for e in events if isinstance(e, ToolCallStart)] == [
        ToolCallStart("395812443", "search")
    ]
    assert calls_of(events) == [("search", {"query": "wasm gc"})]


def test_a_new_id_on_every_chunk_of_the_same_call() -> None:
    events = parse("toolcall_new_id_each_chunk")
    assert calls_of(events) == [("add", {"a": 2, "b": 3})]
    assert {e.call_id for e in events if isinstance(e, ToolCallStart | ToolCallDelta)} == {
        "call_8a1f"
    }


def test_arguments_as_an_object_null_empty_and_not_an_object() -> None:
    events = parse("toolcall_args_shapes")
    calls = [e.call for e in events if isinstance(e, ToolCallComplete)]
    assert [(c.name, c.arguments, c.parse_error) for c in calls[:3]] == [
        ("set_volume", {"level": 7, "unit": "step"}, None),
        ("list_rooms", {}, None),
        ("now", {}, None),
    ]
    assert calls[3].arguments == {} and calls[3].raw_arguments == "[1, 2]"
    assert calls[3].parse_error is not None


def test_text_before_and_after_a_tool_call_keeps_its_order() -> None:
    completion = accumulate(parse("openrouter_text_around_tools"))
    assert [type(p) for p in completion.parts] == [TextPart, ToolCallPart, TextPart]
    assert completion.text == "Let me check. One moment."
    assert completion.tool_calls[0].arguments == {"sku": "A-1"}
    assert completion.finish_reason == "tool-calls"


def test_a_tool_call_cut_off_by_the_length_limit_is_reported() -> None:
    events = parse("toolcall_length")
    (complete,) = [e for e in events if isinstance(e, ToolCallComplete)]
    assert complete.call.name == "write_file"
    assert complete.call.raw_arguments == '{"path": "a.txt", "body": "It was a dark and'
    assert complete.call.parse_error is not None
    assert finish(events).reason == "length"
    assert accumulate(events).tool_calls[0].parse_error is not None


def test_reasoning_content_deepseek() -> None:
    events = parse("deepseek_reasoning")
    assert [e for e in events if isinstance(e, ReasoningDelta)] == [
        ReasoningDelta("9.11 vs 9.9:"),
        ReasoningDelta(" 0.90 > 0.11."),
    ]
    completion = accumulate(events)
    assert completion.text == "9.9 is larger."
    assert completion.usage == Usage(input_tokens=18, output_tokens=40, reasoning_tokens=31)


def test_reasoning_field_openrouter() -> None:
    completion = accumulate(parse("openrouter_reasoning"))
    assert completion.reasoning == "The user greets me."
    assert completion.usage == Usage(input_tokens=9, output_tokens=7, reasoning_tokens=4)


def test_usage_before_the_last_chunk_xai_and_the_last_one_wins() -> None:
    events = parse("xai_early_usage")
    usages = [e for e in events if isinstance(e, UsageReport)]
    assert usages == [
        UsageReport(
            Usage(input_tokens=11, output_tokens=40, reasoning_tokens=38, cached_input_tokens=2)
        )
    ]
    assert events[-2] == usages[0]


def test_usage_under_x_groq() -> None:
    events = parse("groq_usage")
    assert UsageReport(Usage(input_tokens=14, output_tokens=5)) in events
    assert accumulate(events).reasoning == "Short answer."


def test_usage_on_a_chunk_with_empty_choices() -> None:
    events = parse("gpt4o_parallel_tools")
    assert UsageReport(Usage(input_tokens=80, output_tokens=47)) in events


def test_a_usage_of_zeros_is_no_usage() -> None:
    """llama-cpp-python's server reports 0 prompt and 0 completion tokens with its
    function-calling streams: counted as not reported (then estimated), not as free."""
    chunks = (
        b'data: {"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}]}\n\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":0,"completion_tokens":0}}\n\n'
        b"data: [DONE]\n\n"
    )
    events, _ = parse_reads(chunks)
    assert not any(isinstance(e, UsageReport) for e in events)


def test_a_stream_ending_without_done_or_finish_reason_was_cut_short() -> None:
    events = parse("llamacpp_cut_off")
    completion = accumulate(events)
    assert completion.text == "The sky is"
    last = events[-1]
    assert isinstance(last, StreamError) and isinstance(last.error, ProviderIncomplete)
    assert last.error.message == "the provider closed the stream before finishing"
    assert (last.response_id, last.model) == ("chatcmpl-Zr1lYQ0xw", "smollm2-135m-instruct")
    assert completion.finish_reason == "error"
    assert not any(isinstance(e, Finish) for e in events)


def test_a_tool_call_cut_short_is_not_completed() -> None:
    # Without a finish reason the call's arguments may be whole JSON by chance: a
    # consumer must not run it.
    data = (
        b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1",'
        b'"function":{"name":"delete","arguments":"{\\"all\\": true}"}}]}}]}\n\n'
    )
    events, parser = parse_reads(data)
    assert not any(isinstance(e, ToolCallComplete) for e in events)
    assert isinstance(events[-1], StreamError) and parser.done


def test_done_without_a_finish_reason_is_finished() -> None:
    data = body("llamacpp_cut_off") + b"data: [DONE]\n\n"
    events, _ = parse_reads(data)
    assert finish(events) == Finish("unknown", "chatcmpl-Zr1lYQ0xw", "smollm2-135m-instruct")


def test_a_whole_json_body_cut_short_is_incomplete() -> None:
    whole = body("proxy_json_not_sse")
    events, _ = parse_reads(whole[: len(whole) // 2])
    assert isinstance(events[-1], StreamError)
    assert isinstance(events[-1].error, ProviderIncomplete)


def test_a_stream_with_finish_reason_but_no_done_finishes_at_the_end_of_the_body() -> None:
    data = body("gpt4o_text").replace(b"data: [DONE]\n\n", b"")
    events, parser = parse_reads(data)
    assert finish(events).reason == "stop" and parser.done


def test_unknown_finish_reasons_map_to_other_and_keep_the_raw_word() -> None:
    chunk = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"eos_token"}]}\n\n'
    events, _ = parse_reads(chunk)
    assert finish(events) == Finish("other", None, None, "eos_token")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("tool_calls", "tool-calls"),
        ("function_call", "tool-calls"),
        ("content_filter", "content-filter"),
    ],
)
def test_finish_reasons_are_normalised(raw: str, reason: str) -> None:
    chunk = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"%s"}]}\n\n' % raw.encode()
    assert finish(parse_reads(chunk + b"data: [DONE]\n\n")[0]).reason == reason


def test_the_deprecated_function_call_delta_is_a_tool_call() -> None:
    chunks = (
        b'data: {"choices":[{"index":0,"delta":{"function_call":{"name":"f","arguments":""}}}]}\n\n'
        b'data: {"choices":[{"index":0,"delta":{"function_call":{"arguments":"{\\"a\\":1}"}}}]}\n\n'
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"function_call"}]}\n\n'
    )
    events, _ = parse_reads(chunks)
    assert calls_of(events) == [("f", {"a": 1})]


def test_a_call_sent_both_as_tool_calls_and_function_call_is_one_call() -> None:
    """llama-cpp-python's server (chatml-function-calling) sends every fragment twice,
    in `function_call` and in `tool_calls`, repeating the name each time."""

    def chunk(arguments: str) -> bytes:
        function = {"name": "calculator", "arguments": arguments}
        call = {"index": 0, "id": "call__0_calculator", "type": "function", "function": function}
        delta = {"role": None, "content": None, "function_call": function, "tool_calls": [call]}
        return b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": delta}]}) + b"\n\n"

    chunks = b"".join(chunk(piece) for piece in ('{"expr', 'ession": ', '"6*7"}'))
    chunks += b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}\n\n'
    events, _ = parse_reads(chunks)
    assert calls_of(events) == [("calculator", {"expression": "6*7"})]


def test_only_the_first_choice_is_the_answer() -> None:
    chunks = (
        b'data: {"choices":[{"index":0,"delta":{"content":"A"}}]}\n\n'
        b'data: {"choices":[{"index":1,"delta":{"content":"B"}}]}\n\n'
    )
    assert accumulate(parse_reads(chunks)[0]).text == "A"


def test_content_as_typed_blocks() -> None:
    chunk = (
        b'data: {"choices":[{"index":0,"delta":{"content":[{"type":"thinking","thinking":'
        b'[{"type":"text","text":"hmm"}]},{"type":"text","text":"ok"}]}}]}\n\n'
    )
    completion = accumulate(parse_reads(chunk)[0])
    assert (completion.reasoning, completion.text) == ("hmm", "ok")


def test_a_refusal_is_kept_as_text() -> None:
    chunks = (
        b'data: {"choices":[{"index":0,"delta":{"content":null,"refusal":"I can\'t"}}]}\n\n'
        b'data: {"choices":[{"index":0,"delta":{"refusal":" help."},"finish_reason":"stop"}]}\n\n'
    )
    assert accumulate(parse_reads(chunks)[0]).text == "I can't help."


def test_a_whole_json_answer_instead_of_a_stream_is_still_read() -> None:
    # A server or proxy that ignores `stream: true` answers with one chat.completion.
    events = parse("proxy_json_not_sse")
    completion = accumulate(events)
    assert (completion.reasoning, completion.text) == ("Need the time.", "Checking.")
    assert [(c.id, c.name, c.arguments) for c in completion.tool_calls] == [
        ("call_w1", "now", {"tz": "UTC"})
    ]
    assert completion.usage == Usage(input_tokens=30, output_tokens=12)
    assert finish(events) == Finish(
        "tool-calls", "chatcmpl-nostream-1", "llama-3.2-3b-instruct", "tool_calls"
    )


def test_a_json_error_body_with_http_200_is_a_stream_error() -> None:
    events = parse("proxy_json_error")
    assert len(events) == 1 and isinstance(events[0], StreamError)
    assert events[0].error.message == "model 'llama-9' not found, try pulling it first"


def test_a_json_body_split_across_reads_after_leading_whitespace() -> None:
    data = body("proxy_json_not_sse")
    events, _ = parse_reads(b"\n", data[:7], data[7:])
    assert accumulate(events).text == "Checking."


def test_usage_sent_before_an_in_stream_error_is_reported_before_it() -> None:
    # xAI-style early usage, then an OpenRouter-style error: keep the vendor's count.
    chunks = (
        b'data: {"id":"r1","choices":[{"index":0,"delta":{"content":"Hi"}}],'
        b'"usage":{"prompt_tokens":7,"completion_tokens":1}}\n\n'
        b'data: {"id":"r1","error":{"message":"boom","code":502},'
        b'"choices":[{"index":0,"delta":{},"finish_reason":"error"}]}\n\n'
    )
    events, _ = parse_reads(chunks)
    assert isinstance(events[-1], StreamError)
    assert events[-2] == UsageReport(Usage(input_tokens=7, output_tokens=1))
