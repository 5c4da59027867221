"""A `POST /v1/responses` body -> the same call in Chat Completions' shape.

The gateway keeps and sends a Responses call the way it does a Chat Completions one
(`gateway.keep`, `gateway.convert`), so the body is restated: `instructions` is a
leading system message, each message item a message, `function_call` items the
`tool_calls` of the assistant message before them (a new one if there is none), and
each `function_call_output` a tool message. `reasoning` items are left out: their text
is the provider's own, and OpenAI-compatible providers take no reasoning back.
"""

from __future__ import annotations

from collections.abc import Set
from typing import Any

from streamkeep.gateway.errors import invalid_request
from streamkeep.gateway.responses_schema import (
    FunctionCallItem,
    FunctionCallOutputItem,
    MessageItem,
    ResponsesBody,
)
from streamkeep.gateway.schemas import (
    ChatCompletionBody,
    ChatMessageIn,
    FunctionCallIn,
    FunctionDef,
    ToolCallIn,
    ToolIn,
)
from streamkeep.text import JSONValue


def as_completion_body(
    body: ResponsesBody, *, with_instructions: bool = True, earlier_calls: Set[str] = frozenset()
) -> ChatCompletionBody:
    """The call as a Chat Completions body (`instructions` first when asked); a 400 when
    it has nothing to answer (only system messages or reasoning items), or when a
    `function_call_output` answers no call of its input or of `earlier_calls` (the
    previous responses')."""
    calls = set(earlier_calls)
    messages: list[dict[str, Any]] = []
    if with_instructions and body.instructions is not None:
        messages.append({"role": "system", "content": body.instructions})
    for i, item in enumerate(body.input):
        if isinstance(item, MessageItem):
            role = "system" if item.role == "developer" else item.role
            content: Any = item.content
            if item.image_urls:  # as Chat Completions' image_url parts
                images = [{"type": "image_url", "image_url": {"url": u}} for u in item.image_urls]
                content = [{"type": "text", "text": item.content}, *images]
            messages.append({"role": role, "content": content})
        elif isinstance(item, FunctionCallItem):
            calls.add(item.call_id)
            call = ToolCallIn(
                id=item.call_id, function=FunctionCallIn(name=item.name, arguments=item.arguments)
            )
            last = messages[-1] if messages else None
            if last is None or last["role"] != "assistant":
                last = {"role": "assistant", "content": None, "tool_calls": []}
                messages.append(last)
            last.setdefault("tool_calls", []).append(call)
        elif isinstance(item, FunctionCallOutputItem):
            if item.call_id not in calls:
                raise invalid_request(
                    f"No function call found for 'input[{i}].call_id' {item.call_id!r}: a "
                    "function_call_output answers a function_call of the input or of the "
                    "previous response.",
                    f"input[{i}].call_id",
                )
            messages.append({"role": "tool", "content": item.output, "tool_call_id": item.call_id})
    if not any(m["role"] != "system" for m in messages):
        raise invalid_request("'input' has no message or function_call_output to answer.", "input")
    return ChatCompletionBody(
        model=body.model,
        messages=[ChatMessageIn.model_validate(_plain(m)) for m in messages],
        stream=body.stream,
        tools=[
            ToolIn(
                function=FunctionDef(
                    name=t.name,
                    description=t.description or "",
                    parameters=t.parameters,
                    strict=t.strict,
                )
            )
            for t in body.tools
        ]
        if body.tools
        else None,
        tool_choice=chat_tool_choice(body.tool_choice),
        parallel_tool_calls=body.parallel_tool_calls,
        max_completion_tokens=body.max_output_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        user=body.user,
    )


def _plain(message: dict[str, Any]) -> dict[str, Any]:
    calls = message.get("tool_calls")
    if calls:
        return {**message, "tool_calls": [c.model_dump() for c in calls]}
    return message


def chat_tool_choice(choice: JSONValue) -> JSONValue:
    """Responses' `{"type": "function", "name": N}` in Chat Completions' words."""
    if isinstance(choice, dict):
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice
