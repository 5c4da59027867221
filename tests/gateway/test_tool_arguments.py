"""Tool-call arguments reach an OpenAI SDK client normalised, streamed or not, and equal
to what is stored: a provider's `"null"`, empty or object-typed arguments become a JSON
object string (`"{}"` when there were none); object text streams as it comes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.fakes.upstream import Script
from tests.gateway.conftest import MODEL, Gateway, GatewayFactory
from tests.gateway.test_sdk import USER

CHAT_HEADER = "x-streamkeep-chat-id"
TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]

# name -> (the `arguments` of each tool-call chunk the provider sends (the first one also
# carries the id and name; `...` leaves the field out), the string the client must get)
CASES: dict[str, tuple[list[Any], str]] = {
    "null": (["null"], "{}"),
    "empty": ([""], "{}"),
    "absent": ([...], "{}"),
    "empty object": ([{}], "{}"),
    "object": ([{"city": "Oslo", "days": 3}], '{"city":"Oslo","days":3}'),
    "split": (["", '{"city":', ' "Oslo"}'], '{"city": "Oslo"}'),
    "split null": (["", "nu", "ll"], "{}"),
    # Not an object at all: the client sees what the model said (stored as rawInput).
    "array": (["[1, ", "2]"], "[1, 2]"),
}


def _sse(chunk: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def tool_script(pieces: list[Any]) -> Script:
    head = {"id": "chatcmpl-a", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def delta(d: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse({**head, "choices": [{"index": 0, "delta": d, "finish_reason": finish}]})

    chunks = [delta({"role": "assistant", "content": None})]
    for i, arguments in enumerate(pieces):
        function: dict[str, Any] = {"name": "weather"} if i == 0 else {}
        if arguments is not ...:
            function["arguments"] = arguments
        call: dict[str, Any] = {"index": 0, "function": function}
        if i == 0:
            call |= {"id": "call_w", "type": "function"}
        chunks.append(delta({"tool_calls": [call]}))
    chunks += [delta({}, "tool_calls"), b"data: [DONE]\n\n"]
    return Script(raw=chunks)  # type: ignore[arg-type]


@pytest.fixture(params=["kept", "relay"])
async def gw(request: pytest.FixtureRequest, gateway_factory: GatewayFactory) -> Gateway:
    return await gateway_factory(gateway_store=request.param == "kept")


async def ask(gw: Gateway, *, stream: bool) -> tuple[str, int, str | None]:
    """One call: the arguments string the client ends with, how many argument deltas
    made it, and the chat it was stored in (None for a pure relay)."""
    client = gw.async_client()
    kwargs: dict[str, Any] = {"model": MODEL, "messages": USER, "tools": TOOLS}
    raw = await client.chat.completions.with_raw_response.create(stream=stream, **kwargs)
    chat_id = raw.headers.get(CHAT_HEADER)
    if not stream:
        done = raw.parse()
        await client.close()
        calls = done.choices[0].message.tool_calls or []
        assert [(c.id, c.function.name) for c in calls] == [("call_w", "weather")]  # type: ignore[union-attr]
        return calls[0].function.arguments, 1, chat_id  # type: ignore[union-attr]
    arguments, deltas = "", 0
    async for chunk in raw.parse():
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                assert call.index == 0
                if call.function is not None and call.function.arguments:
                    arguments += call.function.arguments
                    deltas += 1
    await client.close()
    return arguments, deltas, chat_id


async def stored_call(gw: Gateway, chat_id: str) -> dict[str, Any]:
    reply = (await gw.chat(chat_id))["messages"][-1]
    assert reply["status"] == "complete"
    (part,) = [p for p in reply["parts"] if p["type"] == "tool-weather"]
    assert part["toolCallId"] == "call_w"
    return dict(part)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
async def test_arguments_reach_the_client_as_stored(gw: Gateway, stream: bool) -> None:
    seen: dict[str, str] = {}
    for name, (pieces, _) in CASES.items():
        gw.upstream.enqueue(tool_script(pieces))
        arguments, deltas, chat_id = await ask(gw, stream=stream)
        seen[name] = arguments
        if stream and name == "split":
            assert deltas == 2  # object text streams live, delta by delta
        if gw.app.state.settings.gateway_store:
            assert chat_id is not None
            part = await stored_call(gw, chat_id)
            if "rawInput" in part:  # not an object: kept as the model sent it
                assert (part["state"], part["input"]) == ("output-error", {})
                assert arguments == part["rawInput"], name
            else:
                assert part["state"] == "input-available"
                assert orjson.loads(arguments) == part["input"], name
    assert seen == {name: expected for name, (_, expected) in CASES.items()}
