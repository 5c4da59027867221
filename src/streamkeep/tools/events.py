"""The tool loop's own events, mixed into the model's stream events.

`streamkeep.tools.loop` yields the provider events of each model call (see
`streamkeep.llm.events`) plus these; the generation stores them as message parts and
encodes them as UI message stream chunks:

    StepStart        a model call begins (not for the first one: `start` implies it)
    ToolOutput       a call's result or error, as soon as that tool has finished
    StepFinish       a step ended (after its tool outputs); the last step's is implied
                     by the end of the reply
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True, frozen=True)
class StepStart:
    pass


@dataclass(slots=True, frozen=True)
class StepFinish:
    pass


@dataclass(slots=True, frozen=True)
class ToolOutput:
    """The result of the call `call_id`: `output` when it worked, else `error`."""

    call_id: str
    name: str
    output: Any = None
    error: str | None = None


LoopEvent = StepStart | StepFinish | ToolOutput
