"""The tool-call assembler's delta rules, one rule per test."""

from __future__ import annotations

import re
from typing import Any

from streamkeep.llm.events import ToolCallComplete, ToolCallDelta, ToolCallStart
from streamkeep.llm.toolcalls import ToolCallAssembler, parse_arguments
from streamkeep.llm.types import ToolCall

Fragment = tuple[int | None, str | None, str | None, str | dict[str, Any] | None]


def run(*fragments: Fragment, truncated: bool = False) -> tuple[list[Any], list[ToolCall]]:
    """Feed fragments; return (start/delta events, completed calls)."""
    assembler = ToolCallAssembler()
    events: list[Any] = []
    for fragment in fragments:
        events += assembler.feed(*fragment)
    done = assembler.finish(truncated=truncated)
    assert all(isinstance(e, ToolCallComplete) for e in done)
    return events, [e.call for e in done]


def test_a_call_streams_as_start_then_argument_deltas_then_one_complete_call() -> None:
    events, calls = run(
        (0, "call_1", "get_weather", ""),
        (0, None, None, '{"city": '),
        (0, None, None, '"Oslo"}'),
    )
    assert events == [
        ToolCallStart("call_1", "get_weather"),
        ToolCallDelta("call_1", '{"city": '),
        ToolCallDelta("call_1", '"Oslo"}'),
    ]
    assert calls == [
        ToolCall("call_1", "get_weather", {"city": "Oslo"}, raw_arguments='{"city": "Oslo"}')
    ]


def test_full_arguments_in_the_first_chunk_then_nothing() -> None:
    events, calls = run((0, "call_1", "now", '{"tz": "UTC"}'))
    assert events == [ToolCallStart("call_1", "now"), ToolCallDelta("call_1", '{"tz": "UTC"}')]
    assert calls[0].arguments == {"tz": "UTC"}


def test_a_missing_or_null_index_continues_the_latest_call() -> None:
    _, calls = run((None, "c1", "search", '{"q":'), (None, None, None, ' "x"}'))
    assert [(c.id, c.arguments) for c in calls] == [("c1", {"q": "x"})]


def test_empty_id_and_empty_name_on_continuation_chunks_count_as_absent() -> None:
    events, calls = run((0, "c1", "search", ""), (0, "", "", '{"q": 1}'))
    assert events == [ToolCallStart("c1", "search"), ToolCallDelta("c1", '{"q": 1}')]
    assert [(c.id, c.name) for c in calls] == [("c1", "search")]


def test_a_call_with_no_id_at_all_gets_a_generated_unique_id() -> None:
    events, calls = run((0, None, "a", "{}"), (1, None, "b", "{}"))
    ids = [c.id for c in calls]
    assert all(re.fullmatch(r"call_[0-9a-f]{24}", i) for i in ids)
    assert len(set(ids)) == 2
    assert [e.call_id for e in events if isinstance(e, ToolCallStart)] == ids


def test_a_vendor_id_used_twice_in_one_response_is_replaced_to_stay_unique() -> None:
    _, calls = run((0, "dup", "a", "{}"), (1, "dup", "b", "{}"))
    assert calls[0].id == "dup"
    assert calls[1].id != "dup" and calls[1].name == "b"


def test_several_calls_at_the_same_index_are_told_apart_by_id() -> None:
    _, calls = run(
        (0, "call_a", "get_weather", '{"city": "Paris"}'),
        (0, "call_b", "get_weather", '{"city": '),
        (0, "call_a", None, ""),  # a late fragment of the first call, by its id
        (0, None, None, '"Oslo"}'),  # no id: the latest call at the index
    )
    assert [(c.id, c.arguments) for c in calls] == [
        ("call_a", {"city": "Paris"}),
        ("call_b", {"city": "Oslo"}),
    ]


def test_a_new_id_on_every_chunk_of_the_same_call_stays_one_call() -> None:
    events, calls = run(
        (0, "call_1", "add", ""), (0, "call_2", None, '{"a": 2, '), (0, "call_3", None, '"b": 3}')
    )
    assert [(c.id, c.arguments) for c in calls] == [("call_1", {"a": 2, "b": 3})]
    assert {e.call_id for e in events} == {"call_1"}


def test_a_call_is_held_until_it_has_a_name() -> None:
    assembler = ToolCallAssembler()
    assert assembler.feed(0, "c1", None, '{"x":') == []
    assert assembler.feed(0, None, "", " 1") == []
    assert assembler.feed(0, None, "calc", "}") == [
        ToolCallStart("c1", "calc"),
        ToolCallDelta("c1", '{"x": 1}'),
    ]


def test_a_name_on_a_continuation_does_not_rename_a_started_call() -> None:
    _, calls = run((0, "c1", "search", '{"q":'), (0, None, "search", ' "x"}'))
    assert [(c.name, c.arguments) for c in calls] == [("search", {"q": "x"})]


def test_unindexed_calls_sent_whole_are_separate_calls() -> None:
    _, calls = run(
        (None, None, "get_weather", '{"city": "Lima"}'),
        (None, None, "get_weather", '{"city": "Quito"}'),
    )
    assert [c.arguments["city"] for c in calls] == ["Lima", "Quito"]
    assert calls[0].id != calls[1].id


def test_arguments_sent_as_a_json_object_instead_of_a_string() -> None:
    events, calls = run((0, "c1", "set", {"level": 7}))
    assert events[1] == ToolCallDelta("c1", '{"level":7}')
    assert calls[0].arguments == {"level": 7}
    assert calls[0].raw_arguments == '{"level":7}'


def test_an_empty_object_adds_nothing_so_text_deltas_may_follow_it() -> None:
    events, calls = run((0, "c1", "f", {}), (0, None, None, '{"a": 1}'))
    assert events == [ToolCallStart("c1", "f"), ToolCallDelta("c1", '{"a": 1}')]
    assert (calls[0].arguments, calls[0].raw_arguments) == ({"a": 1}, '{"a": 1}')


def test_null_or_empty_or_blank_arguments_mean_no_arguments() -> None:
    _, calls = run(
        (0, "a", "f", "null"), (1, "b", "g", ""), (2, "c", "h", None), (3, "d", "i", "  ")
    )
    assert [(c.arguments, c.parse_error) for c in calls] == [({}, None)] * 4


def test_parallel_calls_interleaved_by_index() -> None:
    events, calls = run(
        (0, "c0", "search", None),
        (1, "c1", "lookup", None),
        (1, None, None, '{"key": '),
        (0, None, None, '{"q": '),
        (1, None, None, '"k"}'),
        (0, None, None, '"s"}'),
    )
    assert [(c.id, c.arguments) for c in calls] == [("c0", {"q": "s"}), ("c1", {"key": "k"})]
    assert [type(e).__name__ for e in events] == ["ToolCallStart"] * 2 + ["ToolCallDelta"] * 4


def test_a_call_cut_off_by_the_length_limit_is_reported_with_its_raw_text() -> None:
    _, calls = run((0, "c1", "write", '{"body": "It was a dark and'), truncated=True)
    (call,) = calls
    assert call.arguments == {}
    assert call.raw_arguments == '{"body": "It was a dark and'
    assert call.parse_error is not None and "cut off" in call.parse_error


def test_a_truncated_response_keeps_the_calls_that_did_finish() -> None:
    _, calls = run((0, "a", "f", '{"x": 1}'), (1, "b", "g", ""), truncated=True)
    assert (calls[0].arguments, calls[0].parse_error) == ({"x": 1}, None)
    assert calls[1].parse_error is not None and "cut off" in calls[1].parse_error


def test_arguments_that_are_not_a_json_object_are_a_parse_error() -> None:
    _, calls = run((0, "a", "f", "[1, 2]"), (1, "b", "g", "{oops"), (2, "c", "h", '"s"'))
    assert [c.arguments for c in calls] == [{}, {}, {}]
    assert [c.raw_arguments for c in calls] == ["[1, 2]", "{oops", '"s"']
    errors = [c.parse_error or "" for c in calls]
    assert "array" in errors[0] and "not valid JSON" in errors[1] and "string" in errors[2]


def test_a_call_that_never_got_a_name_is_still_reported() -> None:
    events, calls = run((0, "c1", None, '{"x": 1}'))
    assert events == []
    assert [(c.id, c.name, c.raw_arguments) for c in calls] == [("c1", "", '{"x": 1}')]
    assert calls[0].parse_error is not None and "name" in calls[0].parse_error


def test_a_fragment_with_nothing_in_it_is_not_a_call() -> None:
    assert run((0, None, None, None), (0, "", "", "")) == ([], [])


def test_calls_complete_in_the_order_they_opened_and_finish_forgets_them() -> None:
    assembler = ToolCallAssembler()
    assembler.feed(1, "late-index", "b", "{}")
    assembler.feed(0, "early-index", "a", "{}")
    assert bool(assembler)
    assert [e.call.id for e in assembler.finish()] == ["late-index", "early-index"]
    assert not assembler and assembler.finish() == []


def test_parse_arguments_on_its_own() -> None:
    assert parse_arguments('{"a": [1]}') == ({"a": [1]}, None)
    assert parse_arguments("null", truncated=True) == ({}, None)
    assert parse_arguments("7")[1] == "arguments are a JSON number, not an object"
    # A lone surrogate escape, which orjson refuses: U+FFFD, the rest kept.
    assert parse_arguments('{"q": "a \\ud800", "n": 1}') == ({"q": "a \ufffd", "n": 1}, None)
