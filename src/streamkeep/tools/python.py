"""A plain Python function, sync or async, as a tool.

Its parameters' type hints are the schema: a pydantic model is built from the
signature, so `Annotated[str, Field(description=...)]`, defaults, `Literal`, nested
models and lists all say what they say in pydantic, and the same model validates the
model's arguments (unknown ones included) before the function sees them. The docstring
gives the description (its first paragraph) and, from an "Args:" or "Parameters"
section, the descriptions of parameters that have none in their annotation.

    async def weather(city: Annotated[str, Field(description="a city name")]) -> dict:
        '''The weather now in a city.'''

    python_tool(weather, timeout=10)

A sync function runs in a worker thread, so that it never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Annotated, Any, get_args, get_origin

import orjson
from pydantic import BaseModel, ConfigDict, Field, PydanticUserError, ValidationError, create_model
from pydantic.fields import FieldInfo
from pydantic_core import PydanticSerializationError, to_jsonable_python

from streamkeep.tools.base import NAME_PATTERN, Tool, ToolArgumentsError, ToolError
from streamkeep.tools.docstrings import parse_docstring

_MAX_REPORTED_ERRORS = 10


class PythonTool(Tool):
    """`function` as a tool (see the module's docstring); ValueError when it cannot be one."""

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = None,
        source: str = "python",
    ) -> None:
        self.function = function
        self.name = _name(function, name)
        self.source = source
        self.timeout = timeout
        signature = _signature(function, self.name)
        doc = parse_docstring(inspect.getdoc(function))
        self.description = doc.summary if description is None else description
        if not self.description:
            raise ValueError(
                f"tool {self.name!r}: no description (the model needs one): "
                "give the function a docstring or pass description="
            )
        self._model = _arguments_model(self.name, signature, doc.params)
        try:
            self.parameters = self._model.model_json_schema()
        except PydanticUserError as exc:
            raise ValueError(
                f"tool {self.name!r}: no JSON schema for its arguments: {exc}"
            ) from exc
        # (field of the model, parameter, positional-only?) in the signature's order
        self._params = [
            (f"p{i}", p.name, p.kind is p.POSITIONAL_ONLY)
            for i, p in enumerate(signature.parameters.values())
        ]
        # (an object with an `async def __call__` is async too)
        self._is_async = inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
            inspect.getattr_static(function, "__call__", None)
        )

    async def call(self, arguments: dict[str, Any]) -> Any:
        try:
            parsed = self._model.model_validate(arguments)
        except ValidationError as exc:
            raise ToolArgumentsError(_describe(exc)) from None
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for field, param, positional in self._params:
            value = getattr(parsed, field)
            if positional:
                args.append(value)
            else:
                kwargs[param] = value
        if self._is_async:
            result = await self.function(*args, **kwargs)
        else:
            # A thread cannot be killed: when the call is cancelled (the loop's timeout,
            # a stopped reply) the caller stops waiting and the function runs on to its end.
            result = await asyncio.to_thread(self.function, *args, **kwargs)
        return _jsonable(result)


def python_tool(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    source: str = "python",
) -> PythonTool:
    """`fn` as a tool named `name` (default: the function's name); see `PythonTool`."""
    return PythonTool(fn, name=name, description=description, timeout=timeout, source=source)


def _name(function: Callable[..., Any], name: str | None) -> str:
    name = name if name is not None else getattr(function, "__name__", None)
    if name is None:
        raise ValueError(f"{function!r} has no __name__: pass name=")
    if NAME_PATTERN.fullmatch(name) is None:
        raise ValueError(f"tool name {name!r}: 1 to 64 letters, digits, '_' or '-'")
    return name


def _signature(function: Callable[..., Any], name: str) -> inspect.Signature:
    if inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function):
        raise ValueError(f"tool {name!r}: a generator cannot be a tool (return the whole result)")
    try:
        signature = inspect.signature(function, eval_str=True)
    except Exception as exc:  # a forward reference that does not resolve, a builtin, ...
        raise ValueError(f"tool {name!r}: cannot read its signature: {exc}") from exc
    for p in signature.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            star = "*" if p.kind is p.VAR_POSITIONAL else "**"
            raise ValueError(
                f"tool {name!r}: {star}{p.name} cannot be described to a model; "
                "name every parameter"
            )
        if p.annotation is p.empty:
            raise ValueError(
                f"tool {name!r}: parameter {p.name!r} has no type annotation "
                "(the arguments' schema is made from them)"
            )
    return signature


def _arguments_model(
    name: str, signature: inspect.Signature, described: dict[str, str]
) -> type[BaseModel]:
    # Fields are aliased: a parameter may be named like a BaseModel attribute ("json",
    # "copy", "schema"); the alias is what the schema shows and what validation reads.
    fields: dict[str, Any] = {}
    for i, p in enumerate(signature.parameters.values()):
        default = ... if p.default is p.empty else p.default
        doc = None if _has_description(p.annotation) else described.get(p.name)
        # (description=None would erase one given in the annotation)
        info = (
            Field(default, alias=p.name)
            if doc is None
            else Field(default, alias=p.name, description=doc)
        )
        fields[f"p{i}"] = (p.annotation, info)
    try:
        return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)
    except PydanticUserError as exc:
        raise ValueError(f"tool {name!r}: unsupported parameter type: {exc}") from exc


def _has_description(annotation: Any) -> bool:
    if get_origin(annotation) is not Annotated:
        return False
    return any(isinstance(m, FieldInfo) and m.description for m in get_args(annotation)[1:])


def _describe(exc: ValidationError) -> str:
    """Each error as "where: what", e.g. "expression: Field required"."""
    errors = exc.errors(include_url=False)
    lines = [
        f"{'.'.join(str(part) for part in e['loc']) or 'arguments'}: {e['msg']}"
        for e in errors[:_MAX_REPORTED_ERRORS]
    ]
    if len(errors) > _MAX_REPORTED_ERRORS:
        lines.append(f"and {len(errors) - _MAX_REPORTED_ERRORS} more")
    return "; ".join(lines)


def _jsonable(result: Any) -> Any:
    """The result as JSON types (models and dataclasses dumped); ToolError if it has none."""
    if isinstance(result, str):
        return result
    try:
        value = to_jsonable_python(result)
        # What will write it (the stored parts) is orjson: an int beyond 64 bits, say,
        # fails there, so it fails here, where the error can name the tool's result.
        orjson.dumps(value)
    except (PydanticSerializationError, orjson.JSONEncodeError) as exc:
        raise ToolError(
            f"the tool returned a {type(result).__name__}, which is not JSON-serialisable: {exc}"
        ) from None
    return value
