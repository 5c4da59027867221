"""The tools of MCP servers (`[tools.mcp]`), through the official SDK (`mcp` 2.x).

Each server has one session, kept by a task of its own (the SDK's context managers must
be entered and left in one task): it connects (starts a stdio server, or reaches a
streamable HTTP one at its URL), lists the tools, then checks the connection every
`check_interval` seconds by listing them again, at once when the server says they
changed. A connection that fails or dies is made again after a backoff (`backoff`
doubling up to `max_backoff`, reset once a connection has lasted `max_backoff`): a stdio
server is started again, an HTTP server gets a new session. A server that is down offers
no tools, and a call of a tool it offered fails at once.

A call is never retried (a tool may have done something before its connection broke).
Cancelling the task that awaits a call cancels the request on the server: the SDK sends
`notifications/cancelled` for a request whose caller is cancelled, and at protocol
2026-07-28 over streamable HTTP aborts the request's POST instead, which the server takes
as the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import httpx2
import mcp_types as types
from mcp import Client, MCPError, StdioServerParameters
from mcp.client import IncomingMessage, Transport
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

import streamkeep
from streamkeep.config import McpServerConfig
from streamkeep.tools.base import Tool, ToolError
from streamkeep.tools.mcp_content import result_value, tool_name

logger = logging.getLogger(__name__)

_CLIENT_INFO = types.Implementation(name="streamkeep", version=streamkeep.__version__)
_MAX_PAGES = 100  # of one tools/list: a server that pages forever cannot hang the check
_CLOSE_GRACE = 10.0  # seconds a server has to close cleanly (stdio: the SDK's own bounds)


@dataclass(frozen=True, slots=True)
class _Timing:
    backoff: float
    max_backoff: float
    check_interval: float
    request_timeout: float  # bounds connecting and each list, never a call


class McpTool(Tool):
    """A tool of an MCP server, called through that server's session of the moment."""

    def __init__(self, server: _Server, name: str, listed: types.Tool) -> None:
        self.name = name
        self.remote_name = listed.name  # its name on the server
        self.description = listed.description or listed.title or ""
        self.parameters = dict(listed.input_schema)
        self.source = f"mcp:{server.name}"
        self.timeout = server.config.timeout
        self._server = server

    async def call(self, arguments: dict[str, Any]) -> Any:
        return await self._server.call(self.remote_name, arguments)


class McpServers:
    """The tools of the configured MCP servers, each server kept connected (a `ToolSource`).

    `mode` is the SDK's protocol negotiation: "auto" (2026-07-28 where the server speaks
    it, else the initialize handshake) or "legacy" (the handshake only)."""

    def __init__(
        self,
        servers: Mapping[str, McpServerConfig],
        *,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        check_interval: float = 10.0,
        request_timeout: float = 30.0,
        start_timeout: float = 5.0,
        mode: str = "auto",
    ) -> None:
        timing = _Timing(backoff, max_backoff, check_interval, request_timeout)
        self._servers = [_Server(name, config, timing, mode) for name, config in servers.items()]
        self._start_timeout = start_timeout

    def tools(self) -> list[Tool]:
        return [tool for server in self._servers for tool in server.tools]

    async def start(self) -> None:
        """Connect to every server, waiting up to `start_timeout` for the first attempts;
        a server that is down is only logged, and tried again in the background."""
        for server in self._servers:
            server.start()
        waits = [asyncio.ensure_future(server.tried.wait()) for server in self._servers]
        if waits:
            await asyncio.wait(waits, timeout=self._start_timeout)
        for server, wait in zip(self._servers, waits, strict=True):
            wait.cancel()
            if not server.tried.is_set():
                logger.warning(
                    "MCP server %r still connecting after %gs; its tools come when it answers",
                    server.name,
                    self._start_timeout,
                )

    async def aclose(self) -> None:
        await asyncio.gather(*(server.aclose() for server in self._servers))


class _Server:
    """One MCP server: the task keeping a session to it, and the tools it offers now."""

    def __init__(self, name: str, config: McpServerConfig, timing: _Timing, mode: str) -> None:
        self.name = name
        self.config = config
        self.tools: list[McpTool] = []
        self.tried = asyncio.Event()  # the first attempt to connect is over (connected or not)
        self._timing = timing
        self._mode = mode
        self._client: Client | None = None  # while connected
        self._wake = asyncio.Event()  # check (list the tools) now
        self._closing = asyncio.Event()
        self._scope: anyio.CancelScope | None = None
        self._task: asyncio.Task[None] | None = None
        self._failures = 0  # attempts to connect in a row that failed, for the log
        self._up = False  # the current attempt got connected

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"mcp-{self.name}")

    async def call(self, tool: str, arguments: dict[str, Any]) -> Any:
        client = self._client
        if client is None:
            raise ToolError(f"MCP server {self.name!r} is not connected")
        try:
            result = await client.call_tool(tool, arguments)
        except MCPError as exc:
            self._wake.set()  # the connection may be gone: check it now
            raise ToolError(f"MCP server {self.name!r}: {exc.message}") from exc
        except (RuntimeError, ValidationError) as exc:  # a result the SDK refuses
            raise ToolError(f"MCP server {self.name!r}: {exc}") from exc
        return result_value(result)

    async def aclose(self) -> None:
        task = self._task
        if task is None:
            return
        self._closing.set()
        self._wake.set()
        if self._client is None:
            self._cancel()  # connecting or waiting to: nothing to close cleanly
        if not await _finished(task, _CLOSE_GRACE):
            self._cancel()
            if not await _finished(task, _CLOSE_GRACE):
                logger.error("MCP server %r did not close; abandoning it", self.name)
                task.cancel()

    def _cancel(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    async def _run(self) -> None:
        delay = self._timing.backoff
        with anyio.CancelScope() as self._scope:
            while not self._closing.is_set():
                began = anyio.current_time()
                self._up = False
                try:
                    await self._connection()
                except Exception as exc:
                    self._log_end(exc)
                finally:
                    self.tried.set()
                if self._closing.is_set():
                    break
                if anyio.current_time() - began >= self._timing.max_backoff:
                    delay = self._timing.backoff
                with anyio.move_on_after(delay):
                    await self._closing.wait()
                delay = min(delay * 2, self._timing.max_backoff)

    async def _connection(self) -> None:
        """Connect, then keep checking; returns on close, raises when the connection is gone."""
        timeout = self._timing.request_timeout
        with anyio.CancelScope(deadline=anyio.current_time() + timeout) as connecting:
            async with contextlib.AsyncExitStack() as stack:
                client = Client(
                    await self._transport(stack),
                    mode=self._mode,
                    cache=None,  # every list must reach the server: it is the health check
                    message_handler=self._on_message,
                    client_info=_CLIENT_INFO,
                )
                await stack.enter_async_context(client)
                tg = await stack.enter_async_context(anyio.create_task_group())
                try:
                    if _notifies_on_listen(client):
                        await tg.start(self._listen, client)  # before listing: no change unseen
                    await self._refresh(client)
                    connecting.deadline = math.inf
                    self._connected(client)
                    await self._watch(client)
                finally:
                    self._client = None
                    self.tools = []
                    tg.cancel_scope.cancel()
        if connecting.cancelled_caught:
            raise TimeoutError(f"no answer within {timeout:g}s")

    async def _transport(
        self, stack: contextlib.AsyncExitStack
    ) -> StdioServerParameters | Transport:
        config = self.config
        if config.command is not None:
            # The SDK adds `env` to a few safe variables (PATH, HOME...), not to
            # streamkeep's own environment, which holds provider keys.
            return StdioServerParameters(
                command=config.command[0],
                args=config.command[1:],
                env=config.env or None,
                cwd=config.cwd,
            )
        assert config.url is not None  # McpServerConfig: exactly one of command and url
        http = await stack.enter_async_context(
            # No read timeout: a call may take long (the tool loop bounds it) and a
            # listen stream may stay quiet for hours.
            httpx2.AsyncClient(
                headers=config.headers,
                timeout=httpx2.Timeout(self._timing.request_timeout, read=None),
            )
        )
        return streamable_http_client(config.url, http_client=http)

    async def _watch(self, client: Client) -> None:
        while True:
            with anyio.move_on_after(self._timing.check_interval):
                await self._wake.wait()
            if self._closing.is_set():
                return
            self._wake.clear()  # before listing: a change said during the list wakes again
            await self._refresh(client)

    async def _refresh(self, client: Client) -> None:
        listed: list[types.Tool] = []
        cursor: str | None = None
        with anyio.fail_after(self._timing.request_timeout):
            for _ in range(_MAX_PAGES):
                page = await client.list_tools(cursor=cursor)
                listed += page.tools
                cursor = page.next_cursor
                if cursor is None:
                    break
        tools: dict[str, McpTool] = {}
        for remote in listed:
            name = tool_name(self.name, remote.name)
            if name in tools:
                logger.warning(
                    "MCP server %r: tools %r and %r would both be %r; keeping the first",
                    self.name,
                    tools[name].remote_name,
                    remote.name,
                    name,
                )
                continue
            tools[name] = McpTool(self, name, remote)
        if [t.name for t in self.tools] != list(tools):
            logger.info("MCP server %r offers %s", self.name, ", ".join(tools) or "no tools")
        self.tools = list(tools.values())

    async def _on_message(self, message: IncomingMessage) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self._wake.set()
        elif isinstance(message, Exception):
            logger.debug("MCP server %r: %s", self.name, _reason(message))

    async def _listen(
        self, client: Client, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """At 2026-07-28 a server says that its tools changed only on a listen stream (its
        events also reach `_on_message` as notifications)."""
        subscribed = False
        try:
            async with client.listen(tools_list_changed=True) as subscription:
                task_status.started()
                subscribed = True
                async for _event in subscription:
                    self._wake.set()
        except Exception as exc:  # refused or broken: the periodic check remains
            logger.debug("MCP server %r: no listen stream (%s)", self.name, _reason(exc))
        if not subscribed:
            task_status.started()
        self._wake.set()  # a stream that ends may be a connection that did

    def _connected(self, client: Client) -> None:
        self._client = client
        if self._failures:
            logger.warning("MCP server %r is back after %s", self.name, _attempts(self._failures))
        self._failures = 0
        self._up = True
        self.tried.set()

    def _log_end(self, exc: Exception) -> None:
        """A lost connection is logged each time; failed attempts in a row at the 1st,
        2nd, 4th, 8th..., not one line per retry."""
        logger.debug("MCP server %r: connection ended", self.name, exc_info=exc)
        if self._up:
            logger.warning("lost MCP server %r (%s); reconnecting", self.name, _reason(exc))
            return
        n = self._failures = self._failures + 1
        if n & (n - 1) == 0:
            logger.warning(
                "MCP server %r unavailable (%s; %s); retrying in the background",
                self.name,
                _reason(exc),
                _attempts(n),
            )


def _notifies_on_listen(client: Client) -> bool:
    tools = client.server_capabilities.tools
    listed_changes = tools is not None and bool(tools.list_changed)
    return listed_changes and client.protocol_version in MODERN_PROTOCOL_VERSIONS


async def _finished(task: asyncio.Task[None], within: float) -> bool:
    done, _ = await asyncio.wait({task}, timeout=within)
    return bool(done)


def _attempts(n: int) -> str:
    return "1 failed attempt" if n == 1 else f"{n} failed attempts in a row"


def _reason(exc: BaseException) -> str:
    """The first leaf of an exception group (the SDK's task groups wrap their failures)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
