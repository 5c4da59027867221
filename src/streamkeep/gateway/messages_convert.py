"""A `POST /v1/messages` body -> what the provider is asked, and what the store keeps.

The provider gets the conversation as the client sent it, thinking blocks (with their
signatures, and redacted ones) included: an Anthropic provider takes them back
verbatim. A user turn's `tool_result` blocks become tool messages, before its text.

The store keeps the call like a Chat Completions one: `as_completion_body` restates the
messages in OpenAI's shape so `gateway.keep` places them (new chat, or the continued
one's missing messages) by the same rules.
"""

from __future__ import annotations

import orjson

from streamkeep.gateway.messages_schema import (
    MessageIn,
    MessagesBody,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    openai_tool_choice,
)
from streamkeep.gateway.schemas import (
    ChatCompletionBody,
    ChatMessageIn,
    FunctionCallIn,
    ToolCallIn,
)
from streamkeep.llm.types import ChatRequest, Message, ReasoningPart, ToolCall, ToolSpec


def to_chat_request(body: MessagesBody, model_name: str) -> ChatRequest:
    """The provider request; `model_name` is the provider's own name (no prefix)."""
    messages = [] if body.system_text is None else [Message("system", body.system_text)]
    names = {b.id: b.name for m in body.messages for b in m.content if isinstance(b, ToolUseBlock)}
    for msg in body.messages:
        messages += _assistant(msg) if msg.role == "assistant" else _user(msg, names)
    return ChatRequest(
        model=model_name,
        messages=messages,
        tools=[
            ToolSpec(name=t.name, description=t.description, parameters=t.input_schema)
            for t in body.tools or []
        ],
        tool_choice=openai_tool_choice(body.tool_choice),
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=body.stop_sequences,
        user=body.metadata.user_id if body.metadata is not None else None,
    )


def _text(msg: MessageIn) -> str:
    return "".join(b.text for b in msg.content if isinstance(b, TextBlock))


def _user(msg: MessageIn, names: dict[str, str]) -> list[Message]:
    out = [
        Message(
            "tool",
            b.content,
            tool_call_id=b.tool_use_id,
            name=names.get(b.tool_use_id),
            is_error=b.is_error,
        )
        for b in msg.content
        if isinstance(b, ToolResultBlock)
    ]
    if not out or any(isinstance(b, TextBlock) for b in msg.content):
        out.append(Message("user", _text(msg)))
    return out


def _assistant(msg: MessageIn) -> list[Message]:
    thinking: list[ReasoningPart] = []
    for b in msg.content:
        if isinstance(b, ThinkingBlock):
            thinking.append(ReasoningPart(b.thinking, signature=b.signature))
        elif isinstance(b, RedactedThinkingBlock):
            thinking.append(ReasoningPart("", redacted=b.data))
    calls = [
        ToolCall(b.id, b.name, b.input, raw_arguments=orjson.dumps(b.input).decode())
        for b in msg.content
        if isinstance(b, ToolUseBlock)
    ]
    reasoning = "".join(p.text for p in thinking)
    return [Message("assistant", _text(msg), reasoning, calls, thinking=thinking)]


def as_completion_body(body: MessagesBody) -> ChatCompletionBody:
    """The same call in Chat Completions' shape, for `gateway.keep` to place and store."""
    messages = [] if body.system_text is None else [_in("system", body.system_text)]
    for msg in body.messages:
        if msg.role == "user":
            results = [
                _in("tool", b.content, tool_call_id=b.tool_use_id)
                for b in msg.content
                if isinstance(b, ToolResultBlock)
            ]
            messages += results
            if not results or any(isinstance(b, TextBlock) for b in msg.content):
                messages.append(_in("user", _text(msg)))  # as `to_chat_request` sends it
            continue
        calls = [
            ToolCallIn(
                id=b.id,
                function=FunctionCallIn(name=b.name, arguments=orjson.dumps(b.input).decode()),
            )
            for b in msg.content
            if isinstance(b, ToolUseBlock)
        ]
        reasoning = "".join(b.thinking for b in msg.content if isinstance(b, ThinkingBlock))
        messages.append(
            ChatMessageIn(
                role="assistant",
                content=_text(msg),
                tool_calls=calls or None,
                reasoning_content=reasoning or None,
            )
        )
    return ChatCompletionBody(model=body.model, messages=messages, stream=body.stream)


def _in(role: str, content: str, tool_call_id: str | None = None) -> ChatMessageIn:
    return ChatMessageIn.model_validate(
        {"role": role, "content": content, "tool_call_id": tool_call_id}
    )
