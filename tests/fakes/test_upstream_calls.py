"""Scripting the fake's tool calls and thinking, read off the wire over real HTTP."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from streamkeep.llm.openai import OpenAIProvider
from streamkeep.llm.provider import complete
from streamkeep.llm.types import ChatRequest, Message, ToolCall
from tests.fakes.upstream import FakeUpstream, Script, parse_directive

CALLS = [("get_weather", '{"city": "Paris"}'), ("get_time", '{"zone": "Europe/Oslo"}')]


async def events(up: FakeUpstream, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON payloads of a streamed answer, in order."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(up.root_url + path, json={**body, "stream": True}) as response,
    ):
        assert response.status == 200
        text = await response.text()
    datas = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    return [orjson.loads(d) for d in datas if d != "[DONE]"]


async def whole(up: FakeUpstream, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(up.root_url + path, json=body) as response,
    ):
        assert response.status == 200
        answer: dict[str, Any] = await response.json()
        return answer


ASK = {"model": "m", "messages": [{"role": "user", "content": "Weather and time?"}]}


async def test_openai_sends_the_calls_in_parallel_after_the_text(
    fake_upstream: FakeUpstream,
) -> None:
    fake_upstream.enqueue(Script(text="Two calls.", calls=CALLS, args_chunk=3))
    body = {**ASK, "stream_options": {"include_usage": True}}
    chunks = await events(fake_upstream, "/v1/chat/completions", body)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    texts = [i for i, d in enumerate(deltas) if d.get("content")]
    calls = [i for i, d in enumerate(deltas) if d.get("tool_calls")]
    assert max(texts) < min(calls)
    pieces = [t for d in deltas for t in d.get("tool_calls", ())]
    starts = [(t["index"], t["id"], t["function"]["name"]) for t in pieces if "id" in t]
    assert starts == [(0, "call_1_0", "get_weather"), (1, "call_1_1", "get_time")]
    for index, (_, arguments) in enumerate(CALLS):
        mine = [t["function"]["arguments"] for t in pieces if t["index"] == index]
        assert "".join(mine) == arguments
        assert max(len(m) for m in mine) == 3
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1]
    assert finish == "tool_calls"
    argument_pieces = sum(len(a) // 3 + (len(a) % 3 > 0) for _, a in CALLS)
    assert chunks[-1]["usage"]["completion_tokens"] == 2 + argument_pieces


async def test_anthropic_sends_signed_thinking_redacted_text_then_tool_use_blocks(
    fake_upstream: FakeUpstream,
) -> None:
    fake_upstream.enqueue(
        Script(reasoning=2, redacted=True, text="Two calls.", calls=CALLS, args_chunk=4)
    )
    payloads = await events(fake_upstream, "/v1/messages", ASK)
    starts = [p["content_block"] for p in payloads if p["type"] == "content_block_start"]
    assert [b["type"] for b in starts] == [
        "thinking",
        "redacted_thinking",
        "text",
        "tool_use",
        "tool_use",
    ]
    assert starts[1]["data"] == "redacted-1"
    assert [(b["id"], b["name"]) for b in starts[3:]] == [
        ("toolu_1_0", "get_weather"),
        ("toolu_1_1", "get_time"),
    ]
    block_events = [p for p in payloads if p["type"].startswith("content_block")]
    signature = next(i for i, p in enumerate(block_events) if "signature" in p.get("delta", {}))
    assert block_events[signature]["delta"] == {"type": "signature_delta", "signature": "sig-1"}
    assert block_events[signature + 1] == {"type": "content_block_stop", "index": 0}
    for index, (_, arguments) in enumerate(CALLS, start=3):
        mine = [
            p["delta"]["partial_json"]
            for p in payloads
            if p["type"] == "content_block_delta" and p["index"] == index
        ]
        assert "".join(mine) == arguments and max(len(m) for m in mine) == 4
    assert fake_upstream.signatures == {"sig-1": "let me"}


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_whole_answers_carry_every_call(fake_upstream: FakeUpstream, path: str) -> None:
    fake_upstream.enqueue(Script(reasoning=1, calls=[*CALLS, ("now", "")]))
    answer = await whole(fake_upstream, path, ASK)
    if path.endswith("/messages"):
        uses = [b for b in answer["content"] if b["type"] == "tool_use"]
        assert [(u["id"], u["input"]) for u in uses] == [
            ("toolu_1_0", {"city": "Paris"}),
            ("toolu_1_1", {"zone": "Europe/Oslo"}),
            ("toolu_1_2", {}),
        ]
        assert answer["content"][0] == {"type": "thinking", "thinking": "let", "signature": "sig-1"}
        assert answer["stop_reason"] == "tool_use"
    else:
        calls = answer["choices"][0]["message"]["tool_calls"]
        assert [(c["id"], c["function"]["arguments"]) for c in calls] == [
            ("call_1_0", CALLS[0][1]),
            ("call_1_1", CALLS[1][1]),
            ("call_1_2", ""),
        ]


def test_calls_in_a_directive_are_json_pairs() -> None:
    script = parse_directive("""Go [[calls='[["f", "{}"], ["g", "{\\"a\\": 1}"]]' args_chunk=2]]""")
    assert script == Script(calls=[("f", "{}"), ("g", '{"a": 1}')], args_chunk=2)
    with pytest.raises(ValueError, match="calls must be a JSON list"):
        parse_directive("""[[calls='["f", "{}"]']]""")


async def test_a_directive_scripts_the_answer_to_the_user_not_to_the_tool_results(
    fake_upstream: FakeUpstream,
) -> None:
    provider = OpenAIProvider("fake", fake_upstream.base_url)
    history = [Message("user", """Time? [[calls='[["now", ""]]' text="Let me look."]]""")]
    try:
        first = await complete(provider, ChatRequest(model="m", messages=history))
        assert first.text == "Let me look."
        assert [(c.id, c.name) for c in first.tool_calls] == [("call_1_0", "now")]
        history += [first.as_message(), Message("tool", "noon", tool_call_id="call_1_0")]
        second = await complete(provider, ChatRequest(model="m", messages=history))
    finally:
        await provider.aclose()
    assert second.text == "Tool results: noon" and second.tool_calls == []


async def test_blank_arguments_still_make_a_call(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Script(calls=[("now", "")]))
    provider = OpenAIProvider("fake", fake_upstream.base_url)
    try:
        answer = await complete(provider, ChatRequest(model="m", messages=[Message("user", "?")]))
    finally:
        await provider.aclose()
    assert answer.tool_calls == [ToolCall("call_1_0", "now", {})]
