"""Request messages -> the provider's messages, the stored parts, and what a continued
chat still lacks."""

from __future__ import annotations

from typing import Any

from streamkeep.gateway.convert import (
    new_messages,
    split_system,
    stored_signature,
    to_chat_request,
    to_stored,
)
from streamkeep.gateway.schemas import ChatCompletionBody, ChatMessageIn

CALL = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"q": 1}'}}


def msgs(*raw: dict[str, Any]) -> list[ChatMessageIn]:
    return [ChatMessageIn.model_validate(m) for m in raw]


CONVERSATION = msgs(
    {"role": "developer", "content": "be brief"},
    {"role": "user", "content": "weather?"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
)


def test_provider_request_keeps_the_conversation_and_parameters() -> None:
    body = ChatCompletionBody.model_validate(
        {
            "model": "fake/m",
            "messages": [m.model_dump() for m in CONVERSATION],
            "max_tokens": 9,
            "max_completion_tokens": 5,
            "parallel_tool_calls": False,
        }
    )
    request = to_chat_request(body, "m")
    assert [m.role for m in request.messages] == ["system", "user", "assistant", "tool"]
    call = request.messages[2].tool_calls[0]
    assert (call.id, call.name, call.arguments, call.raw_arguments) == (
        "c1",
        "weather",
        {"q": 1},
        '{"q": 1}',
    )
    assert request.messages[3].name == "weather"  # named from the call it answers
    assert request.max_tokens == 5  # max_completion_tokens wins
    # Only an OpenAI-compatible provider is sent these (Anthropic would refuse them).
    assert request.openai_extra == {"parallel_tool_calls": False}
    assert request.extra == {}


def test_stored_shapes() -> None:
    system, rest = split_system(CONVERSATION)
    assert system == "be brief"
    stored = to_stored(rest, CONVERSATION)
    assert [(m.role, m.parts) for m in stored] == [
        ("user", [{"type": "text", "text": "weather?"}]),
        (
            "assistant",
            [
                {
                    "type": "tool-weather",
                    "toolCallId": "c1",
                    "state": "input-available",
                    "input": {"q": 1},
                }
            ],
        ),
        (
            "tool",
            [
                {
                    "type": "tool-weather",
                    "toolCallId": "c1",
                    "state": "output-available",
                    "input": {"q": 1},
                    "output": "sunny",
                }
            ],
        ),
    ]


def test_a_stored_prefix_leaves_only_the_new_messages() -> None:
    _, rest = split_system(CONVERSATION)
    stored = [stored_signature(m.role, m.parts) for m in to_stored(rest[:2], CONVERSATION)]
    assert new_messages(rest, stored) == rest[2:]


def test_rewritten_history_leaves_the_trailing_turn() -> None:
    request = msgs(
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "changed by the client"},
        {"role": "user", "content": "b"},
        {"role": "user", "content": "c"},
    )
    stored = [("user", "a", ()), ("assistant", "original", ())]
    assert [m.content for m in new_messages(request, stored)] == ["b", "c"]
    # Nothing new at all (the client resent the same conversation): nothing is added.
    assert (
        new_messages(request[:2], [("user", "a", ()), ("assistant", "changed by the client", ())])
        == []
    )
