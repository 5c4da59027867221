"""The SSE decoder, rule by rule (WHATWG HTML, "Parsing an event stream")."""

from __future__ import annotations

import pytest

from streamkeep.llm.sse import SSEDecoder, SSEEvent


def decode(*chunks: bytes) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events + decoder.flush()


def datas(*chunks: bytes) -> list[str]:
    return [e.data for e in decode(*chunks)]


def test_an_empty_line_dispatches_the_event() -> None:
    assert decode(b"data: one\n\ndata: two\n\n") == [SSEEvent("one"), SSEEvent("two")]


@pytest.mark.parametrize("ending", [b"\r\n", b"\n", b"\r"])
def test_lines_may_end_with_crlf_lf_or_cr(ending: bytes) -> None:
    body = b"event: note" + ending + b"data: a" + ending + b"data: b" + ending + ending
    assert decode(body) == [SSEEvent("a\nb", event="note")]


def test_mixed_line_endings_in_one_stream() -> None:
    assert datas(b"data: a\r\n\rdata: b\n\r\ndata: c\r\r") == ["a", "b", "c"]


def test_a_cr_at_the_end_of_one_read_and_lf_at_the_start_of_the_next_are_one_ending() -> None:
    # Were they two line endings, "data: a" would be dispatched early, then "b" alone.
    assert datas(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n") == ["a\nb"]


def test_a_lone_cr_at_the_end_of_a_read_still_ends_the_line() -> None:
    assert datas(b"data: a\r", b"\r") == ["a"]


def test_comment_lines_are_ignored() -> None:
    body = b": keep-alive\n\n: OPENROUTER PROCESSING\n\ndata: x\n: inside\ndata: y\n\n"
    assert datas(body) == ["x\ny"]


def test_a_block_without_data_dispatches_nothing() -> None:
    assert decode(b"event: ping\n\nid: 7\n\n\n\n") == []


def test_multi_line_data_is_joined_with_lf() -> None:
    assert datas(b'data: {"a":\ndata: 1}\n\n') == ['{"a":\n1}']


def test_only_one_space_after_the_colon_is_stripped() -> None:
    assert datas(b"data:no-space\n\ndata:  two-spaces\n\ndata:\ttab\n\n") == [
        "no-space",
        " two-spaces",
        "\ttab",
    ]


def test_a_field_without_colon_has_an_empty_value() -> None:
    # `data` alone adds an empty line: the event is dispatched with data "".
    assert datas(b"data\n\n") == [""]
    assert datas(b"data\ndata\n\n") == ["\n"]


def test_the_value_keeps_later_colons() -> None:
    assert datas(b"data: a: b :c\n\n") == ["a: b :c"]


def test_event_type_applies_to_its_own_event_only() -> None:
    events = decode(b"event: error\ndata: boom\n\ndata: fine\n\n")
    assert [(e.event, e.data) for e in events] == [("error", "boom"), (None, "fine")]


def test_the_last_event_id_stays_in_force_until_changed_or_cleared() -> None:
    body = b"id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\nid\ndata: d\n\n"
    assert [(e.id, e.data) for e in decode(body)] == [
        ("1", "a"),
        ("1", "b"),
        ("2", "c"),
        (None, "d"),
    ]


def test_an_id_containing_nul_is_ignored() -> None:
    assert [e.id for e in decode(b"id: 5\n\nid: x\0y\ndata: a\n\n")] == ["5"]


def test_field_names_are_case_sensitive_and_unknown_fields_are_ignored() -> None:
    assert datas(b"Data: no\nretry: 100\nfoo: bar\ndata: yes\n\n") == ["yes"]


def test_a_leading_byte_order_mark_is_dropped_even_when_split() -> None:
    assert datas(b"\xef\xbb", b"\xbfdata: a\n\n") == ["a"]
    # Only at the very start: later it is content.
    assert datas(b"data: a\n\n\xef\xbb\xbfdata: b\n\n") == ["a"]


def test_an_unterminated_event_at_the_end_of_the_body_is_discarded() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: done\n\ndata: partial\n") == [SSEEvent("done")]
    assert decoder.flush() == []


def test_invalid_utf8_becomes_replacement_characters() -> None:
    assert datas(b"data: a\xffb\n\n") == ["a\ufffdb"]


def test_an_event_split_at_every_byte_decodes_the_same() -> None:
    body = (
        "id: 9\r\nevent: msg\r\ndata: Grüße 東京 👋🏽\r\n: note\r\ndata: second\r\n\r\n"
        'data: {"x": "ü"}\n\n'
    ).encode()
    whole = decode(body)
    assert whole == [
        SSEEvent("Grüße 東京 👋🏽\nsecond", "msg", "9"),
        SSEEvent('{"x": "ü"}', None, "9"),
    ]
    for cut in range(1, len(body)):
        assert decode(body[:cut], body[cut:]) == whole, cut
    assert decode(*(body[i : i + 1] for i in range(len(body)))) == whole


def test_many_events_in_one_read_and_one_event_in_many_reads() -> None:
    many = b"".join(b"data: %d\n\n" % i for i in range(100))
    assert datas(many) == [str(i) for i in range(100)]
    big = b"data: " + b"x" * 100_000 + b"\n\n"
    assert datas(*(big[i : i + 1000] for i in range(0, len(big), 1000))) == ["x" * 100_000]
