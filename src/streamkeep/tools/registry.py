"""Where Python tools come from: the `@tool` decorator, and import paths in the settings.

    @tool
    def roll(sides: int = 6) -> int:
        '''Roll a die.'''

    @tool(name="dice", timeout=5)
    async def roll_async(sides: int = 6) -> int: ...

    load_python_tools(["mypackage.tools:roll", "mypackage.tools:summarise"])

`settings.tools.python` names functions as "package.module:function"; the function may
be plain or already a tool (decorated: the decorator returns the `PythonTool`).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any, overload

from streamkeep.tools.base import Tool
from streamkeep.tools.python import PythonTool

_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")

# Decorators run when their module is imported, before any app or settings exist, so
# what they register lives as long as the process: the one process-wide state here.
_registered: dict[str, PythonTool] = {}


@overload
def tool(function: Callable[..., Any], /) -> PythonTool: ...


@overload
def tool(
    *, name: str | None = None, description: str | None = None, timeout: float | None = None
) -> Callable[[Callable[..., Any]], PythonTool]: ...


def tool(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
) -> PythonTool | Callable[[Callable[..., Any]], PythonTool]:
    """Make `function` a `PythonTool` and register it (see `registered_tools`)."""

    def register(fn: Callable[..., Any]) -> PythonTool:
        made = PythonTool(fn, name=name, description=description, timeout=timeout)
        known = _registered.get(made.name)
        # The same function again is its module imported again (a reload): it replaces.
        if known is not None and _origin(known.function) != _origin(fn):
            raise ValueError(
                f"two tools are named {made.name!r}: {_origin(known.function)} and {_origin(fn)}"
            )
        _registered[made.name] = made
        return made

    return register if function is None else register(function)


def registered_tools() -> list[Tool]:
    """The tools `@tool` has made so far in this process, in the order they were made."""
    return list(_registered.values())


def load_python_tools(paths: list[str]) -> list[Tool]:
    """The tools named "package.module:function"; ImportError/ValueError name a bad entry."""
    return [_load(entry) for entry in paths]


def _load(entry: str) -> Tool:
    module_name, _, attribute = entry.partition(":")
    if not _DOTTED.fullmatch(module_name) or not _DOTTED.fullmatch(attribute):
        raise ValueError(f"tools.python entry {entry!r}: expected 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(f"{missing}."):
            raise ImportError(f"tools.python entry {entry!r}: no module named {missing!r}") from exc
        raise ImportError(
            f"tools.python entry {entry!r}: importing {module_name!r} failed: {exc}"
        ) from exc
    except Exception as exc:  # the module's own code failed: say so, with its error
        raise ImportError(
            f"tools.python entry {entry!r}: importing {module_name!r} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    found: Any = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ImportError(
                f"tools.python entry {entry!r}: module {module_name!r} has no {attribute!r}"
            ) from None
    if isinstance(found, Tool):
        return found
    if not callable(found):
        raise ValueError(
            f"tools.python entry {entry!r}: {attribute!r} is not callable "
            f"(it is of type {type(found).__name__})"
        )
    try:
        return PythonTool(found)
    except ValueError as exc:
        raise ValueError(f"tools.python entry {entry!r}: {exc}") from exc


def _origin(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
