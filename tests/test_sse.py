"""The SSE wire format every stream of streamkeep is written in (`streamkeep.sse`)."""

from __future__ import annotations

from streamkeep.llm.sse import SSEDecoder
from streamkeep.sse import DONE, PING, frames, named, numbered_frames


def test_numbered_frames_carry_the_sequence_number_as_sse_id() -> None:
    out = numbered_frames([b'{"type":"start"}', DONE], 7)
    assert out == [b'id: 7\ndata: {"type":"start"}\n\n', b"id: 8\ndata: [DONE]\n\n"]


def test_unnumbered_frames_are_joined() -> None:
    assert frames([b"{}", DONE]) == b"data: {}\n\ndata: [DONE]\n\n"
    assert frames([]) == b""


def test_an_sse_parser_reads_back_the_payloads_and_skips_the_ping() -> None:
    wire = b"".join(numbered_frames([b"{}", b"[1]"], 1)) + PING + frames([b"[2]", DONE])
    events = SSEDecoder().feed(wire)
    # An unnumbered frame keeps the last id, as the SSE standard says.
    assert [(e.id, e.data) for e in events] == [
        ("1", "{}"),
        ("2", "[1]"),
        ("2", "[2]"),
        ("2", "[DONE]"),
    ]


def test_a_named_payload_is_framed_with_its_event_line_first() -> None:
    payload = named(b"message_stop", b'{"type":"message_stop"}')
    assert numbered_frames([payload], 3) == [
        b'id: 3\nevent: message_stop\ndata: {"type":"message_stop"}\n\n'
    ]
    assert frames([payload, b"{}"]) == (
        b'event: message_stop\ndata: {"type":"message_stop"}\n\ndata: {}\n\n'
    )
    (event, plain) = SSEDecoder().feed(frames([payload, b"{}"]))
    assert (event.event, event.data) == ("message_stop", '{"type":"message_stop"}')
    assert (plain.event, plain.data) == (None, "{}")
