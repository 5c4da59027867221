"""Stored message parts (AI SDK UIMessage shapes) <-> the llm library's types.

`completion_to_parts` is what checkpoints and the final write store, typed by the
`UIPart` shapes below; `history_to_messages` turns a stored branch back into the
conversation sent to the model. Parts read back from the database are plain JSON
objects (a damaged row may hold anything), so reading them never trusts those types.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal, NotRequired, Protocol, TypedDict, cast

import orjson

from streamkeep.llm.types import (
    Completion,
    Message,
    ReasoningPart,
    Role,
    TextPart,
    ToolCall,
    ToolCallPart,
)

TOOL_PREFIX = "tool-"
_ANSWERED = ("output-available", "output-error")


class TextUIPart(TypedDict):
    type: Literal["text"]
    text: str


class ReasoningUIPart(TypedDict):
    type: Literal["reasoning"]
    text: str


class ToolUIPart(TypedDict):
    """A tool call: `type` is `tool-<name>`; `state` says how far it got."""

    type: str
    toolCallId: str
    state: Literal["input-available", "output-available", "output-error"]
    input: dict[str, Any]
    output: NotRequired[Any]
    # Arguments that were not valid JSON, as the model sent them.
    rawInput: NotRequired[str]
    errorText: NotRequired[str]


UIPart = TextUIPart | ReasoningUIPart | ToolUIPart


class StoredMessage(Protocol):
    """What prompt building needs of a stored message (the store's MessageRecord)."""

    @property
    def role(self) -> Role: ...

    @property
    def parts(self) -> list[dict[str, Any]]: ...


def storable(text: str) -> str:
    """Model output as the databases can keep it: PostgreSQL refuses U+0000, which a
    model can emit; it becomes U+FFFD (the replacement character) in what is stored."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def as_json(parts: list[UIPart]) -> list[dict[str, Any]]:
    """Parts as the store takes them: JSON objects (a TypedDict is one, by type only)."""
    return cast(list[dict[str, Any]], parts)


def completion_to_parts(completion: Completion) -> list[UIPart]:
    parts: list[UIPart] = []
    for part in completion.parts:
        if isinstance(part, TextPart):
            if part.text:
                parts.append({"type": "text", "text": storable(part.text)})
        elif isinstance(part, ReasoningPart):
            if part.text:
                parts.append({"type": "reasoning", "text": storable(part.text)})
        elif isinstance(part, ToolCallPart):
            parts.append(_tool_part(part.call))
    return parts


def _tool_part(call: ToolCall) -> ToolUIPart:
    if call.parse_error is not None:
        return {
            "type": TOOL_PREFIX + call.name,
            "toolCallId": call.id,
            "state": "output-error",
            "input": call.arguments,
            "rawInput": storable(call.raw_arguments),
            "errorText": call.parse_error,
        }
    return {
        "type": TOOL_PREFIX + call.name,
        "toolCallId": call.id,
        "state": "input-available",
        "input": call.arguments,
    }


def text_of(parts: Iterable[dict[str, Any]]) -> str:
    return "".join(str(p.get("text", "")) for p in parts if p.get("type") == "text")


def history_to_messages(system: str | None, history: Sequence[StoredMessage]) -> list[Message]:
    """The conversation for the model: system prompt, then each stored message.

    A tool call goes to the model only together with its result: a call without an
    answer (the user never ran it) would make OpenAI-style APIs reject the request.
    """
    messages: list[Message] = []
    if system:
        messages.append(Message(role="system", content=system))
    for record in history:
        if record.role == "system":
            messages.append(Message(role="system", content=text_of(record.parts)))
        elif record.role == "user":
            messages.append(Message(role="user", content=text_of(record.parts)))
        elif record.role == "assistant":
            messages.extend(_assistant_messages(record.parts))
        elif record.role == "tool":
            messages.extend(_tool_results(record.parts))
    return messages


def _assistant_messages(parts: list[dict[str, Any]]) -> list[Message]:
    answered = [p for p in parts if _is_tool(p) and p.get("state") in _ANSWERED]
    content = text_of(parts)
    if not content and not answered:
        return []  # e.g. stopped before the first token: nothing to show the model
    calls = [
        ToolCall(id=str(p.get("toolCallId", "")), name=_tool_name(p), arguments=_input(p))
        for p in answered
    ]
    return [Message(role="assistant", content=content, tool_calls=calls), *_tool_results(answered)]


def _tool_results(parts: list[dict[str, Any]]) -> list[Message]:
    results: list[Message] = []
    for p in parts:
        if not _is_tool(p) or p.get("state") not in _ANSWERED:
            continue
        if p["state"] == "output-error":
            content = f"Error: {p.get('errorText', '')}"
        else:
            output = p.get("output")
            content = output if isinstance(output, str) else orjson.dumps(output).decode()
        results.append(
            Message(
                role="tool",
                content=content,
                tool_call_id=str(p.get("toolCallId", "")),
                name=_tool_name(p),
            )
        )
    return results


def _is_tool(part: dict[str, Any]) -> bool:
    return str(part.get("type", "")).startswith(TOOL_PREFIX)


def _tool_name(part: dict[str, Any]) -> str:
    return str(part["type"])[len(TOOL_PREFIX) :]


def _input(part: dict[str, Any]) -> dict[str, Any]:
    value = part.get("input")
    return value if isinstance(value, dict) else {}
