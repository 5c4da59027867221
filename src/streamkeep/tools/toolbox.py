"""The tools a server offers: built-ins, Python tools, and the tools of its MCP servers.

A chat names the tools it uses (`tools: [names]`); `Toolbox.resolve` turns names into
tools, refusing unknown ones by name. MCP tools come and go with their servers (a server
that is down offers none until it is back), so they are asked for on every lookup
rather than copied in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from streamkeep.config import ToolsConfig
from streamkeep.tools.base import Tool
from streamkeep.tools.builtin import builtin_tools
from streamkeep.tools.registry import load_python_tools, registered_tools


class UnknownTools(LookupError):
    """Names no tool of the toolbox has (`names`, in the order asked). The HTTP API
    answers it as a 422 `invalid_request` on the field `tools`."""

    kind = "invalid_request"
    field = "tools"

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        listed = ", ".join(repr(n) for n in self.names)
        self.message = f"unknown tool{'s' if len(self.names) > 1 else ''}: {listed}"
        super().__init__(self.message)

    @property
    def fields(self) -> list[dict[str, str]]:
        return [{"field": self.field, "message": self.message}]


class ToolSource(Protocol):
    """Tools that change while the server runs (`streamkeep.tools.mcp.McpServers`)."""

    def tools(self) -> list[Tool]: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


class Toolbox:
    def __init__(self, tools: Iterable[Tool] = (), sources: Iterable[ToolSource] = ()) -> None:
        self._static: dict[str, Tool] = {}
        self._sources = list(sources)
        for tool in tools:
            self.add(tool)

    @classmethod
    def from_settings(cls, config: ToolsConfig) -> Toolbox:
        """The built-ins, the tools registered in code (`@tool`), those named by
        import path in `config.python` (each once), and the MCP servers' tools."""
        tools: dict[int, Tool] = {}
        for tool in (*builtin_tools(), *registered_tools(), *load_python_tools(config.python)):
            tools.setdefault(id(tool), tool)
        sources: list[ToolSource] = []
        if config.mcp:
            # Here, not at the top: the MCP SDK takes a second to import (see __init__).
            from streamkeep.tools.mcp import McpServers

            sources.append(McpServers(config.mcp))
        return cls(tools.values(), sources)

    def add(self, tool: Tool) -> None:
        if tool.name in self._static:
            raise ValueError(f"two tools are named {tool.name!r}")
        self._static[tool.name] = tool

    def all(self) -> list[Tool]:
        """Every tool available now, static ones first, each name once."""
        found = dict(self._static)
        for source in self._sources:
            for tool in source.tools():
                found.setdefault(tool.name, tool)
        return list(found.values())

    def get(self, name: str) -> Tool | None:
        tool = self._static.get(name)
        if tool is not None:
            return tool
        for source in self._sources:
            for candidate in source.tools():
                if candidate.name == name:
                    return candidate
        return None

    def resolve(self, names: Iterable[str]) -> list[Tool]:
        """The tools named, in order (each once); UnknownTools names those missing."""
        tools: list[Tool] = []
        missing: list[str] = []
        for name in dict.fromkeys(names):
            tool = self.get(name)
            if tool is None:
                missing.append(name)
            else:
                tools.append(tool)
        if missing:
            raise UnknownTools(missing)
        return tools

    async def start(self) -> None:
        for source in self._sources:
            await source.start()

    async def aclose(self) -> None:
        for source in self._sources:
            await source.aclose()
