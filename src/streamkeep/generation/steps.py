"""A reply in steps: the tool loop's events, and the parts they build.

A reply that may call tools runs in steps: a model call, then the tools it asked for,
then the next model call with their results (`generation.toolloop`). Its event stream is
the provider events of each call (`streamkeep.llm.events`) plus these:

    StepStart     a model call begins (not the first: a reply's `start` implies it)
    ToolOutput    a call's result or error, as soon as that tool has finished
    StepFinish    a step ended, after its tool outputs (the last one's is implied by
                  the end of the reply)

`ReplyParts` folds such a stream into the message parts that are stored and shown:
each step's parts after a `step-start` part (as the AI SDK's useChat keeps them), a tool
call's part updated in place with its output. A reply continued after a client ran its
tools starts from the parts the message had (`prefix`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from streamkeep.generation.parts import UIPart, completion_to_parts, with_output
from streamkeep.llm.accumulator import Accumulator
from streamkeep.llm.events import StreamEvent, UsageReport
from streamkeep.llm.types import Completion, Usage
from streamkeep.llm.usage import completion_chars
from streamkeep.store.errors import InvalidOperation

STEP_START: UIPart = {"type": "step-start"}


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
ReplyEvent = StreamEvent | LoopEvent

# The loop's final `Finish.raw_reason` when it ended because it reached `max_steps`.
MAX_STEPS = "max_steps"


class ReplyStream(Protocol):
    """What a generation relays: a provider's `EventStream`, or the tool loop's."""

    def __aiter__(self) -> AsyncIterator[ReplyEvent]: ...

    async def __anext__(self) -> ReplyEvent: ...

    async def aclose(self) -> None: ...


class ReplyParts:
    """The parts of one reply as its events arrive; safe to read at any point."""

    __slots__ = (
        "_acc",
        "_done",
        "_done_completions",
        "_outputs",
        "_prefix",
        "_steps",
        "partial_usage",
        "usage",
    )

    def __init__(self, prefix: Sequence[UIPart] = (), *, steps: bool = False) -> None:
        """`steps`: mark each step with a `step-start` part (a reply with tools)."""
        self._prefix = list(prefix)
        self._steps = steps
        self._done: list[UIPart] = []  # the parts of the steps before the current one
        self._done_completions: list[Completion] = []
        self._acc = Accumulator()  # the current step
        self._outputs: dict[str, ToolOutput] = {}  # of the current step's calls
        # The last final usage report (the tool loop's is of every step), and the last
        # report of the numbers so far.
        self.usage: Usage | None = None
        self.partial_usage: Usage | None = None

    def add(self, event: ReplyEvent) -> None:
        if isinstance(event, ToolOutput):
            self._outputs[event.call_id] = event
        elif isinstance(event, StepStart):
            self._done.extend(self._step_parts())
            self._done_completions.append(self._acc.result())
            self._acc = Accumulator()
            self._outputs = {}
        elif isinstance(event, UsageReport):
            if event.final:
                self.usage = event.usage
            else:
                self.partial_usage = event.usage
        elif not isinstance(event, StepFinish):
            self._acc.add(event)

    def _step_parts(self) -> list[UIPart]:
        acc = self._acc
        parts = completion_to_parts(acc.result(), acc.unfinished_calls())
        if self._outputs:
            outputs = self._outputs
            parts = [with_output(p, outputs.get(_call_id(p) or "")) for p in parts]
        return [STEP_START, *parts] if self._steps else parts

    def parts(self) -> list[UIPart]:
        """Every part so far: the prefix, the finished steps, the current one."""
        return [*self._prefix, *self._done, *self._step_parts()]

    def new_parts(self) -> list[UIPart]:
        """The parts of this reply's own steps (without the prefix)."""
        return [*self._done, *self._step_parts()]

    @property
    def current(self) -> Completion:
        """The current step's answer so far."""
        return self._acc.result()

    def chars(self) -> tuple[int, int]:
        """(output, reasoning) characters of every step, for an estimate."""
        output = reasoning = 0
        for completion in (*self._done_completions, self._acc.result()):
            o, r = completion_chars(completion)
            output, reasoning = output + o, reasoning + r
        return output, reasoning


def _call_id(part: UIPart | dict[str, Any]) -> str | None:
    value = part.get("toolCallId")
    return value if isinstance(value, str) else None


def answer_calls(parts: Sequence[dict[str, Any]], results: Sequence[ToolOutput]) -> list[UIPart]:
    """A stored reply's parts with its waiting calls answered by `results` (a client's).

    Every call still waiting (`input-available`) in the reply's last step must be
    answered: InvalidOperation names one left out, or an id that is no call of the
    reply, or says that no call waits. A result for a call answered already (a
    client sending back its whole message) is ignored: the stored answer stands."""
    waiting: set[str] = set()
    answered: set[str] = set()
    for part in parts:
        call_id = _call_id(part)
        if call_id is None or not str(part.get("type", "")).startswith("tool-"):
            continue
        if part.get("state") == "input-available":
            waiting.add(call_id)
        else:
            answered.add(call_id)
    given: dict[str, ToolOutput] = {}
    for result in results:
        if result.call_id in given:
            raise InvalidOperation(f"the call {result.call_id!r} is answered twice")
        if result.call_id not in waiting and result.call_id not in answered:
            raise InvalidOperation(f"no call of this reply has toolCallId {result.call_id!r}")
        if result.call_id in waiting:
            given[result.call_id] = result
    last = {_call_id(p) for p in _last_step(parts)}
    if not waiting & last:
        # e.g. it ended at max_steps, every call run: no result may take it further.
        raise InvalidOperation("the reply waits for no tool result")
    missing = sorted(c for c in waiting - given.keys() if c in last)
    if missing:
        raise InvalidOperation(f"the call {missing[0]!r} waits for a result too")
    return [with_output(p, given.get(_call_id(p) or "")) for p in parts]  # type: ignore[arg-type]


def count_steps(parts: Sequence[Mapping[str, object]]) -> int:
    """Model calls of a reply: its `step-start` parts (a reply without one had one)."""
    return max(1, sum(1 for p in parts if p.get("type") == "step-start"))


def _last_step(parts: Sequence[dict[str, Any]]) -> Sequence[dict[str, Any]]:
    for i in range(len(parts) - 1, -1, -1):
        if parts[i].get("type") == "step-start":
            return parts[i + 1 :]
    return parts
