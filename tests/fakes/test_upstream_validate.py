"""The fake upstream refuses the histories the real APIs refuse, over real HTTP.

Each case takes a history the API accepts, breaks one rule, and expects a 400 in the
vendor's error shape whose message says what is wrong.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from tests.fakes.upstream import FakeUpstream, Script

Body = dict[str, Any]
Breaker = Callable[[list[dict[str, Any]]], object]


def call(call_id: str, arguments: Any = '{"city": "Paris"}') -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "w", "arguments": arguments}}


OPENAI_OK: Body = {
    "model": "m",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [call("call_a"), call("call_b")]},
        {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "?"}]},
        {"role": "assistant", "content": "Paris 18C."},
        {"role": "user", "content": "Thanks"},
    ],
}


def thinking(text: str = "let me", signature: str = "sig-1") -> dict[str, Any]:
    return {"type": "thinking", "thinking": text, "signature": signature}


def use(use_id: str) -> dict[str, Any]:
    return {"type": "tool_use", "id": use_id, "name": "w", "input": {"city": "Paris"}}


def result(use_id: str, **more: Any) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": use_id, "content": "18C", **more}


TEXT = {"type": "text", "text": "Checking."}
ANTHROPIC_OK: Body = {
    "model": "claude",
    "max_tokens": 100,
    "system": "Be brief.",
    "messages": [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": [
                thinking(),
                {"type": "redacted_thinking", "data": "redacted-1"},
                TEXT,
                use("toolu_a"),
                use("toolu_b"),
            ],
        },
        {
            "role": "user",
            "content": [result("toolu_a"), result("toolu_b", is_error=True), TEXT],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "Paris 18C."}]},
        {"role": "user", "content": [{"type": "text", "text": "Thanks"}]},
    ],
}


@pytest.fixture
async def up() -> AsyncIterator[FakeUpstream]:
    """A fake that has issued one signed thinking block ("let me", sig-1) and
    redacted-1, as the answer the histories here go back to."""
    async with FakeUpstream() as fake:
        fake.enqueue(Script(reasoning=2, redacted=True, text="Checking."))
        first = {"messages": [{"role": "user", "content": "Weather?"}]}
        status, answer = await post(fake, "/v1/messages", first)
        assert status == 200
        assert answer["content"][:2] == [
            thinking(),
            {"type": "redacted_thinking", "data": "redacted-1"},
        ]
        yield fake


async def post(up: FakeUpstream, path: str, body: Body) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(up.root_url + path, json=body) as response,
    ):
        return response.status, await response.json()


def broken(good: Body, breaker: Breaker) -> Body:
    body = copy.deepcopy(good)
    breaker(body["messages"])
    return body


async def test_correct_histories_are_answered(up: FakeUpstream) -> None:
    assert (await post(up, "/v1/chat/completions", OPENAI_OK))[0] == 200
    assert (await post(up, "/v1/messages", ANTHROPIC_OK))[0] == 200
    assert up.rejected == []


OPENAI_BROKEN: dict[str, tuple[Breaker, str]] = {
    "a call unanswered": (
        lambda m: m.pop(4),
        "The following tool_call_ids did not have response messages: call_b",
    ),
    "a user message before the results": (
        lambda m: m.insert(3, {"role": "user", "content": "wait"}),
        "did not have response messages: call_a, call_b",
    ),
    "calls last, with no results": (
        lambda m: m.__delitem__(slice(3, None)),
        "did not have response messages: call_a, call_b",
    ),
    "a result with no calls before it": (
        lambda m: m.insert(2, {"role": "tool", "tool_call_id": "call_a", "content": "x"}),
        "messages with role 'tool' must be a response to a preceding message with 'tool_calls'",
    ),
    "a result for a call never made": (
        lambda m: m[4].update(tool_call_id="call_z"),
        "tool_call_id 'call_z' answers no tool call of the preceding assistant message",
    ),
    "arguments as an object": (
        lambda m: m[2]["tool_calls"][0]["function"].update(arguments={"city": "Paris"}),
        "messages[2].tool_calls[0].function.arguments: expected a string of JSON",
    ),
    "arguments that are not JSON": (
        lambda m: m[2]["tool_calls"][1]["function"].update(arguments='{"city": '),
        "messages[2].tool_calls[1].function.arguments: expected a string of JSON",
    ),
    "null content without calls": (
        lambda m: m[5].update(content=None),
        "messages[5].content: an assistant message without tool_calls needs content",
    ),
    "reasoning sent back": (
        lambda m: m[5].update(reasoning_content="I thought"),
        "messages[5]: reasoning_content must not be sent back in the history",
    ),
    "no messages": (lambda m: m.clear(), "'messages' must be a non-empty array"),
}


@pytest.mark.parametrize("case", OPENAI_BROKEN)
async def test_openai_refuses(up: FakeUpstream, case: str) -> None:
    breaker, message = OPENAI_BROKEN[case]
    body = broken(OPENAI_OK, breaker)
    status, answer = await post(up, "/v1/chat/completions", body)
    assert status == 400
    error = answer["error"]
    assert error["type"] == "invalid_request_error" and message in error["message"]
    assert up.rejected[-1] == (body, error["message"])


ANTHROPIC_BROKEN: dict[str, tuple[Breaker, str]] = {
    "an assistant first": (
        lambda m: m.insert(0, {"role": "assistant", "content": "Hi"}),
        'messages: first message must use the "user" role',
    ),
    "two user turns in a row": (
        lambda m: m.append({"role": "user", "content": "Again"}),
        'roles must alternate between "user" and "assistant", but found multiple "user"',
    ),
    "a system turn": (
        lambda m: m.insert(1, {"role": "system", "content": "x"}),
        "messages.1.role: Input should be 'user' or 'assistant'",
    ),
    "empty content": (
        lambda m: m[3].update(content=""),
        "messages.3: all messages must have non-empty content",
    ),
    "an empty text block": (
        lambda m: m[4]["content"].append({"type": "text", "text": " "}),
        "messages.4.content.1: text content blocks must be non-empty",
    ),
    "a call unanswered": (
        lambda m: m[2]["content"].pop(1),
        "messages.1: `tool_use` ids were found without `tool_result` blocks immediately "
        "after: toolu_b",
    ),
    "calls last, with no results": (
        lambda m: m.__delitem__(slice(2, None)),
        "`tool_use` ids were found without `tool_result` blocks immediately after: "
        "toolu_a, toolu_b",
    ),
    "text before the results": (
        lambda m: m[2]["content"].insert(0, TEXT),
        "messages.2.content.1: tool_result blocks must come first in the user turn",
    ),
    "a result for a call never made": (
        lambda m: m[4]["content"].insert(0, result("toolu_a")),
        "messages.4.content.0: unexpected `tool_use_id` found in `tool_result` blocks: toolu_a",
    ),
    "thinking after text": (
        lambda m: m[1]["content"].insert(3, thinking()),
        "messages.1.content.3: thinking blocks must come first in the assistant turn",
    ),
    "thinking without a signature": (
        lambda m: m[1]["content"][0].pop("signature"),
        "messages.1.content.0.signature: Field required",
    ),
    "thinking edited": (
        lambda m: m[1]["content"].__setitem__(0, thinking("let me see")),
        "messages.1.content.0: Invalid signature in thinking block",
    ),
    "a signature never issued": (
        lambda m: m[1]["content"].__setitem__(0, thinking(signature="sig-9")),
        "messages.1.content.0: Invalid signature in thinking block",
    ),
    "redacted data never issued": (
        lambda m: m[1]["content"][1].update(data="made-up"),
        "messages.1.content.1: Invalid data in redacted_thinking block",
    ),
    "a malformed tool_use id": (
        lambda m: (
            m[1]["content"][3].update(id="call.a"),
            m[2]["content"][0].update(tool_use_id="call.a"),
        ),
        "messages.1.content.3.id: String should match pattern",
    ),
    "a tool_use id used twice": (
        lambda m: m[3].update(content=[use("toolu_a")]),
        "messages.3.content.0: `tool_use` ids must be unique, toolu_a is not",
    ),
}


@pytest.mark.parametrize("case", ANTHROPIC_BROKEN)
async def test_anthropic_refuses(up: FakeUpstream, case: str) -> None:
    breaker, message = ANTHROPIC_BROKEN[case]
    body = broken(ANTHROPIC_OK, breaker)
    status, answer = await post(up, "/v1/messages", body)
    assert status == 400
    assert answer["type"] == "error" and answer["error"]["type"] == "invalid_request_error"
    assert message in answer["error"]["message"]
    assert up.rejected[-1] == (body, answer["error"]["message"])


async def test_with_thinking_on_the_answered_turn_must_start_with_thinking(
    up: FakeUpstream,
) -> None:
    body = copy.deepcopy(ANTHROPIC_OK)
    body["thinking"] = {"type": "enabled", "budget_tokens": 1024}
    body["messages"][2:] = [{"role": "user", "content": [result("toolu_a"), result("toolu_b")]}]
    assert (await post(up, "/v1/messages", body))[0] == 200
    body["messages"][1]["content"] = body["messages"][1]["content"][2:]
    status, answer = await post(up, "/v1/messages", body)
    assert status == 400
    assert answer["error"]["message"].startswith(
        "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `text`"
    )
    del body["thinking"]  # off: no thinking needed
    assert (await post(up, "/v1/messages", body))[0] == 200


async def test_a_refused_request_takes_no_script_and_validation_can_be_turned_off(
    up: FakeUpstream,
) -> None:
    up.enqueue(Script(text="scripted"))
    body = broken(OPENAI_OK, OPENAI_BROKEN["a call unanswered"][0])
    assert (await post(up, "/v1/chat/completions", body))[0] == 400
    up.validate = False
    status, answer = await post(up, "/v1/chat/completions", body)
    assert status == 200 and answer["choices"][0]["message"]["content"] == "scripted"
    assert len(up.rejected) == 1
