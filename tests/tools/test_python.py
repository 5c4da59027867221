"""Python functions as tools: the schema from the signature, validation, how they run."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterator
from datetime import date
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field

from streamkeep.tools import PythonTool, ToolArgumentsError, ToolError, python_tool


class Point(BaseModel):
    x: int
    y: int = 0


@dataclasses.dataclass
class Pair:
    left: str
    right: date


# --- the schema ---------------------------------------------------------------


def test_required_defaults_and_optional_make_the_schema() -> None:
    def forecast(city: str, days: int = 3, units: str | None = None) -> str:
        """The weather to come.

        More prose the model does not need.
        """
        return city

    made = python_tool(forecast)
    assert made.name == "forecast"
    assert made.description == "The weather to come."
    assert made.source == "python"
    assert made.parameters == {
        "additionalProperties": False,
        "properties": {
            "city": {"title": "City", "type": "string"},
            "days": {"default": 3, "title": "Days", "type": "integer"},
            "units": {
                "anyOf": [{"type": "string"}, {"type": "null"}],
                "default": None,
                "title": "Units",
            },
        },
        "required": ["city"],
        "title": "forecast",
        "type": "object",
    }
    assert made.spec.parameters == made.parameters


def test_literal_list_and_nested_model_make_the_schema() -> None:
    def plot(points: list[Point], tags: list[str], style: Literal["line", "bar"] = "line") -> int:
        """Plot points."""
        return len(points)

    schema = python_tool(plot).parameters
    assert schema["properties"]["points"] == {
        "items": {"$ref": "#/$defs/Point"},
        "title": "Points",
        "type": "array",
    }
    assert schema["$defs"]["Point"]["required"] == ["x"]
    assert schema["properties"]["style"]["enum"] == ["line", "bar"]
    assert schema["properties"]["tags"]["items"] == {"type": "string"}
    assert schema["required"] == ["points", "tags"]


def test_descriptions_come_from_annotations_then_the_docstring() -> None:
    def book(
        room: Annotated[str, Field(description="the room's code")],
        hours: int,
        who: Annotated[str, Field(description="from the annotation")] = "me",
    ) -> str:
        """Book a room.

        Args:
            room: not used, the annotation says it.
            hours (int): how long, in hours,
                at most 8.
            who: not used either.

        Returns:
            a booking code.
        """
        return room

    properties = python_tool(book).parameters["properties"]
    assert properties["room"]["description"] == "the room's code"
    assert properties["hours"]["description"] == "how long, in hours, at most 8."
    assert properties["who"]["description"] == "from the annotation"


def test_numpy_docstrings_describe_parameters() -> None:
    def scale(factor: float, label: str = "") -> float:
        """Scale something.

        Parameters
        ----------
        factor : float
            by how much.
        label : str
            a name for it.

        Returns
        -------
        float
        """
        return factor

    made = python_tool(scale)
    assert made.description == "Scale something."
    assert made.parameters["properties"]["factor"]["description"] == "by how much."
    assert made.parameters["properties"]["label"]["description"] == "a name for it."


# --- what cannot be a tool ---------------------------------------------------------


def _varargs(*values: int) -> int:
    """Sum."""
    return sum(values)


def _kwargs(**options: str) -> str:
    """Join."""
    return ",".join(options)


def _untyped(a, b: int) -> int:  # type: ignore[no-untyped-def]
    """Untyped."""
    return b


def _undocumented(a: int) -> int:
    return a


def _generator(n: int) -> Iterator[int]:
    """Count."""
    yield from range(n)


class Opaque:
    pass


def _takes_an_opaque_object(thing: Opaque) -> None:
    """Pydantic knows nothing of Opaque."""


async def test_name_and_description_may_be_given() -> None:
    made = python_tool(_undocumented, name="identity", description="Echo a.", timeout=2.5)
    assert (made.name, made.description, made.timeout) == ("identity", "Echo a.", 2.5)
    assert await made.call({"a": 1}) == 1


@pytest.mark.parametrize(
    ("function", "name", "expected"),
    [
        (_varargs, None, "*values cannot be described to a model"),
        (_kwargs, None, "**options cannot be described to a model"),
        (_untyped, None, "parameter 'a' has no type annotation"),
        (_undocumented, None, "no description"),
        (_generator, None, "a generator cannot be a tool"),
        (_takes_an_opaque_object, None, "unsupported parameter type"),
        (lambda x: x, None, "tool name '<lambda>'"),
        (_undocumented, "has space", "tool name 'has space'"),
        (_undocumented, "x" * 65, "1 to 64 letters"),
    ],
)
def test_what_cannot_be_a_tool_is_refused_at_registration(
    function: Any, name: str | None, expected: str
) -> None:
    with pytest.raises(ValueError, match=expected.replace("*", r"\*")):
        python_tool(function, name=name)


# --- arguments -------------------------------------------------------------------


async def test_arguments_are_validated_and_coerced_like_pydantic() -> None:
    def move(
        point: Point, steps: list[int], mode: Literal["walk", "run"] = "walk"
    ) -> dict[str, Any]:
        """Move a point."""
        assert isinstance(point, Point)  # the function gets the model, not a dict
        return {"x": point.x + sum(steps), "mode": mode}

    made = python_tool(move)
    result = await made.call({"point": {"x": "1"}, "steps": [2, "3"]})
    assert result == {"x": 6, "mode": "walk"}


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({}, "point: Field required; steps: Field required"),
        ({"point": {"x": 1}, "steps": ["a"]}, "steps.0: Input should be a valid integer"),
        ({"point": {"y": 1}, "steps": []}, "point.x: Field required"),
        ({"point": {"x": 1}, "steps": [], "mode": "fly"}, "mode: Input should be 'walk' or 'run'"),
        ({"point": {"x": 1}, "steps": [], "speed": 3}, "speed: Extra inputs are not permitted"),
    ],
)
async def test_invalid_arguments_name_the_field_and_the_problem(
    arguments: dict[str, Any], expected: str
) -> None:
    def move(point: Point, steps: list[int], mode: Literal["walk", "run"] = "walk") -> int:
        """Move a point."""
        raise AssertionError("never called with invalid arguments")

    with pytest.raises(ToolArgumentsError) as caught:
        await python_tool(move).call(arguments)
    assert expected in str(caught.value)


async def test_parameters_named_like_model_attributes_and_positional_ones_work() -> None:
    def render(json: str, /, schema: int, copy: bool = False) -> str:
        """Render."""
        return f"{json}-{schema}-{copy}"

    made = python_tool(render)
    assert set(made.parameters["properties"]) == {"json", "schema", "copy"}
    assert await made.call({"json": "a", "schema": 2}) == "a-2-False"


# --- results ---------------------------------------------------------------------


async def test_results_become_json() -> None:
    def describe(kind: str) -> Any:
        """Something of a kind."""
        return {
            "model": Point(x=1),
            "dataclass": Pair("a", date(2026, 1, 2)),
            "tuple": (1, 2),
        }[kind]

    made = python_tool(describe)
    assert await made.call({"kind": "model"}) == {"x": 1, "y": 0}
    assert await made.call({"kind": "dataclass"}) == {"left": "a", "right": "2026-01-02"}
    assert await made.call({"kind": "tuple"}) == [1, 2]


@pytest.mark.parametrize(("value", "type_name"), [(object(), "object"), (2**70, "int")])
async def test_a_result_json_cannot_carry_is_an_error_naming_its_type(
    value: Any, type_name: str
) -> None:
    made = python_tool(lambda: value, name="odd", description="Odd.")
    with pytest.raises(ToolError, match=f"returned a {type_name}, which is not JSON-serialisable"):
        await made.call({})


async def test_what_the_function_raises_reaches_the_caller() -> None:
    def fail(why: str) -> None:
        """Fail."""
        raise ToolError(why)

    with pytest.raises(ToolError, match="out of stock"):
        await python_tool(fail).call({"why": "out of stock"})


# --- how it runs -----------------------------------------------------------------


async def test_a_sync_tool_runs_in_a_thread_while_the_loop_goes_on() -> None:
    started = threading.Event()
    released = threading.Event()

    def wait_for_the_loop() -> str:
        """Wait until the event loop releases it."""
        started.set()
        # On the loop's own thread this would wait out its 10 s: nothing could release it.
        return "released" if released.wait(timeout=10) else "the loop was blocked"

    call = asyncio.create_task(python_tool(wait_for_the_loop).call({}))
    assert await asyncio.to_thread(started.wait, 10)
    released.set()
    assert await call == "released"


async def test_a_cancelled_sync_tool_is_no_longer_waited_for() -> None:
    started = threading.Event()
    released = threading.Event()
    finished = threading.Event()

    def slow() -> None:
        """Run until released."""
        started.set()
        released.wait(timeout=10)
        finished.set()

    call = asyncio.create_task(python_tool(slow).call({}))
    assert await asyncio.to_thread(started.wait, 10)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    # The thread cannot be stopped: it is still running, and ends when it ends.
    assert not finished.is_set()
    released.set()
    assert await asyncio.to_thread(finished.wait, 10)


async def test_an_async_tool_runs_on_the_loop() -> None:
    async def where() -> int:
        """The thread it runs in."""
        await asyncio.sleep(0)
        return threading.get_ident()

    assert await python_tool(where).call({}) == threading.get_ident()


async def test_an_object_with_an_async_call_is_an_async_tool() -> None:
    class Counter:
        """Count the calls."""

        def __init__(self) -> None:
            self.calls = 0

        async def __call__(self, step: int = 1) -> int:
            self.calls += step
            return threading.get_ident()

    counter = Counter()
    with pytest.raises(ValueError, match="has no __name__: pass name="):
        python_tool(counter)
    made = python_tool(counter, name="counter")
    assert made.description == "Count the calls."
    assert await made.call({"step": 2}) == threading.get_ident()
    assert counter.calls == 2


async def test_cancelling_an_async_tool_cancels_its_work() -> None:
    started = asyncio.Event()
    seen: list[str] = []

    async def forever() -> None:
        """Wait forever."""
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    call = asyncio.create_task(python_tool(forever).call({}))
    await started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert seen == ["cancelled"]


async def test_the_timeout_is_the_callers_to_enforce() -> None:
    seen: list[str] = []

    async def forever() -> None:
        """Wait forever."""
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    made = python_tool(forever, timeout=0.05)
    assert isinstance(made, PythonTool)
    # What the tool loop does with `timeout`: the call itself never gives up.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(made.call({}), made.timeout)
    assert seen == ["cancelled"]
