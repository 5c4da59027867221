"""The tool loop with an MCP server's tools, end to end: `[tools.mcp]` in the settings,
the server started by streamkeep over stdio (tests/tools/mcp_server.py, the `mcp` SDK's
own server class), a scripted model calling its tools through the chat API."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.fakes.upstream import Script
from tests.server.conftest import ServerFactory
from tests.server.sse import events, read_all, until
from tests.tools.conftest import SERVER, recorded
from tests.tools.conftest import until as eventually

pytestmark = pytest.mark.slow  # starts an MCP server process per test


def mcp_settings(record: Path) -> dict[str, object]:
    command = [sys.executable, str(SERVER), "--record", str(record)]
    return {"tools": {"mcp": {"test": {"command": command}}}}


async def test_mcp_tools_are_listed_and_called_by_the_loop(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = await server_factory(**mcp_settings(tmp_path / "record"))
    c = server.client
    listed = {t["name"]: t for t in (await c.get("/api/tools")).json()["items"]}
    assert listed["test__add"]["source"] == "mcp:test"
    assert listed["test__add"]["input_schema"]["properties"].keys() == {"a", "b"}
    chat = await server.new_chat(tools=["test__add", "test__fail"])
    calls = [("test__add", '{"a": 2, "b": 40}'), ("test__fail", '{"message": "nope"}')]
    server.upstream.enqueue(Script(calls=calls))
    server.upstream.enqueue(Script(text="2 + 40 = 42."))
    async with c.stream("POST", f"/api/chats/{chat['id']}/messages", json={"content": "add"}) as r:
        evts = await read_all(r)
    outputs = [e.data.get("output") for e in evts if e.type == "tool-output-available"]
    errors = [e.data["errorText"] for e in evts if e.type == "tool-output-error"]
    assert outputs == [42] or outputs == ["42"]
    assert len(errors) == 1 and errors[0].endswith("nope")  # the MCP server words it
    reply = (await c.get(f"/api/chats/{chat['id']}")).json()["messages"][-1]
    assert reply["status"] == "complete"
    assert [p["type"] for p in reply["parts"]] == [
        "step-start",
        "tool-test__add",
        "tool-test__fail",
        "step-start",
        "text",
    ]


async def test_stop_during_an_mcp_call_cancels_it_on_the_mcp_server(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    record = tmp_path / "record"
    server = await server_factory(**mcp_settings(record))
    c = server.client
    chat = await server.new_chat(tools=["test__slow"])
    server.upstream.enqueue(Script(calls=[("test__slow", '{"seconds": 60}')]))
    async with c.stream("POST", f"/api/chats/{chat['id']}/messages", json={"content": "go"}) as r:
        stream = events(r)
        await until(stream, "tool-input-available")
        await eventually(lambda: "start" in recorded(record), "started")
        assert (await c.post(f"/api/chats/{chat['id']}/stop")).json() == {"stopped": True}
        rest = [e.type async for e in stream]
    assert rest[-3:] == ["abort", "finish", "[DONE]"]
    await eventually(lambda: "cancelled" in recorded(record), "cancelled on the MCP server")
    reply = (await c.get(f"/api/chats/{chat['id']}")).json()["messages"][-1]
    assert reply["status"] == "stopped"
    assert reply["parts"][-1]["state"] == "input-available"
