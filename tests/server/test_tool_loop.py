"""The server-side tool loop over real HTTP: a scripted model (the fake upstream, both
wire formats) calls tools, the server runs them and calls the model again.

The conversation of the issue's "done when": `calculator` and `current_time` called in
parallel, then an answer; streamed through the chat API and useChat, stored with every
part, resumed from every event id, and followed by a turn whose history the fake checks
as the real APIs do (tests.fakes.upstream_validate)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from streamkeep.config import ProviderConfig
from tests.fakes.upstream import Script
from tests.server import loop_tools
from tests.server.conftest import Server, ServerFactory
from tests.server.sse import Event, events, read_all, until

TOOLS = ["calculator", "current_time"]
CALLS = [("calculator", '{"expression": "6*7"}'), ("current_time", '{"timezone": "Europe/Paris"}')]


def anthropic_settings(server_url: str) -> dict[str, Any]:
    providers = {"claude": ProviderConfig(kind="anthropic", base_url=server_url, api_key="x")}
    return {"providers": providers, "model": "claude/claude-test"}


@pytest.fixture(params=["openai", "anthropic"])
async def wire_server(request: pytest.FixtureRequest, server_factory: ServerFactory) -> Server:
    """A server whose model speaks OpenAI's or Anthropic's wire format."""
    if request.param == "openai":
        return await server_factory()
    upstream = request.getfixturevalue("fake_upstream")
    return await server_factory(**anthropic_settings(upstream.root_url))


def script_parallel_calls(server: Server, *, answer_delay: float = 0.0) -> None:
    """Step 1: some text, then both calls (their arguments in 3-character pieces), with
    thinking (Anthropic signs it); step 2: the answer."""
    server.upstream.enqueue(
        Script(text="Let me work it out.", calls=CALLS, args_chunk=3, reasoning=2)
    )
    server.upstream.enqueue(Script(text="Six times seven is 42.", delay=answer_delay))


def shape(evts: list[Event]) -> list[str]:
    """The chunk types, with runs of one type (deltas) collapsed."""
    out: list[str] = []
    for event in evts:
        if not out or out[-1] != event.type:
            out.append(event.type)
    return out


def check_outputs(evts: list[Event]) -> None:
    calls = {e.data["toolCallId"]: e.data for e in evts if e.type == "tool-input-available"}
    assert sorted(c["toolName"] for c in calls.values()) == TOOLS
    outputs = {
        e.data["toolCallId"]: e.data["output"] for e in evts if e.type == "tool-output-available"
    }
    assert outputs.keys() == calls.keys()
    by_name = {calls[k]["toolName"]: v for k, v in outputs.items()}
    assert by_name["calculator"] == 42
    when = datetime.fromisoformat(by_name["current_time"])
    assert when.utcoffset() == ZoneInfo("Europe/Paris").utcoffset(when.replace(tzinfo=None))


EXPECTED_SHAPE = [
    "start",
    "start-step",
    "reasoning-start",
    "reasoning-delta",
    "reasoning-end",
    "text-start",
    "text-delta",
    "text-end",
    "tool-input-start",
    "tool-input-delta",
    "tool-input-start",
    "tool-input-delta",
    "tool-input-available",  # both calls complete when the model's answer ends
    "tool-output-available",
    "finish-step",
    "start-step",
    "text-start",
    "text-delta",
    "text-end",
    "finish-step",
    "message-metadata",
    "finish",
    "[DONE]",
]


def check_stored(message: dict[str, Any], anthropic: bool) -> None:
    parts = message["parts"]
    assert [p["type"] for p in parts] == [
        "step-start",
        "reasoning",
        "text",
        "tool-calculator",
        "tool-current_time",
        "step-start",
        "text",
    ]
    assert parts[2]["text"] == "Let me work it out."
    calc, clock = parts[3], parts[4]
    assert calc["state"] == clock["state"] == "output-available"
    assert calc["input"] == {"expression": "6*7"} and calc["output"] == 42
    assert clock["input"] == {"timezone": "Europe/Paris"}
    datetime.fromisoformat(clock["output"])
    assert parts[6]["text"] == "Six times seven is 42."
    signed = "providerMetadata" in parts[1]
    assert signed is anthropic  # Anthropic's thinking is kept with its signature
    assert message["status"] == "complete" and message["finish_reason"] == "stop"
    # Two model calls: their usage added up.
    assert message["usage"]["input_tokens"] > 0 and message["usage"]["output_tokens"] > 0


async def test_parallel_tools_through_the_chat_api(wire_server: Server) -> None:
    server = wire_server
    anthropic = "claude" in str(server.app.state.settings.model)
    c = server.client
    chat = await server.new_chat(tools=TOOLS)
    assert chat["tools"] == TOOLS
    script_parallel_calls(server)
    async with c.stream(
        "POST", f"/api/chats/{chat['id']}/messages", json={"content": "6*7? time?"}
    ) as r:
        assert r.status_code == 200
        evts = await read_all(r)
    assert shape(evts) == EXPECTED_SHAPE
    check_outputs(evts)
    finish = [e.data for e in evts if e.type == "finish"]
    assert finish == [{"type": "finish", "finishReason": "stop"}]

    detail = (await c.get(f"/api/chats/{chat['id']}")).json()
    reply = detail["messages"][-1]
    check_stored(reply, anthropic)

    # Every event id resumes with exactly the rest of the stream.
    resume = f"/api/chats/{chat['id']}/stream"
    first = evts[0].seq
    assert first is not None
    for after in range(first - 1, evts[-1].seq or 0):
        async with c.stream("GET", resume, headers={"last-event-id": str(after)}) as r:
            rest = await read_all(r)
        assert rest == [e for e in evts if (e.seq or 0) > after], after

    # The next turn: the fake refuses (400) any history its real API would refuse.
    server.upstream.enqueue(Script(text="You are welcome."))
    async with c.stream(
        "POST", f"/api/chats/{chat['id']}/messages", json={"content": "thanks"}
    ) as r:
        turn = await read_all(r)
    assert [e.type for e in turn if e.type in ("error", "finish")] == ["finish"], turn
    sent = server.upstream.requests[-1]["messages"]
    if anthropic:
        roles = [m["role"] for m in sent]
        assert roles == ["user", "assistant", "user", "assistant", "user"]
        assert [b["type"] for b in sent[1]["content"]] == [
            "thinking",
            "text",
            "tool_use",
            "tool_use",
        ]
        assert [b["type"] for b in sent[2]["content"]] == ["tool_result", "tool_result"]
        assert (
            sent[-1]["content"] == [{"type": "text", "text": "thanks"}]
            or sent[-1]["content"] == "thanks"
        )
    else:
        roles = [m["role"] for m in sent]
        assert roles == ["system"] * (roles.count("system")) + [
            "user",
            "assistant",
            "tool",
            "tool",
            "assistant",
            "user",
        ]
        call_ids = [c["id"] for c in sent[-5]["tool_calls"]]
        assert [m["tool_call_id"] for m in sent[-4:-2]] == call_ids
        assert sent[-4]["content"] == "42"


async def test_resume_mid_loop_while_it_runs(server: Server) -> None:
    """A client that drops inside step 1 and resumes while step 2 streams gets the
    whole rest: nothing lost, nothing twice."""
    c = server.client
    chat = await server.new_chat(tools=TOOLS)
    script_parallel_calls(server, answer_delay=0.05)
    async with c.stream("POST", f"/api/chats/{chat['id']}/messages", json={"content": "go"}) as r:
        stream = events(r)
        head = await until(stream, "tool-output-available")
        dropped_at = next(e.seq for e in head if e.type == "tool-input-start")
        assert dropped_at is not None
        resume = f"/api/chats/{chat['id']}/stream"
        async with c.stream("GET", resume, headers={"last-event-id": str(dropped_at)}) as again:
            resumed = await read_all(again)
        tail = [e async for e in stream]
    whole = head + tail
    assert resumed == [e for e in whole if (e.seq or 0) > dropped_at]
    assert (
        shape(whole)[-6:]
        == [
            "text-start",
            "text-delta",
            "text-end",
            "finish-step",
            "message-metadata",
            "finish",
            "[DONE]",
        ][-6:]
    )


async def test_parallel_tools_through_usechat(server: Server) -> None:
    c = server.client
    script_parallel_calls(server)
    user = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "6*7? time?"}]}
    body = {"id": "tools-chat", "trigger": "submit-message", "messages": [user], "tools": TOOLS}
    async with c.stream("POST", "/api/chat", json=body) as r:
        assert r.status_code == 200
        evts = await read_all(r)
    assert shape(evts) == EXPECTED_SHAPE
    check_outputs(evts)
    detail = (await c.get("/api/chats/tools-chat")).json()
    check_stored(detail["messages"][-1], anthropic=False)
    for after in range((evts[0].seq or 1) - 1, evts[-1].seq or 0):
        path = "/api/chat/tools-chat/stream"
        async with c.stream("GET", path, headers={"last-event-id": str(after)}) as r:
            assert await read_all(r) == [e for e in evts if (e.seq or 0) > after]


async def test_tools_are_listed_and_unknown_names_are_refused(server: Server) -> None:
    c = server.client
    listed = {t["name"]: t for t in (await c.get("/api/tools")).json()["items"]}
    assert {"calculator", "current_time"} <= listed.keys()
    calc = listed["calculator"]
    assert calc["source"] == "builtin"
    assert "expression" in calc["input_schema"]["properties"]
    before = (await c.get("/api/chats")).json()["items"]
    r = await c.post("/api/chats", json={"tools": ["calculator", "nope"]})
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "tools" and "'nope'" in r.json()["error"]["message"]
    assert (await c.get("/api/chats")).json()["items"] == before
    chat = await server.new_chat()
    r = await c.patch(f"/api/chats/{chat['id']}", json={"tools": ["nope"]})
    assert r.status_code == 422 and "'nope'" in r.json()["error"]["message"]
    r = await c.post(f"/api/chats/{chat['id']}/messages", json={"content": "x", "tools": ["nope"]})
    assert r.status_code == 422
    assert (await c.get(f"/api/chats/{chat['id']}")).json()["messages"] == []
    r = await c.patch(f"/api/chats/{chat['id']}", json={"tools": ["calculator"]})
    assert r.json()["tools"] == ["calculator"]
    r = await c.patch(f"/api/chats/{chat['id']}", json={"tools": []})
    assert r.json()["tools"] == []


async def test_a_message_may_override_the_chats_tools(server: Server) -> None:
    """The override is for one reply: the model is offered exactly those tools."""
    c = server.client
    chat = await server.new_chat(tools=TOOLS)
    body = {"content": "hi", "tools": ["calculator"]}
    async with c.stream("POST", f"/api/chats/{chat['id']}/messages", json=body) as r:
        await read_all(r)
    offered = [t["function"]["name"] for t in server.upstream.requests[-1]["tools"]]
    assert offered == ["calculator"]
    async with c.stream(
        "POST", f"/api/chats/{chat['id']}/messages", json={"content": "again"}
    ) as r:
        await read_all(r)
    assert [t["function"]["name"] for t in server.upstream.requests[-1]["tools"]] == TOOLS
    # A chat without tools offers none (and its reply has no step parts).
    plain = await server.new_chat()
    async with c.stream("POST", f"/api/chats/{plain['id']}/messages", json={"content": "x"}) as r:
        await read_all(r)
    assert "tools" not in server.upstream.requests[-1]
    reply = (await c.get(f"/api/chats/{plain['id']}")).json()["messages"][-1]
    assert [p["type"] for p in reply["parts"]] == ["text"]


async def test_failures_are_told_to_the_model_and_the_loop_goes_on(
    server_factory: ServerFactory,
) -> None:
    """A tool that raises, one that times out, invalid arguments and an unknown tool
    each give tool-output-error; the model gets the errors and answers."""
    server = await server_factory(
        tools={
            "python": ["tests.server.loop_tools:boom", "tests.server.loop_tools:slow"],
            "timeout": 0.5,
        }
    )
    c = server.client
    chat = await server.new_chat(tools=["boom", "slow", "calculator"])
    calls = [
        ("boom", '{"reason": "no luck"}'),
        ("slow", '{"seconds": 30}'),
        ("calculator", '{"expression": "1/0"}'),
        ("calculator", '{"expr": "1"}'),
        ("missing", "{}"),
    ]
    server.upstream.enqueue(Script(calls=calls))
    server.upstream.enqueue(Script(text="Sorry, all failed."))
    async with c.stream("POST", f"/api/chats/{chat['id']}/messages", json={"content": "go"}) as r:
        evts = await read_all(r)
    errors = {
        e.data["toolCallId"]: e.data["errorText"] for e in evts if e.type == "tool-output-error"
    }
    names = {e.data["toolCallId"]: e.data["toolName"] for e in evts if e.type == "tool-input-start"}
    by_name = sorted((names[k], v) for k, v in errors.items())
    assert [n for n, _ in by_name] == ["boom", "calculator", "calculator", "missing", "slow"]
    text = dict(by_name)
    assert "boom: no luck" in text["boom"]
    assert "timed out after 0.5 s" in text["slow"]
    assert "unknown tool 'missing'" in text["missing"]
    calc_errors = sorted(v for n, v in by_name if n == "calculator")
    assert any("division by zero" in v for v in calc_errors)
    assert any("expression" in v for v in calc_errors)
    assert shape(evts)[-5:] == ["text-end", "finish-step", "message-metadata", "finish", "[DONE]"]
    # The model was sent every error as the call's result.
    sent = server.upstream.requests[-1]["messages"]
    results = [m["content"] for m in sent if m["role"] == "tool"]
    assert len(results) == 5 and all(r.startswith("Error: ") for r in results)
    reply = (await c.get(f"/api/chats/{chat['id']}")).json()["messages"][-1]
    states = [p.get("state") for p in reply["parts"] if p["type"].startswith("tool-")]
    assert states == ["output-error"] * 5
    assert reply["status"] == "complete"


async def test_max_steps_ends_the_reply_clearly(server_factory: ServerFactory) -> None:
    server = await server_factory(tools={"max_steps": 2})
    c = server.client
    chat = await server.new_chat(tools=["calculator"])
    for _ in range(2):
        server.upstream.enqueue(Script(calls=[("calculator", '{"expression": "1+1"}')]))
    async with c.stream("POST", f"/api/chats/{chat['id']}/messages", json={"content": "loop"}) as r:
        evts = await read_all(r)
    assert len(server.upstream.requests) == 2  # never a third model call
    assert [e.type for e in evts].count("tool-output-available") == 2
    meta = [e.data["messageMetadata"] for e in evts if e.type == "message-metadata"][-1]
    assert meta["maxStepsReached"] is True and meta["status"] == "complete"
    assert [e.data for e in evts if e.type == "finish"] == [
        {"type": "finish", "finishReason": "tool-calls"}
    ]
    reply = (await c.get(f"/api/chats/{chat['id']}")).json()["messages"][-1]
    assert reply["finish_reason"] == "tool-calls"
    assert [p["type"] for p in reply["parts"]].count("step-start") == 2
    # No call waits for a client: results (useChat sends the reply back once each of
    # its last step's calls has an output) do not go on past max_steps.
    answered = reply["parts"][-1]
    retry = {"id": chat["id"], "messages": [{"id": reply["id"], **_ui(reply)}]}
    for r in (
        await c.post(
            f"/api/messages/{reply['id']}/tool-results",
            json={"results": [{"toolCallId": answered["toolCallId"], "output": 2}]},
        ),
        await c.post("/api/chat", json=retry),
    ):
        assert r.status_code == 422, r.text
    assert len(server.upstream.requests) == 2
    assert (await c.get(f"/api/messages/{reply['id']}")).json() == reply


def _ui(message: dict[str, Any]) -> dict[str, Any]:
    return {"role": message["role"], "parts": message["parts"]}


async def test_stop_during_a_tool_cancels_it_and_keeps_what_was_done(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(tools={"python": ["tests.server.loop_tools:slow"]})
    loop_tools.EVENTS.clear()
    loop_tools.STARTED = asyncio.Event()
    c = server.client
    chat = await server.new_chat(tools=["slow", "calculator"])
    calls = [("calculator", '{"expression": "2+2"}'), ("slow", '{"seconds": 60}')]
    server.upstream.enqueue(Script(text="Working.", calls=calls))
    async with c.stream("POST", f"/api/chats/{chat['id']}/messages", json={"content": "go"}) as r:
        stream = events(r)
        await until(stream, "tool-output-available")  # the calculator is done
        await asyncio.wait_for(loop_tools.STARTED.wait(), 10)
        stopped = await c.post(f"/api/chats/{chat['id']}/stop")
        assert stopped.json() == {"stopped": True}
        rest = [e.type async for e in stream]
    assert loop_tools.EVENTS == ["started", "cancelled"]
    assert rest[-3:] == ["abort", "finish", "[DONE]"]
    reply = (await c.get(f"/api/chats/{chat['id']}")).json()["messages"][-1]
    assert reply["status"] == "stopped"
    kinds = {p["type"]: p for p in reply["parts"]}
    assert kinds["text"]["text"] == "Working."
    assert (
        kinds["tool-calculator"]["state"] == "output-available"
        and kinds["tool-calculator"]["output"] == 4
    )
    assert kinds["tool-slow"]["state"] == "input-available"  # called, never answered
    assert len(server.upstream.requests) == 1
    # The next turn leaves the unanswered call out; both APIs take that history.
    server.upstream.enqueue(Script(text="ok"))
    async with c.stream("POST", f"/api/chats/{chat['id']}/messages", json={"content": "next"}) as r:
        assert "finish" in [e.type for e in await read_all(r)]
    sent = server.upstream.requests[-1]["messages"]
    assert [
        c["function"]["name"]
        for m in sent
        if m["role"] == "assistant"
        for c in m.get("tool_calls", [])
    ] == ["calculator"]


ASK = {
    "name": "ask_user",
    "description": "Ask the user a question; they answer in the page.",
    "inputSchema": {"type": "object", "properties": {"question": {"type": "string"}}},
}


async def test_client_tools_wait_and_the_clients_result_continues_the_message(
    server: Server,
) -> None:
    """useChat's `addToolResult` flow: the reply ends waiting for the client's call (the
    server's own call of that step is run); the client's POST with the result goes on
    in the same assistant message."""
    c = server.client
    calls = [("calculator", '{"expression": "2**10"}'), ("ask_user", '{"question": "Units?"}')]
    server.upstream.enqueue(Script(text="One moment.", calls=calls))
    user = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "size?"}]}
    body: dict[str, Any] = {
        "id": "client-tools",
        "trigger": "submit-message",
        "messages": [user],
        "tools": ["calculator"],
        "clientTools": [ASK],
    }
    async with c.stream("POST", "/api/chat", json=body) as r:
        first = await read_all(r)
    assert [e.data for e in first if e.type == "finish"] == [
        {"type": "finish", "finishReason": "tool-calls"}
    ]
    offered = {t["function"]["name"] for t in server.upstream.requests[-1]["tools"]}
    assert offered == {"calculator", "ask_user"}
    message_id = first[0].data["messageId"]
    stored = (await c.get(f"/api/messages/{message_id}")).json()
    waiting = {p["type"]: p for p in stored["parts"] if p["type"].startswith("tool-")}
    assert waiting["tool-calculator"]["output"] == 1024
    assert waiting["tool-ask_user"]["state"] == "input-available"
    ask_id = waiting["tool-ask_user"]["toolCallId"]

    # What useChat sends after addToolResult: the assistant message with the output.
    answered = {**waiting["tool-ask_user"], "state": "output-available", "output": "KiB"}
    assistant = {
        "id": message_id,
        "role": "assistant",
        "parts": [p if p.get("toolCallId") != ask_id else answered for p in stored["parts"]],
    }
    server.upstream.enqueue(Script(text="1024 KiB, then."))
    body = {**body, "messages": [user, assistant], "messageId": message_id}
    async with c.stream("POST", "/api/chat", json=body) as r:
        assert r.status_code == 200
        second = await read_all(r)
    assert second[0].data["messageId"] == message_id
    assert shape(second)[:2] == ["start", "start-step"]
    assert [e.data for e in second if e.type == "finish"] == [
        {"type": "finish", "finishReason": "stop"}
    ]
    sent = server.upstream.requests[-1]["messages"]
    results = {m["tool_call_id"]: m["content"] for m in sent if m["role"] == "tool"}
    assert results[ask_id] == "KiB" and "1024" in results.values()

    detail = (await c.get("/api/chats/client-tools")).json()
    assert [m["role"] for m in detail["messages"]] == ["user", "assistant"]  # one reply
    reply = detail["messages"][-1]
    assert reply["id"] == message_id and reply["status"] == "complete"
    assert [p["type"] for p in reply["parts"]] == [
        "step-start",
        "text",
        "tool-calculator",
        "tool-ask_user",
        "step-start",
        "text",
    ]
    assert reply["parts"][3]["output"] == "KiB"
    assert reply["usage"]["input_tokens"] > stored["usage"]["input_tokens"]  # both calls

    # A result for a call that waits no more changes nothing.
    r = await c.post(
        f"/api/messages/{message_id}/tool-results",
        json={"results": [{"toolCallId": ask_id, "output": "again"}]},
    )
    assert r.status_code == 422
    assert (await c.get(f"/api/messages/{message_id}")).json() == reply


async def test_client_tool_results_through_the_chat_api(server: Server) -> None:
    c = server.client
    chat = await server.new_chat()
    server.upstream.enqueue(Script(calls=[("ask_user", '{"question": "Colour?"}')]))
    body = {"content": "pick", "client_tools": [ASK]}
    async with c.stream("POST", f"/api/chats/{chat['id']}/messages", json=body) as r:
        first = await read_all(r)
    message_id = first[0].data["messageId"]
    call_id = next(e.data["toolCallId"] for e in first if e.type == "tool-input-available")
    path = f"/api/messages/{message_id}/tool-results"
    bad = [
        {"results": [{"toolCallId": "call_nope", "output": 1}]},
        {"results": []},
        {
            "results": [
                {"toolCallId": call_id, "output": "a"},
                {"toolCallId": call_id, "output": "b"},
            ]
        },
    ]
    for wrong in bad:
        r = await c.post(path, json=wrong)
        assert r.status_code == 422, (wrong, r.text)
    assert (await c.get(f"/api/messages/{message_id}")).json()["status"] == "complete"
    server.upstream.enqueue(Script(text="Blue it is."))
    async with c.stream(
        "POST", path, json={"results": [{"toolCallId": call_id, "errorText": "no answer"}]}
    ) as r:
        second = await read_all(r)
    assert second[0].data["messageId"] == message_id
    sent = server.upstream.requests[-1]["messages"]
    assert [m["content"] for m in sent if m["role"] == "tool"] == ["Error: no answer"]
    reply = (await c.get(f"/api/messages/{message_id}")).json()
    assert reply["parts"][1]["state"] == "output-error"
    assert reply["parts"][-1] == {"type": "text", "text": "Blue it is."}
    # Resuming the continuation replays it from its own start.
    async with c.stream(
        "GET", f"/api/chats/{chat['id']}/stream", headers={"last-event-id": str(second[0].seq)}
    ) as r:
        assert await read_all(r) == second[1:]


async def test_a_result_with_nan_is_stored_as_json_has_it(server_factory: ServerFactory) -> None:
    """NaN and infinities (which JSON lacks, and PostgreSQL's jsonb refuses): in a
    tool's result they are null, in the stream, the store and the next request; in a
    client's result (the stdlib parses `NaN`) they are refused, nothing written."""
    server = await server_factory(tools={"python": ["tests.server.loop_tools:measure"]})
    c = server.client
    chat = await server.new_chat(tools=["measure"])
    server.upstream.enqueue(Script(calls=[("measure", "{}"), ("ask_user", "{}")]))
    body = {"content": "measure", "client_tools": [ASK]}
    async with c.stream("POST", f"/api/chats/{chat['id']}/messages", json=body) as r:
        first = await read_all(r)
    readings = {"ok": 1.5, "nan": None, "inf": None}
    assert [e.data["output"] for e in first if e.type == "tool-output-available"] == [readings]
    message_id = first[0].data["messageId"]
    stored = (await c.get(f"/api/messages/{message_id}")).json()
    assert stored["status"] == "complete" and stored["parts"][1]["output"] == readings
    call_id = stored["parts"][2]["toolCallId"]
    raw = b'{"results": [{"toolCallId": "%s", "output": [NaN, 2]}]}' % call_id.encode()
    r = await c.post(
        f"/api/messages/{message_id}/tool-results",
        content=raw,
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422, r.text
    assert (await c.get(f"/api/messages/{message_id}")).json() == stored
    server.upstream.enqueue(Script(text="done"))
    async with c.stream(
        "POST",
        f"/api/messages/{message_id}/tool-results",
        json={"results": [{"toolCallId": call_id, "output": 2}]},
    ) as r:
        assert [e.type for e in await read_all(r)][-2:] == ["finish", "[DONE]"]
    sent = server.upstream.requests[-1]["messages"]
    assert [json.loads(m["content"]) for m in sent if m["role"] == "tool"] == [readings, 2]


async def test_a_result_keeps_its_backslashes_and_loses_its_nul(
    server_factory: ServerFactory,
) -> None:
    """U+0000 (which PostgreSQL refuses) becomes U+FFFD; the text `\\u0000` (a
    backslash, then `u0000`) is left as it is."""
    server = await server_factory(tools={"python": ["tests.server.loop_tools:echo"]})
    c = server.client
    chat = await server.new_chat(tools=["echo"])
    calls = [("echo", r'{"text": "C:\\u0000 a\u0000b \\\u0000"}')]
    server.upstream.enqueue(Script(calls=calls))
    server.upstream.enqueue(Script(text="ok"))
    async with c.stream("POST", f"/api/chats/{chat['id']}/messages", json={"content": "e"}) as r:
        evts = await read_all(r)
    expected = {"text": "C:\\u0000 a\ufffdb \\\ufffd"}
    assert [e.data["output"] for e in evts if e.type == "tool-output-available"] == [expected]
    reply = (await c.get(f"/api/chats/{chat['id']}")).json()["messages"][-1]
    assert reply["parts"][1]["output"] == expected


def words(request: dict[str, Any]) -> int:
    """The prompt tokens the fake counts for a request: words of its messages."""
    total = 0
    for message in request["messages"]:
        content = message.get("content")
        if isinstance(content, str):
            total += len(content.split())
    return total


async def test_a_stop_in_step_two_still_counts_its_prompt(server: Server) -> None:
    c = server.client
    chat = await server.new_chat(tools=["calculator"])
    server.upstream.enqueue(Script(calls=[("calculator", '{"expression": "1+1"}')]))
    server.upstream.enqueue(Script(tokens=200, delay=0.05))
    async with c.stream("POST", f"/api/chats/{chat['id']}/messages", json={"content": "go"}) as r:
        stream = events(r)
        await until(stream, "start-step")
        await until(stream, "text-delta")  # step 2 streams
        assert (await c.post(f"/api/chats/{chat['id']}/stop")).json() == {"stopped": True}
        [e async for e in stream]
    reply = (await c.get(f"/api/chats/{chat['id']}")).json()["messages"][-1]
    assert reply["status"] == "stopped"
    usage = reply["usage"]
    assert usage["estimated"] is True
    first = words(server.upstream.requests[0])
    assert usage["input_tokens"] > first  # step 1's exact prompt, and step 2's estimated


async def test_a_second_continuation_while_one_runs_is_a_conflict(server: Server) -> None:
    c = server.client
    chat = await server.new_chat()
    server.upstream.enqueue(Script(calls=[("ask_user", '{"question": "?"}')]))
    body = {"content": "pick", "client_tools": [ASK]}
    async with c.stream("POST", f"/api/chats/{chat['id']}/messages", json=body) as r:
        first = await read_all(r)
    message_id = first[0].data["messageId"]
    call_id = next(e.data["toolCallId"] for e in first if e.type == "tool-input-available")
    server.upstream.enqueue(Script(tokens=100, delay=0.05))
    path = f"/api/messages/{message_id}/tool-results"
    results = {"results": [{"toolCallId": call_id, "output": "x"}]}
    async with c.stream("POST", path, json=results) as r:
        await until(events(r), "text-delta")
        again = await c.post(path, json=results)
        assert again.status_code == 409
        assert again.json()["error"]["running"] is True
        await c.post(f"/api/chats/{chat['id']}/stop")
