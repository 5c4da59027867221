"""The tool loop: call the model, run the tools it asks for, call it again with the results.

`tool_loop` is the event stream a reply with tools relays (a `ReplyStream`): each model
call's events as they come, then the calls' `ToolOutput`s as each tool finishes (the
calls of one step run in parallel, each within its timeout), then the next call, which
is sent the conversation with those results, up to `max_steps` calls. It ends as a
provider stream does, with one `Finish` or `StreamError`:

- the model answered without calling a tool: its `Finish`;
- it called a tool the client runs (a useChat client's `addToolResult` flow): the
  server's calls of that step are run, then `Finish("tool-calls")` with the client's
  call waiting (the client's result continues the same message: `Continued`);
- the last step still called tools: they are run, then `Finish("tool-calls")` with
  `raw_reason` MAX_STEPS;
- a model call failed: its `StreamError`.

A tool that raises or times out, arguments that are not JSON, or a tool the reply may
not use, give a `ToolOutput` with the error, which the model is sent like a result.

Each step's request is the prompt plus this reply's parts so far, turned into messages by
`assistant_messages`: the very conversation the next turn sends from the stored message,
so what the model saw mid-loop and what it sees later cannot differ.

Usage: the provider's reports are summed over the steps; the loop reports the total
(`final=False` while it runs, `final=True` once, before its end). A step's prompt counts
as estimated until its provider reports it, so a reply stopped mid-step still counts it.

Closing the stream (a stop) closes the model's stream or cancels the running tools,
whichever is under way; a tool cancelled that way is left without output (its part
stays `input-available`, and the model is never sent the call).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import replace
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from streamkeep.generation.parts import UIPart, as_json, assistant_messages, storable_json
from streamkeep.generation.steps import (
    MAX_STEPS,
    ReplyEvent,
    ReplyParts,
    StepFinish,
    StepStart,
    ToolOutput,
)
from streamkeep.llm.errors import LLMError
from streamkeep.llm.events import EventStream, Finish, StreamError, UsageReport
from streamkeep.llm.types import ChatRequest, ToolCall, ToolSpec, Usage
from streamkeep.llm.usage import add_usage, estimate_tokens, prompt_chars
from streamkeep.tools.base import Tool, ToolError

logger = logging.getLogger(__name__)

# A tool result larger than this (as JSON) is refused: it would be stored in the message
# and sent to the model with every later turn.
MAX_OUTPUT_BYTES = 1_000_000
# Seconds the loop waits for cancelled tools to end before it lets them go (a sync
# Python tool's thread cannot be stopped; its result is then dropped).
CANCEL_GRACE = 5.0


async def tool_loop(
    open_step: Callable[[ChatRequest], EventStream],
    request: ChatRequest,
    tools: Sequence[Tool],
    *,
    max_steps: int,
    tool_timeout: float,
    client_tools: Sequence[ToolSpec] = (),
    prefix: Sequence[UIPart] = (),
    tracer: trace.Tracer | None = None,
) -> AsyncGenerator[ReplyEvent, None]:
    """The loop's events (module docstring). `open_step` opens one model call;
    `request.messages` is the prompt; `prefix` the parts of the message a continued
    reply goes on with (its calls answered, the client's results among them); `tracer`
    traces each tool call (GenAI's `execute_tool` span, a child of the current one)."""
    runnable = {tool.name: tool for tool in tools}
    client = {spec.name for spec in client_tools} - runnable.keys()
    specs = [tool.spec for tool in tools] + [s for s in client_tools if s.name in client]
    parts = ReplyParts(prefix, steps=True)
    total: Usage | None = None
    for step in range(1, max_steps + 1):
        if step > 1:
            parts.add(StepStart())
            yield StepStart()
        messages = [*request.messages, *assistant_messages(as_json(parts.parts()))]
        step_request = replace(request, messages=messages, tools=specs)
        if total is not None:
            # This call's prompt is billed even if it ends before its provider counts
            # it (a stop): until then, the estimate of it stands in the numbers so far.
            prompt = Usage(input_tokens=estimate_tokens(prompt_chars(step_request)))
            yield UsageReport(_plus(total, prompt), final=False)
        finish: Finish | None = None
        usage: Usage | None = None
        try:
            stream = open_step(step_request)
        except LLMError as exc:
            yield StreamError(exc)
            return
        try:
            async for event in stream:
                if isinstance(event, UsageReport):
                    if event.final:
                        usage = event.usage
                    else:
                        yield UsageReport(_plus(total, event.usage), final=False)
                    continue
                if isinstance(event, Finish):
                    finish = event
                    break
                if isinstance(event, StreamError):
                    if usage is not None or total is not None:
                        yield UsageReport(_plus(total, usage), final=usage is not None)
                    yield event
                    return
                parts.add(event)
                yield event
        finally:
            await stream.aclose()
        if finish is None:
            return  # the stream ended unfinished: the generation reports it
        total = _plus(total, usage)
        calls = parts.current.tool_calls
        if not calls:
            yield UsageReport(total)
            yield finish
            return
        waiting = [c for c in calls if c.name in client and c.parse_error is None]
        tasks = [
            asyncio.create_task(
                _traced_call(tracer, c, runnable.get(c.name), tool_timeout), name=f"tool-{c.name}"
            )
            for c in calls
            if c not in waiting
        ]
        try:
            pending: set[asyncio.Task[ToolOutput]] = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in tasks:  # those done together, in the order they were called
                    if task in done:
                        output = task.result()
                        parts.add(output)
                        yield output
        finally:
            await _cancel(tasks)
        if waiting or step == max_steps:
            yield UsageReport(total)
            raw = finish.raw_reason if waiting else MAX_STEPS
            yield Finish("tool-calls", finish.response_id, finish.model, raw)
            return
        parts.add(StepFinish())
        yield StepFinish()


def _plus(total: Usage | None, usage: Usage | None) -> Usage:
    if total is None:
        return usage or Usage()
    return total if usage is None else add_usage(total, usage)


async def _traced_call(
    tracer: trace.Tracer | None, call: ToolCall, tool: Tool | None, default_timeout: float
) -> ToolOutput:
    """`_call`, as an `execute_tool` span when traced (no arguments or results in it:
    they are message content)."""
    if tracer is None:
        return await _call(call, tool, default_timeout)
    attributes = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": call.name,
        "gen_ai.tool.call.id": call.id,
    }
    with tracer.start_as_current_span(f"execute_tool {call.name}", attributes=attributes) as span:
        output = await _call(call, tool, default_timeout)
        if output.error is not None:
            span.set_attribute("error.type", "tool_error")
            span.set_status(Status(StatusCode.ERROR, output.error))
        return output


async def _call(call: ToolCall, tool: Tool | None, default_timeout: float) -> ToolOutput:
    """Run one call; every failure is an output with its error, never an exception."""
    if call.parse_error is not None:
        return ToolOutput(call.id, call.name, error=f"invalid arguments: {call.parse_error}")
    if tool is None:
        return ToolOutput(call.id, call.name, error=f"unknown tool {call.name!r}")
    limit = tool.timeout or default_timeout
    try:
        async with asyncio.timeout(limit):
            result = await tool.call(call.arguments)
        return ToolOutput(call.id, call.name, output=_json_value(result))
    except TimeoutError:
        error = f"the tool timed out after {limit:g} s"
    except ToolError as exc:
        error = str(exc) or type(exc).__name__
    except Exception as exc:  # a bug in the tool: the model is told, the loop goes on
        logger.warning("tool %s failed", call.name, exc_info=True)
        error = f"{type(exc).__name__}: {exc}"
    return ToolOutput(call.id, call.name, error=error)


def _json_value(result: Any) -> Any:
    """`result` as JSON can hold it, and as both databases store it (no U+0000).

    Always read back from orjson's JSON, never `result` itself: what orjson writes as
    null (NaN, infinities) the stdlib's encoder, which stores the parts, would write
    as `NaN`, which PostgreSQL's jsonb refuses."""
    try:
        data = orjson.dumps(result)
    except TypeError as exc:
        raise ToolError(f"the tool's result is not JSON: {exc}") from None
    if len(data) > MAX_OUTPUT_BYTES:
        raise ToolError(f"the tool's result is over {MAX_OUTPUT_BYTES} bytes as JSON")
    return storable_json(orjson.loads(data))


async def _cancel(tasks: list[asyncio.Task[ToolOutput]]) -> None:
    """Cancel the tools still running and wait a little for them to end."""
    running = [task for task in tasks if not task.done()]
    for task in running:
        task.cancel()
    if running:
        _, stuck = await asyncio.wait(running, timeout=CANCEL_GRACE)
        for task in stuck:
            logger.warning("tool task %s did not end %gs after its cancel", task, CANCEL_GRACE)
