"""A tool loop's history on both wire formats: the bodies we send, and that an API that
checks histories as the real ones do (the fake) takes them, step after step."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from streamkeep.llm import anthropic, openai
from streamkeep.llm.anthropic import AnthropicProvider
from streamkeep.llm.errors import ProviderHTTPError
from streamkeep.llm.openai import OpenAIProvider
from streamkeep.llm.provider import Provider, complete
from streamkeep.llm.transport import RetryPolicy
from streamkeep.llm.types import (
    ChatRequest,
    Completion,
    Message,
    ReasoningPart,
    ToolCall,
    ToolSpec,
)
from tests.fakes.upstream import FakeUpstream, Script

PARIS = ToolCall("call_a", "get_weather", {"city": "Paris"}, raw_arguments='{"city": "Paris"}')
OSLO = ToolCall("call_b", "get_weather", {"city": "Oslo"}, raw_arguments='{"city":"Oslo"}')
THINKING = [
    ReasoningPart("Two cities: two calls.", signature="sig-1"),
    ReasoningPart("", redacted="redacted-1"),
    ReasoningPart("another vendor's reasoning"),  # unsigned: Anthropic would refuse it
]
# assistant(text + 2 calls) -> 2 tool results (one an error) -> assistant(text) -> user
HISTORY = [
    Message("system", "Be brief."),
    Message("user", "Weather in Paris and Oslo?"),
    Message(
        "assistant",
        "Let me check.",
        reasoning="Two cities: two calls.another vendor's reasoning",
        tool_calls=[PARIS, OSLO],
        thinking=THINKING,
    ),
    Message("tool", "18C and sunny", tool_call_id="call_a", name="get_weather"),
    Message("tool", "no station in Oslo", tool_call_id="call_b", is_error=True),
    Message("assistant", "Paris: 18C. Oslo: unknown.", reasoning="Sum it up."),
    Message("user", "And tomorrow?"),
]
TOOLS = [ToolSpec("get_weather", "The weather in a city", {"type": "object"})]


def test_the_anthropic_body_sends_signed_thinking_first_and_results_with_errors() -> None:
    body = anthropic.request_body(ChatRequest(model="claude", messages=HISTORY))
    assert body["system"] == "Be brief."
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Oslo?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Two cities: two calls.", "signature": "sig-1"},
                {"type": "redacted_thinking", "data": "redacted-1"},
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "call_a",
                    "name": "get_weather",
                    "input": PARIS.arguments,
                },
                {
                    "type": "tool_use",
                    "id": "call_b",
                    "name": "get_weather",
                    "input": OSLO.arguments,
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_a", "content": "18C and sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "call_b",
                    "content": "no station in Oslo",
                    "is_error": True,
                },
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "Paris: 18C. Oslo: unknown."}]},
        {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]},
    ]


def test_the_openai_body_sends_calls_and_results_but_no_reasoning() -> None:
    body = openai.request_body(ChatRequest(model="gpt", messages=HISTORY))
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "18C and sunny"},
        {"role": "tool", "tool_call_id": "call_b", "content": "no station in Oslo"},
        {"role": "assistant", "content": "Paris: 18C. Oslo: unknown."},
        {"role": "user", "content": "And tomorrow?"},
    ]


def test_blank_or_null_arguments_go_to_openai_as_an_empty_object() -> None:
    calls = [
        ToolCall("c1", "now", {}, raw_arguments=""),
        ToolCall("c2", "now", {}, raw_arguments=" null "),
        ToolCall("c3", "now", {}, raw_arguments='{"a', parse_error="cut off"),
    ]
    messages = [Message("user", "time?"), Message("assistant", tool_calls=calls)]
    [_, sent] = openai.request_body(ChatRequest(model="m", messages=messages))["messages"]
    assert sent["content"] == ""  # llama-cpp-python's server refuses null
    assert [c["function"]["arguments"] for c in sent["tool_calls"]] == ["{}", "{}", "{}"]


def test_anthropic_gets_results_first_in_their_turn_and_ids_it_accepts() -> None:
    messages = [
        Message("user", "Go."),
        Message("assistant", tool_calls=[ToolCall("fc.1/x", "f", {}), ToolCall("c2", "g", {})]),
        Message("user", "   "),  # only whitespace: the API refuses such a text block
        Message("user", "Also this."),
        Message("tool", "", tool_call_id="fc.1/x"),
        Message("tool", "two", tool_call_id="c2"),
    ]
    sent = anthropic.request_body(ChatRequest(model="claude", messages=messages))["messages"]
    assert [b["id"] for b in sent[1]["content"]] == ["fc_1_x", "c2"]
    assert sent[2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "fc_1_x"},  # empty: no content at all
            {"type": "tool_result", "tool_use_id": "c2", "content": "two"},
            {"type": "text", "text": "Also this."},
        ],
    }


# -- the loop, against the fake ----------------------------------------------------------


@pytest.fixture(params=["openai", "anthropic"])
async def provider(
    request: pytest.FixtureRequest, fake_upstream: FakeUpstream
) -> AsyncIterator[Provider]:
    no_retry = RetryPolicy(max_retries=0)
    p: Provider
    if request.param == "openai":
        p = OpenAIProvider("openai", fake_upstream.base_url, retry=no_retry)
    else:
        p = AnthropicProvider("anthropic", fake_upstream.root_url, retry=no_retry)
    yield p
    await p.aclose()


def ask(messages: list[Message], provider: Provider | None = None) -> ChatRequest:
    """The request; with thinking on for Anthropic, which then wants it back first."""
    thinking = {"type": "enabled", "budget_tokens": 1024}
    extra = {"thinking": thinking} if isinstance(provider, AnthropicProvider) else {}
    return ChatRequest(model="fake", messages=messages, tools=TOOLS, extra=extra)


def results_for(answer: Completion, error: bool = False) -> list[Message]:
    return [
        Message("tool", f"weather {c.arguments.get('city')}", tool_call_id=c.id, is_error=error)
        for c in answer.tool_calls
    ]


async def test_a_two_step_tool_loop_is_accepted_step_after_step(
    fake_upstream: FakeUpstream, provider: Provider
) -> None:
    paris, oslo = '{"city": "Paris"}', '{"city": "Oslo"}'
    fake_upstream.enqueue(
        Script(reasoning=4, redacted=True, text="Checking both.", calls=[("w", paris), ("w", oslo)])
    )
    fake_upstream.enqueue(Script(reasoning=2, text="One more.", calls=[("w", paris)]))
    history = [Message("system", "Be brief."), Message("user", "Weather?")]
    first = await complete(provider, ask(history, provider))
    assert [c.arguments["city"] for c in first.tool_calls] == ["Paris", "Oslo"]
    history += [first.as_message(), *results_for(first)]
    second = await complete(provider, ask(history, provider))
    assert second.error is None and second.text == "One more."
    history += [second.as_message(), *results_for(second, error=True)]
    third = await complete(provider, ask(history, provider))  # the tool results, echoed
    assert third.error is None
    assert third.text == "Tool results: weather Paris"
    history += [third.as_message(), Message("user", "Thanks!")]
    fourth = await complete(provider, ask(history, provider))
    assert fourth.text == "Hello! You said: Thanks!"
    assert fake_upstream.rejected == []
    assert len(fake_upstream.requests) == 4


async def test_an_unanswered_call_is_refused_in_the_vendors_words(
    fake_upstream: FakeUpstream, provider: Provider
) -> None:
    fake_upstream.enqueue(Script(calls=[("w", "{}"), ("w", "{}")]))
    history = [Message("user", "Weather?")]
    first = await complete(provider, ask(history))
    history += [first.as_message(), *results_for(first)[:1]]
    refused = await complete(provider, ask(history))
    assert refused.finish_reason == "error" and refused.error is not None
    [rejection] = fake_upstream.rejected
    assert first.tool_calls[1].id in rejection.message
    assert rejection.message in refused.error


async def test_thinking_changed_on_the_way_back_is_refused(
    fake_upstream: FakeUpstream,
) -> None:
    provider = AnthropicProvider(
        "anthropic", fake_upstream.root_url, retry=RetryPolicy(max_retries=0)
    )
    try:
        fake_upstream.enqueue(Script(reasoning=3, text="Calling.", calls=[("w", "{}")]))
        first = await complete(provider, ask([Message("user", "Weather?")]))
        turn = first.as_message()
        turn.thinking[0].text += " (edited)"
        history = [
            Message("user", "Weather?"),
            turn,
            Message("tool", "ok", tool_call_id="toolu_1_0"),
        ]
        stream = provider.stream(ask(history))
        events = [e async for e in stream]
    finally:
        await provider.aclose()
    error = getattr(events[-1], "error", None)
    assert isinstance(error, ProviderHTTPError) and error.status == 400
    assert error.provider_message == "messages.1.content.0: Invalid signature in thinking block"


async def test_with_thinking_on_a_tool_turn_sent_back_without_it_is_refused(
    fake_upstream: FakeUpstream,
) -> None:
    provider = AnthropicProvider(
        "anthropic", fake_upstream.root_url, retry=RetryPolicy(max_retries=0)
    )
    try:
        fake_upstream.enqueue(Script(reasoning=3, calls=[("w", "{}")]))
        first = await complete(provider, ask([Message("user", "Weather?")], provider))
        turn = first.as_message()
        turn.thinking = [ReasoningPart(p.text) for p in turn.thinking]  # the signatures lost
        answer = Message("tool", "ok", tool_call_id="toolu_1_0")
        refused = await complete(
            provider, ask([Message("user", "Weather?"), turn, answer], provider)
        )
    finally:
        await provider.aclose()
    assert refused.error is not None
    assert "Expected `thinking` or `redacted_thinking`, but found `tool_use`" in refused.error
