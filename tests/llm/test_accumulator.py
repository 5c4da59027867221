"""The Accumulator: how a stream of events becomes the stored assistant message."""

from __future__ import annotations

from streamkeep.llm.accumulator import Accumulator
from streamkeep.llm.errors import ProviderConnectionError
from streamkeep.llm.events import (
    Finish,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    StreamError,
    StreamEvent,
    TextDelta,
    ToolCallComplete,
    ToolCallDelta,
    ToolCallStart,
    UsageReport,
)
from streamkeep.llm.types import (
    Completion,
    ReasoningPart,
    TextPart,
    ToolCall,
    ToolCallPart,
    Usage,
)


def fold(*events: StreamEvent) -> Completion:
    acc = Accumulator()
    for event in events:
        acc.add(event)
    return acc.result()


def test_nothing_yet_is_an_empty_message() -> None:
    assert fold() == Completion()


def test_consecutive_text_deltas_extend_one_text_part() -> None:
    completion = fold(TextDelta("Hel"), TextDelta("lo"), TextDelta("!"))
    assert completion.parts == [TextPart("Hello!")]
    assert completion.text == "Hello!"


def test_consecutive_reasoning_deltas_extend_one_reasoning_part() -> None:
    completion = fold(ReasoningDelta("think"), ReasoningDelta("ing"), TextDelta("answer"))
    assert completion.parts == [ReasoningPart("thinking"), TextPart("answer")]
    assert (completion.reasoning, completion.text) == ("thinking", "answer")


def test_alternating_kinds_open_new_parts_in_arrival_order() -> None:
    completion = fold(
        ReasoningDelta("a"), TextDelta("b"), ReasoningDelta("c"), TextDelta("d"), TextDelta("e")
    )
    assert completion.parts == [
        ReasoningPart("a"),
        TextPart("b"),
        ReasoningPart("c"),
        TextPart("de"),
    ]
    assert completion.reasoning == "ac" and completion.text == "bde"


def test_a_tool_call_takes_its_place_where_it_started() -> None:
    final = ToolCall("c1", "search", {"q": "x"}, raw_arguments='{"q": "x"}')
    completion = fold(
        TextDelta("Let me look."),
        ToolCallStart("c1", "search"),
        TextDelta(" Meanwhile..."),
        ToolCallDelta("c1", '{"q": "x"}'),
        ToolCallComplete(final),
    )
    assert completion.parts == [
        TextPart("Let me look."),
        ToolCallPart(final),
        TextPart(" Meanwhile..."),
    ]
    assert completion.tool_calls == [final]


def test_argument_deltas_show_in_the_live_view_before_the_call_completes() -> None:
    acc = Accumulator()
    for event in (ToolCallStart("c1", "f"), ToolCallDelta("c1", '{"a"'), ToolCallDelta("c1", ":")):
        acc.add(event)
    (call,) = acc.result().tool_calls
    assert (call.id, call.name, call.arguments, call.raw_arguments) == ("c1", "f", {}, '{"a":')


def test_the_result_can_be_read_mid_stream_and_later_reads_see_everything() -> None:
    acc = Accumulator()
    acc.add(TextDelta("a"))
    assert acc.result().text == "a"
    acc.add(TextDelta("b"))
    acc.add(ReasoningDelta("r"))
    acc.add(TextDelta("c"))
    assert acc.result().parts == [TextPart("ab"), ReasoningPart("r"), TextPart("c")]


def test_a_long_answer_is_assembled_exactly() -> None:
    pieces = [f"w{i} " for i in range(20_000)]
    assert fold(*(TextDelta(p) for p in pieces)).text == "".join(pieces)


def test_a_complete_call_without_a_start_is_appended() -> None:
    call = ToolCall("c9", "f", {}, parse_error="the provider never sent the tool's name")
    completion = fold(TextDelta("x"), ToolCallComplete(call))
    assert completion.parts == [TextPart("x"), ToolCallPart(call)]


def test_parallel_calls_complete_into_their_own_parts() -> None:
    a = ToolCall("a", "f", {"n": 1}, raw_arguments='{"n": 1}')
    b = ToolCall("b", "g", {"n": 2}, raw_arguments='{"n": 2}')
    completion = fold(
        ToolCallStart("a", "f"),
        ToolCallStart("b", "g"),
        ToolCallDelta("b", '{"n": 2}'),
        ToolCallDelta("a", '{"n": 1}'),
        ToolCallComplete(a),
        ToolCallComplete(b),
    )
    assert completion.tool_calls == [a, b]


def test_a_call_cut_off_keeps_its_raw_arguments_and_error() -> None:
    cut = ToolCall("c1", "write", {}, raw_arguments='{"body": "It was', parse_error="cut off")
    completion = fold(
        ToolCallStart("c1", "write"),
        ToolCallDelta("c1", '{"body": "It was'),
        ToolCallComplete(cut),
        Finish("length"),
    )
    assert completion.tool_calls == [cut]
    assert completion.finish_reason == "length"


def test_the_latest_usage_report_wins() -> None:
    early, final = Usage(1, 1), Usage(10, 20, reasoning_tokens=5, cached_input_tokens=3)
    assert fold(UsageReport(early), UsageReport(final)).usage == final


def test_finish_records_reason_response_id_and_model() -> None:
    completion = fold(TextDelta("hi"), Finish("stop", "resp-1", "gpt-x", "stop"))
    assert (completion.finish_reason, completion.response_id, completion.model) == (
        "stop",
        "resp-1",
        "gpt-x",
    )
    assert completion.error is None


def test_a_stream_error_keeps_the_partial_answer_and_the_error_text() -> None:
    error = ProviderConnectionError("connection broke mid-stream", provider="openai")
    completion = fold(TextDelta("partial"), StreamError(error, "resp-2", "gpt-x"))
    assert completion.text == "partial"
    assert completion.finish_reason == "error"
    assert completion.error == "connection broke mid-stream"
    assert (completion.response_id, completion.model) == ("resp-2", "gpt-x")


def test_long_tool_arguments_are_assembled_exactly_and_shown_mid_stream() -> None:
    acc = Accumulator()
    acc.add(ToolCallStart("c1", "write_file"))
    pieces = [f'"{i}",' for i in range(20_000)]
    for piece in pieces[:10]:
        acc.add(ToolCallDelta("c1", piece))
    assert acc.result().tool_calls[0].raw_arguments == "".join(pieces[:10])
    for piece in pieces[10:]:
        acc.add(ToolCallDelta("c1", piece))
    assert acc.result().tool_calls[0].raw_arguments == "".join(pieces)


# -- thinking signatures (Anthropic) ----------------------------------------------------


def test_a_signature_signs_the_reasoning_part_it_ends() -> None:
    completion = fold(
        ReasoningDelta("let me "),
        ReasoningDelta("think"),
        ReasoningSignature("sig-1"),
        TextDelta("ok"),
    )
    assert completion.parts == [ReasoningPart("let me think", signature="sig-1"), TextPart("ok")]


def test_reasoning_after_a_signature_is_another_block() -> None:
    completion = fold(
        ReasoningDelta("first"),
        ReasoningSignature("s1"),
        ReasoningDelta("second"),
        ReasoningSignature("s2"),
    )
    assert completion.parts == [
        ReasoningPart("first", signature="s1"),
        ReasoningPart("second", signature="s2"),
    ]
    assert completion.reasoning == "firstsecond"


def test_a_signature_without_reasoning_before_it_is_an_empty_signed_block() -> None:
    after_text = fold(TextDelta("a"), ReasoningSignature("s1"))
    assert after_text.parts == [TextPart("a"), ReasoningPart("", signature="s1")]
    twice = fold(ReasoningDelta("r"), ReasoningSignature("s1"), ReasoningSignature("s2"))
    assert twice.parts == [ReasoningPart("r", signature="s1"), ReasoningPart("", signature="s2")]


def test_a_redacted_block_is_a_part_of_its_own_that_nothing_extends() -> None:
    completion = fold(
        ReasoningDelta("seen"),
        ReasoningSignature("s1"),
        RedactedReasoning("opaque=="),
        ReasoningDelta("more"),
        ReasoningSignature("s2"),
    )
    assert completion.parts == [
        ReasoningPart("seen", signature="s1"),
        ReasoningPart("", redacted="opaque=="),
        ReasoningPart("more", signature="s2"),
    ]
    assert completion.reasoning == "seenmore"


def test_unsigned_reasoning_still_extends_across_other_events() -> None:
    completion = fold(
        ReasoningDelta("a"), UsageReport(Usage(1, 1), final=False), ReasoningDelta("b")
    )
    assert completion.parts == [ReasoningPart("ab")]
