"""Anthropic's thinking blocks: read with their signatures, and redacted ones kept whole."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from streamkeep.llm.accumulator import Accumulator
from streamkeep.llm.anthropic import AnthropicProvider, AnthropicStreamParser
from streamkeep.llm.events import (
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    StreamEvent,
    TextDelta,
)
from streamkeep.llm.provider import complete
from streamkeep.llm.types import ChatRequest, Completion, Message, ReasoningPart, TextPart
from tests.fakes.upstream import FakeUpstream, Script

TRANSCRIPTS = Path(__file__).parent / "transcripts"
SIGNATURE = (
    "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds2bR2zqBVA1TnnQ0CiHIQHOrwp6gJ5aRhBUn"
    "R1ETyNpa2qbE1lRF3xQPTlCe8qOsqzQ"
)


def parse(body: bytes, piece: int | None = None) -> list[StreamEvent]:
    parser = AnthropicStreamParser()
    step = piece or len(body)
    out: list[StreamEvent] = []
    for i in range(0, len(body), step):
        out += parser.feed(body[i : i + step])
    return out + parser.close()


def fold(events: list[StreamEvent]) -> Completion:
    acc = Accumulator()
    for event in events:
        acc.add(event)
    return acc.result()


def sse(payload: dict[str, object]) -> bytes:
    return b"event: %b\ndata: %b\n\n" % (str(payload["type"]).encode(), orjson.dumps(payload))


def body(*blocks: tuple[dict[str, object], list[dict[str, object]]]) -> bytes:
    """A whole message: each block's start, its deltas and its stop."""
    out = [sse({"type": "message_start", "message": {"id": "msg_1", "model": "claude"}})]
    for index, (start, deltas) in enumerate(blocks):
        out.append(sse({"type": "content_block_start", "index": index, "content_block": start}))
        for delta in deltas:
            out.append(sse({"type": "content_block_delta", "index": index, "delta": delta}))
        out.append(sse({"type": "content_block_stop", "index": index}))
    out.append(sse({"type": "message_delta", "delta": {"stop_reason": "end_turn"}}))
    out.append(sse({"type": "message_stop"}))
    return b"".join(out)


def thinking(text: str) -> dict[str, object]:
    return {"type": "thinking_delta", "thinking": text}


def signed(signature: str) -> dict[str, object]:
    return {"type": "signature_delta", "signature": signature}


TEXT = ({"type": "text", "text": ""}, [{"type": "text_delta", "text": "Done."}])
OPEN = {"type": "thinking", "thinking": "", "signature": ""}  # as the API starts a block


@pytest.mark.parametrize("piece", [None, 1, 7])
def test_the_recorded_signature_signs_the_thinking_before_it(piece: int | None) -> None:
    events = parse((TRANSCRIPTS / "anthropic_thinking.sse").read_bytes(), piece)
    kinds = [type(e) for e in events if type(e) in (ReasoningDelta, ReasoningSignature, TextDelta)]
    last_thought = max(i for i, kind in enumerate(kinds) if kind is ReasoningDelta)
    assert kinds[last_thought + 1] is ReasoningSignature
    assert kinds[last_thought + 2 :] == [TextDelta] * (len(kinds) - last_thought - 2)
    [block, answer] = fold(events).parts
    assert block == ReasoningPart(
        "The user asks for 27 * 453.\n27 * 453 = 12231.", signature=SIGNATURE
    )
    assert isinstance(answer, TextPart)


def test_two_thinking_blocks_stay_two_signed_parts() -> None:
    events = parse(
        body(
            (
                {"type": "thinking", "thinking": "", "signature": ""},
                [thinking("one"), signed("s1")],
            ),
            ({"type": "thinking", "thinking": ""}, [thinking("two"), signed("s2")]),
            TEXT,
        )
    )
    assert fold(events).parts == [
        ReasoningPart("one", signature="s1"),
        ReasoningPart("two", signature="s2"),
        TextPart("Done."),
    ]


def test_a_block_given_whole_at_its_start_is_signed_at_its_stop() -> None:
    whole = {"type": "thinking", "thinking": "all at once", "signature": "whole-sig"}
    events = parse(body((whole, []), TEXT))
    assert events[:2] == [ReasoningDelta("all at once"), ReasoningSignature("whole-sig")]
    assert fold(events).parts[0] == ReasoningPart("all at once", signature="whole-sig")


def test_a_signature_delta_replaces_the_one_given_at_the_start() -> None:
    start = {"type": "thinking", "thinking": "", "signature": "early"}
    events = parse(body((start, [thinking("hm"), signed("late")])))
    assert [e for e in events if isinstance(e, ReasoningSignature)] == [ReasoningSignature("late")]


def test_a_signed_block_with_no_text_is_kept() -> None:
    events = parse(body((OPEN, [signed("only-sig")]), TEXT))
    assert fold(events).parts == [ReasoningPart("", signature="only-sig"), TextPart("Done.")]


def test_a_redacted_block_is_kept_verbatim_between_the_others() -> None:
    events = parse(
        body(
            ({"type": "thinking", "thinking": ""}, [thinking("visible"), signed("s1")]),
            ({"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3p=="}, []),
            ({"type": "redacted_thinking", "data": ""}, []),  # nothing to send back: dropped
            TEXT,
        )
    )
    assert RedactedReasoning("EmwKAhgBEgy3va3p==") in events
    completion = fold(events)
    assert completion.parts == [
        ReasoningPart("visible", signature="s1"),
        ReasoningPart("", redacted="EmwKAhgBEgy3va3p=="),
        TextPart("Done."),
    ]
    assert completion.reasoning == "visible"


async def test_the_fakes_thinking_arrives_signed_and_redacted(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Script(reasoning=3, redacted=True, text="Hi there."))
    provider = AnthropicProvider("anthropic", fake_upstream.root_url)
    try:
        request = ChatRequest(model="claude", messages=[Message("user", "hello")])
        completion = await complete(provider, request)
    finally:
        await provider.aclose()
    assert completion.parts == [
        ReasoningPart("let me think", signature="sig-1"),
        ReasoningPart("", redacted="redacted-1"),
        TextPart("Hi there."),
    ]
    assert fake_upstream.signatures == {"sig-1": "let me think"}
    assert fake_upstream.redactions == {"redacted-1"}
    assert completion.as_message() == Message(
        "assistant",
        "Hi there.",
        reasoning="let me think",
        thinking=[
            ReasoningPart("let me think", signature="sig-1"),
            ReasoningPart("", redacted="redacted-1"),
        ],
    )
