"""What a tool is to streamkeep: a name, a description, a JSON schema and `call()`.

Every kind of tool (a Python function, a built-in, a tool of an MCP server) is a `Tool`;
the tool loop (`streamkeep.tools.loop`) only ever sees this interface. `call()` gets
the arguments the model sent, parsed from JSON but not validated: validating them
against the schema is the tool's job, and an invalid argument is reported by raising
`ToolArgumentsError`, which the loop hands back to the model like any other failure.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import Any

from streamkeep.llm.types import ToolSpec

# The names every provider accepts for a function (OpenAI's rule; Anthropic's is the same).
NAME_PATTERN = re.compile(r"[a-zA-Z0-9_-]{1,64}")


class ToolError(Exception):
    """A tool failed; its message is what the model (and the user) is shown."""


class ToolArgumentsError(ToolError):
    """The model's arguments do not fit the tool's schema."""


class Tool(ABC):
    """One tool the model may call."""

    #: the name the model calls it by (`NAME_PATTERN`), unique within a `Toolbox`
    name: str
    description: str
    #: the JSON schema of the arguments object
    parameters: dict[str, Any]
    #: where it comes from, shown by `GET /api/tools`: "builtin", "python" or "mcp:SERVER"
    source: str
    #: seconds one call may take; None: the loop's default (`tools.timeout`)
    timeout: float | None = None

    @abstractmethod
    async def call(self, arguments: dict[str, Any]) -> Any:
        """Run the tool; the result must be JSON-serialisable (a str is sent as is).

        Raises `ToolError` (or any exception: its text is the error the model sees).
        Cancelling the task that awaits this must stop the work it started."""

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(name=self.name, description=self.description, parameters=self.parameters)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} ({self.source})>"
