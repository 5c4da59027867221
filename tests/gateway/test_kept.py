"""Every gateway call is kept as a chat that matches what the client saw."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest

from streamkeep.server import begin_shutdown
from tests.fakes.upstream import Script
from tests.gateway.conftest import MODEL, Gateway, GatewayFactory
from tests.gateway.test_sdk import TEXT, USER, parallel_calls_script

CHAT_HEADER = "x-streamkeep-chat-id"


def texts(message: dict[str, Any]) -> str:
    return "".join(p["text"] for p in message["parts"] if p["type"] == "text")


def shape(chat: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["role"], texts(m)) for m in chat["messages"]]


async def landed(gw: Gateway, chat_id: str) -> None:
    """Wait (bounded) for a new chat's rows (written just after its first token went out)."""
    async with asyncio.timeout(30):
        while True:
            r = await gw.http.get(f"/api/chats/{chat_id}")
            if r.status_code == 200 and r.json()["messages"]:
                return
            await asyncio.sleep(0.01)


async def settled(gw: Gateway, chat_id: str) -> dict[str, Any]:
    """The chat once its last reply is no longer streaming (the generation ended)."""
    await landed(gw, chat_id)
    async with asyncio.timeout(30):
        while True:
            chat = await gw.chat(chat_id)
            if chat["messages"] and chat["messages"][-1]["status"] != "streaming":
                return chat
            await asyncio.sleep(0.02)


async def test_streamed_call_is_stored_as_the_client_saw_it(gateway: Gateway) -> None:
    gateway.upstream.enqueue(Script(text=TEXT))
    client = gateway.async_client()
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "system", "content": "be brief"}, *USER],  # type: ignore[list-item]
        stream=True,
        stream_options={"include_usage": True},
    )
    chat_id = raw.headers[CHAT_HEADER]
    chunks = [c async for c in raw.parse()]
    await client.close()
    seen = "".join(c.delta.content or "" for chunk in chunks for c in chunk.choices)
    usage = chunks[-1].usage
    assert usage is not None

    chat = await gateway.chat(chat_id)  # stored before [DONE] went out: no waiting
    assert chat["system"] == "be brief"
    assert chat["title"] == "hello there"
    assert shape(chat) == [("user", "hello there"), ("assistant", seen)]
    reply = chat["messages"][-1]
    assert (reply["status"], reply["finish_reason"], reply["model"]) == ("complete", "stop", MODEL)
    assert reply["usage"]["input_tokens"] == usage.prompt_tokens
    assert reply["usage"]["output_tokens"] == usage.completion_tokens
    assert raw.headers["x-streamkeep-message-id"] == reply["id"]


async def test_whole_call_is_stored_too(gateway: Gateway) -> None:
    gateway.upstream.enqueue(Script(text=TEXT))
    client = gateway.async_client()
    raw = await client.chat.completions.with_raw_response.create(model=MODEL, messages=USER)  # type: ignore[arg-type]
    done = raw.parse()
    await client.close()
    chat = await gateway.chat(raw.headers[CHAT_HEADER])
    assert shape(chat) == [("user", "hello there"), ("assistant", done.choices[0].message.content)]


async def test_parallel_tool_calls_are_stored_as_two_parts(gateway: Gateway) -> None:
    gateway.upstream.enqueue(parallel_calls_script())
    client = gateway.async_client()
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=USER,
        tools=[{"type": "function", "function": {"name": "weather"}}],  # type: ignore[arg-type, list-item]
    )
    await client.close()
    reply = (await gateway.chat(raw.headers[CHAT_HEADER]))["messages"][-1]
    assert reply["finish_reason"] == "tool-calls"
    assert [(p["type"], p["toolCallId"], p["input"]) for p in reply["parts"]] == [
        ("tool-weather", "call_w", {"city": "Oslo"}),
        ("tool-time", "call_t", {"tz": "UTC"}),
    ]


async def test_a_client_that_leaves_mid_stream_still_leaves_the_whole_reply(
    gateway: Gateway,
) -> None:
    gateway.upstream.enqueue(Script(tokens=40, delay=0.02))
    body = {"model": MODEL, "messages": USER, "stream": True}
    async with (
        httpx.AsyncClient(base_url=gateway.url) as http,
        http.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        chat_id = response.headers[CHAT_HEADER]
        raw = b""
        async for data in response.aiter_raw():
            raw += data
            if b"ipsum" in raw:
                break  # leave after a couple of tokens
    assert b"[DONE]" not in raw  # the client did leave mid-stream
    chat = await settled(gateway, chat_id)
    reply = chat["messages"][-1]
    assert reply["status"] == "complete"
    assert len(texts(reply).split()) == 40
    assert reply["usage"]["output_tokens"] == 40


async def test_chat_header_continues_the_chat(gateway: Gateway) -> None:
    client = gateway.async_client()
    gateway.upstream.enqueue(Script(text="First answer."))
    first = await client.chat.completions.with_raw_response.create(model=MODEL, messages=USER)  # type: ignore[arg-type]
    chat_id = first.headers[CHAT_HEADER]
    history: list[Any] = [*USER, {"role": "assistant", "content": "First answer."}]

    gateway.upstream.enqueue(Script(text="Second answer."))
    second = await client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[*history, {"role": "user", "content": "and then?"}],
        extra_headers={CHAT_HEADER: chat_id},
    )
    assert second.headers[CHAT_HEADER] == chat_id
    assert shape(await gateway.chat(chat_id)) == [
        ("user", "hello there"),
        ("assistant", "First answer."),
        ("user", "and then?"),
        ("assistant", "Second answer."),
    ]
    # The client rewrote its history: only its trailing turn is added.
    gateway.upstream.enqueue(Script(text="Third answer."))
    await client.chat.completions.create(
        model=MODEL,
        messages=[
            *USER,
            {"role": "assistant", "content": "edited"},
            {"role": "user", "content": "3?"},
        ],
        extra_headers={CHAT_HEADER: chat_id},
    )
    await client.close()
    assert shape(await gateway.chat(chat_id))[4:] == [
        ("user", "3?"),
        ("assistant", "Third answer."),
    ]


async def test_tool_results_continue_the_chat(gateway: Gateway) -> None:
    client = gateway.async_client()
    gateway.upstream.enqueue(Script(tool="weather"))
    first = await client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=USER,
        tools=[{"type": "function", "function": {"name": "weather"}}],  # type: ignore[arg-type, list-item]
    )
    chat_id = first.headers[CHAT_HEADER]
    call = first.parse().choices[0].message.tool_calls[0]  # type: ignore[index]
    gateway.upstream.enqueue(Script(text="It is sunny."))
    await client.chat.completions.create(
        model=MODEL,
        messages=[
            *USER,
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"},
        ],
        extra_headers={CHAT_HEADER: chat_id},
    )
    await client.close()
    messages = (await gateway.chat(chat_id))["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    result = messages[2]["parts"][0]
    assert (result["type"], result["toolCallId"], result["output"]) == (
        "tool-weather",
        call.id,
        "sunny, 21C",
    )
    assert texts(messages[3]) == "It is sunny."
    # The provider saw the tool round trip as the client sent it.
    sent = gateway.upstream.requests[-1]["messages"]
    assert sent[-1] == {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"}


async def test_failures_are_stored_with_what_came_before(gateway: Gateway) -> None:
    client = gateway.async_client()
    gateway.upstream.enqueue(Script(tokens=6, error_after=3))
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=USER, stream=True
    )
    with pytest.raises(openai.APIError):
        async for _ in raw.parse():
            pass
    reply = (await gateway.chat(raw.headers[CHAT_HEADER]))["messages"][-1]
    assert (reply["status"], texts(reply)) == ("error", "lorem ipsum dolor")
    assert "fake upstream error mid-stream" in reply["error"]

    gateway.upstream.enqueue(Script(status=400))
    r = await gateway.http.post("/v1/chat/completions", json={"model": MODEL, "messages": USER})
    assert r.status_code == 400
    refused = (await gateway.chat(r.headers[CHAT_HEADER]))["messages"][-1]
    assert refused["status"] == "error" and "fake upstream error 400" in refused["error"]
    await client.close()


async def test_a_stream_cut_short_is_stored_as_an_error_with_its_partial(
    gateway: Gateway,
) -> None:
    client = gateway.async_client()
    gateway.upstream.enqueue(Script(tokens=6, cut_after=3))
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=USER, stream=True
    )
    with pytest.raises(openai.APIError):
        async for _ in raw.parse():
            pass
    await client.close()
    reply = (await gateway.chat(raw.headers[CHAT_HEADER]))["messages"][-1]
    assert (reply["status"], reply["finish_reason"]) == ("error", "error")
    assert texts(reply) == "lorem ipsum dolor"
    assert reply["error"] == "the provider closed the stream before finishing"


async def test_unknown_chat_header_is_404(gateway: Gateway) -> None:
    client = gateway.async_client()
    with pytest.raises(openai.NotFoundError) as info:
        await client.chat.completions.create(
            model=MODEL,
            messages=USER,
            extra_headers={CHAT_HEADER: "chat_nope"},  # type: ignore[arg-type]
        )
    await client.close()
    assert info.value.code == "chat_not_found"


async def test_store_off_keeps_nothing(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory(gateway_store=False)
    gw.upstream.enqueue(Script(text=TEXT))
    client = gw.async_client()
    done = await client.chat.completions.create(model=MODEL, messages=USER)  # type: ignore[arg-type]
    await client.close()
    assert done.choices[0].message.content == TEXT
    assert (await gw.http.get("/api/chats")).json()["items"] == []


async def test_store_off_a_leaving_client_closes_the_upstream(
    gateway_factory: GatewayFactory,
) -> None:
    gw = await gateway_factory(gateway_store=False)
    gw.upstream.enqueue(Script(tokens=200, delay=0.02))
    body = {"model": MODEL, "messages": USER, "stream": True}
    async with (
        httpx.AsyncClient(base_url=gw.url) as http,
        http.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        async for data in response.aiter_raw():
            if b"ipsum" in data:
                break
    async with asyncio.timeout(10):  # a leaked upstream connection fails here
        await gw.upstream.wait_idle()
    assert gw.upstream.closed_by_client == 1


async def test_continuing_a_chat_that_is_generating_is_409(gateway: Gateway) -> None:
    gateway.upstream.enqueue(Script(tokens=30, delay=0.05))
    body = {"model": MODEL, "messages": USER, "stream": True}
    async with (
        httpx.AsyncClient(base_url=gateway.url) as http,
        http.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        chat_id = response.headers[CHAT_HEADER]
        await landed(gateway, chat_id)
        again = await gateway.http.post(
            "/v1/chat/completions", json=body, headers={CHAT_HEADER: chat_id}
        )
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "generation_conflict"
        assert again.headers[CHAT_HEADER] == chat_id


async def test_the_chat_api_does_not_resume_a_live_gateway_call(gateway: Gateway) -> None:
    # Its frames are OpenAI chunks for the client that asked; the chat API's stream
    # protocol is the UI message stream, so the chat API answers "nothing to resume".
    gateway.upstream.enqueue(Script(tokens=30, delay=0.05))
    body = {"model": MODEL, "messages": USER, "stream": True}
    async with (
        httpx.AsyncClient(base_url=gateway.url) as http,
        http.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        chat_id = response.headers[CHAT_HEADER]
        await landed(gateway, chat_id)
        assert (await gateway.chat(chat_id))["messages"][-1]["status"] == "streaming"
        resumed = await gateway.http.get(f"/api/chats/{chat_id}/stream?after=0")
        assert resumed.status_code == 204


async def test_a_stream_cut_by_a_shutdown_ends_with_an_error_not_a_stop(
    gateway_factory: GatewayFactory,
) -> None:
    gateway = await gateway_factory(shutdown_grace=0.2)
    gateway.upstream.enqueue(Script(tokens=1000, delay=0.01))
    body = {"model": MODEL, "messages": USER, "stream": True}
    async with (
        httpx.AsyncClient(base_url=gateway.url) as http,
        http.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        chat_id = response.headers[CHAT_HEADER]
        raw = b""
        async for data in response.aiter_raw():
            if not raw:
                begin_shutdown(gateway.app)  # the grace period ends mid-answer
            raw += data
    assert b'"finish_reason":"stop"' not in raw
    last = raw.rstrip().split(b"\n\n")[-2]
    assert b'"error"' in last and b"shut down" in last
    chat = await settled(gateway, chat_id)
    assert chat["messages"][-1]["status"] == "interrupted"
