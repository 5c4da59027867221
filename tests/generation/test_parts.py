"""Stored parts from a completion, and the prompt rebuilt from stored parts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamkeep.generation.parts import completion_to_parts, history_to_messages
from streamkeep.llm.types import (
    Completion,
    ReasoningPart,
    Role,
    TextPart,
    ToolCall,
    ToolCallPart,
)


@dataclass
class Stored:
    role: Role
    parts: list[dict[str, Any]]


def test_completion_to_parts_keeps_order_and_shapes() -> None:
    completion = Completion(
        parts=[
            ReasoningPart("think"),
            TextPart("Let me search."),
            ToolCallPart(ToolCall(id="c1", name="search", arguments={"q": "x"})),
            ToolCallPart(
                ToolCall(id="c2", name="calc", arguments={}, raw_arguments="{", parse_error="bad")
            ),
            TextPart(""),
        ]
    )
    assert completion_to_parts(completion) == [
        {"type": "reasoning", "text": "think"},
        {"type": "text", "text": "Let me search."},
        {
            "type": "tool-search",
            "toolCallId": "c1",
            "state": "input-available",
            "input": {"q": "x"},
        },
        {
            "type": "tool-calc",
            "toolCallId": "c2",
            "state": "output-error",
            "input": {},
            "rawInput": "{",
            "errorText": "bad",
        },
    ]


def test_history_to_messages() -> None:
    history = [
        Stored("user", [{"type": "text", "text": "hi"}]),
        Stored("assistant", [{"type": "reasoning", "text": "r"}, {"type": "text", "text": "yo"}]),
        Stored("user", [{"type": "text", "text": "find x"}]),
        Stored(
            "assistant",
            [
                {"type": "tool-search", "toolCallId": "a", "state": "input-available", "input": {}},
                {
                    "type": "tool-search",
                    "toolCallId": "b",
                    "state": "output-available",
                    "input": {"q": "x"},
                    "output": {"hits": 1},
                },
            ],
        ),
        Stored("assistant", []),  # stopped before its first token
    ]
    messages = history_to_messages("be brief", history)
    assert [(m.role, m.content) for m in messages] == [
        ("system", "be brief"),
        ("user", "hi"),
        ("assistant", "yo"),
        ("user", "find x"),
        ("assistant", ""),
        ("tool", '{"hits":1}'),
    ]
    call = messages[4].tool_calls
    assert [(c.id, c.name, c.arguments) for c in call] == [("b", "search", {"q": "x"})]
    assert messages[5].tool_call_id == "b" and messages[5].name == "search"
