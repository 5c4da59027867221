"""McpServers against real MCP servers (tests/tools/mcp_server.py), over stdio and HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from streamkeep.config import McpServerConfig
from streamkeep.tools import McpServers, Tool, Toolbox, ToolError, UnknownTools
from streamkeep.tools.base import NAME_PATTERN
from streamkeep.tools.mcp_content import tool_name
from tests.tools.conftest import HttpServer, alive, pids, recorded, running, stdio_config, until

TOOLS = {"add", "weather", "fail", "slow", "picture", "environment", "header", "grow"}


def by_name(mcp: McpServers) -> dict[str, Tool]:
    return {tool.name: tool for tool in mcp.tools()}


async def test_tools_are_listed_with_prefixed_names_and_called(config: McpServerConfig) -> None:
    async with running({"t": config.model_copy(update={"timeout": 7.0})}) as mcp:
        tools = by_name(mcp)
        echo_name = tool_name("t", "echo.text")
        assert set(tools) == {f"t__{name}" for name in TOOLS} | {echo_name}
        assert all(NAME_PATTERN.fullmatch(name) for name in tools)

        add = tools["t__add"]
        assert (add.source, add.timeout, add.description) == ("mcp:t", 7.0, "Add two integers.")
        assert add.parameters["properties"]["a"]["type"] == "integer"
        assert add.parameters["required"] == ["a", "b"]
        assert await add.call({"a": 2, "b": 3}) == "5"
        assert await tools["t__weather"].call({"city": "Oslo"}) == {"city": "Oslo", "celsius": 21.5}
        assert await tools[echo_name].call({"text": "through a dot"}) == "through a dot"
        assert await tools["t__picture"].call({}) == "a picture:\n[image/png, 4 bytes]"


async def test_a_toolbox_starts_and_closes_them(record: Path) -> None:
    toolbox = Toolbox(sources=[McpServers({"t": stdio_config(record)})])
    await toolbox.start()
    try:
        [add] = toolbox.resolve(["t__add"])
        assert await add.call({"a": 1, "b": 2}) == "3"
    finally:
        await toolbox.aclose()
    assert toolbox.all() == []
    assert not alive(pids(record)[0])


async def test_errors_are_tool_errors(config: McpServerConfig) -> None:
    async with running({"t": config}) as mcp:
        tools = by_name(mcp)
        with pytest.raises(ToolError, match="boom"):
            await tools["t__fail"].call({"message": "boom"})
        # Arguments are the server's to check: it answers isError.
        with pytest.raises(ToolError, match="validation error"):
            await tools["t__add"].call({"a": "two"})
        assert await tools["t__add"].call({"a": 1, "b": 1}) == "2"


async def test_a_stdio_server_gets_its_env_and_cwd(
    record: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMKEEP_TEST_SECRET", "not for MCP servers")
    config = stdio_config(record).model_copy(
        update={"env": {"GREETING": "hi"}, "cwd": str(tmp_path)}
    )
    async with running({"t": config}) as mcp:
        environment = by_name(mcp)["t__environment"]
        assert await environment.call({"name": "GREETING"}) == "hi"
        assert await environment.call({"name": "cwd"}) == str(tmp_path)
        # Only the SDK's few safe variables (PATH, HOME...) are passed on.
        assert await environment.call({"name": "STREAMKEEP_TEST_SECRET"}) == "-"


async def test_an_http_server_gets_its_headers(http_server: HttpServer) -> None:
    http_server.start()
    config = http_server.config().model_copy(update={"headers": {"Authorization": "Bearer k"}})
    async with running({"t": config}) as mcp:
        assert await by_name(mcp)["t__header"].call({"name": "authorization"}) == "Bearer k"


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_cancelling_a_call_cancels_it_on_the_server(
    config: McpServerConfig, record: Path, mode: str
) -> None:
    async with running({"t": config}, mode=mode) as mcp:
        tools = by_name(mcp)
        call = asyncio.create_task(tools["t__slow"].call({"seconds": 60}))
        await until(lambda: "start" in recorded(record), "started")
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await until(lambda: "cancelled" in recorded(record), "cancelled on the server")
        assert await tools["t__add"].call({"a": 1, "b": 2}) == "3"  # the session goes on


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_change_of_tools_is_listed_at_once(config: McpServerConfig, mode: str) -> None:
    # Checks too rare to matter: only the server's notification can show the new tool.
    async with running({"t": config}, mode=mode, check_interval=3600) as mcp:
        assert await by_name(mcp)["t__grow"].call({}) == "grown"
        await until(lambda: "t__extra" in by_name(mcp), "listed")
        assert await by_name(mcp)["t__extra"].call({}) == "extra"


async def test_a_call_whose_connection_breaks_fails(config: McpServerConfig, record: Path) -> None:
    async with running({"t": config}) as mcp:
        call = asyncio.create_task(by_name(mcp)["t__slow"].call({"seconds": 60}))
        await until(lambda: "start" in recorded(record), "started")
        os.kill(pids(record)[0], signal.SIGKILL)
        with pytest.raises(ToolError, match="'t'"):
            await call


@pytest.mark.slow
async def test_a_killed_stdio_server_is_started_again(record: Path) -> None:
    async with running({"t": stdio_config(record)}) as mcp:
        add = by_name(mcp)["t__add"]
        [first] = pids(record)
        os.kill(first, signal.SIGKILL)
        await until(lambda: not mcp.tools(), "withdrawn")
        with pytest.raises(ToolError, match="not connected"):
            await add.call({"a": 1, "b": 2})
        await until(mcp.tools, "listed again")
        assert pids(record)[1:] and first not in pids(record)[1:]
        assert await add.call({"a": 1, "b": 2}) == "3"  # the tool taken before works again
        assert await by_name(mcp)["t__add"].call({"a": 2, "b": 2}) == "4"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_an_http_server_restarted_is_reconnected(http_server: HttpServer, mode: str) -> None:
    http_server.start()
    async with running({"t": http_server.config()}, mode=mode) as mcp:
        add = by_name(mcp)["t__add"]
        http_server.kill()
        await until(lambda: not mcp.tools(), "withdrawn")
        with pytest.raises(ToolError, match="not connected"):
            await add.call({"a": 1, "b": 2})
        http_server.start()  # the same port
        await until(mcp.tools, "listed again")
        assert await add.call({"a": 1, "b": 2}) == "3"


@pytest.mark.slow
async def test_servers_down_at_start_do_not_fail_it(http_server: HttpServer, record: Path) -> None:
    broken = McpServerConfig(command=[sys.executable, "-c", "pass"])  # exits at once
    async with running({"later": http_server.config(), "broken": broken}) as mcp:
        toolbox = Toolbox(sources=[mcp])
        with pytest.raises(UnknownTools):
            toolbox.resolve(["later__add"])
        http_server.start()
        await until(mcp.tools, "listed")
        assert {tool.source for tool in toolbox.all()} == {"mcp:later"}
        [add] = toolbox.resolve(["later__add"])
        assert await add.call({"a": 1, "b": 2}) == "3"


async def test_closing_stops_the_servers_and_ends_calls(tmp_path: Path) -> None:
    records = [tmp_path / "a.txt", tmp_path / "b.txt"]
    async with running({"a": stdio_config(records[0]), "b": stdio_config(records[1])}) as mcp:
        call = asyncio.create_task(by_name(mcp)["a__slow"].call({"seconds": 60}))
        await until(lambda: "start" in recorded(records[0]), "started")
        await mcp.aclose()
        assert mcp.tools() == []
        with pytest.raises(ToolError):
            await call
    started = [pid for r in records for pid in pids(r)]
    assert len(started) == 2
    assert not [pid for pid in started if alive(pid)]
