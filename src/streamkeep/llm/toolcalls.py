"""Assemble streamed tool calls from vendor deltas, for every provider.

An adapter calls `feed(index, id, name, arguments)` for each tool-call fragment its
vendor sends and forwards the `ToolCallStart` / `ToolCallDelta` events it gets back;
at the end of the response `finish(truncated=...)` gives one `ToolCallComplete` per
call, with the arguments parsed (`StreamParser.end` forwards them). OpenAI-compatible
`tool_calls` deltas come here as they are; an Anthropic tool_use block is a fragment
with its block's index, id, name and (usually empty) input, and each input_json_delta
one with that index and the text.

Which call a fragment belongs to. Empty strings in `id` and `name` count as absent
(vendors send `"id": ""` and `"name": ""` on continuation chunks). In this order:

1. An `id` already seen belongs to that call, unless the fragment carries a different
   `index` (then the vendor reused an id for another call: read on).
2. With an `index`: the latest call at that index takes the fragment, unless the fragment
   brings both a new `id` and a `name` while that call already has a name; then it is a
   new call at the same index (Ollama sends parallel calls all at index 0, told apart
   only by id). So a new id on every chunk of one call (no name on the continuations)
   stays one call. No call at that index yet: a new call.
3. Without an `index` (missing or null): a fragment with a `name` starts a new call when
   the latest call already has one (Gemini and Ollama send each call whole, unindexed);
   otherwise it continues the latest call. No call yet: a new call.

How a call is reported:
- A call is held until it has a name: `ToolCallStart` never carries an empty name.
  Arguments that arrived before the name follow the start as one `ToolCallDelta`.
- Its id is the first vendor id seen before the start; with none (or one already used
  in this response) it gets a generated `call_<24 hex>`. The id never changes after.
- A name on a continuation is ignored: a started call keeps its name.
- `arguments` may be text (appended as it comes) or an already-parsed JSON value
  (Ollama's native shape), which is serialised and appended as text; an empty
  object adds nothing, so `{}` followed by text deltas is just the text.
- `finish()` reports every call, in the order the calls opened: empty, blank or
  `"null"` arguments parse to `{}`; text that is not JSON, or JSON that is not an
  object, gives `arguments={}` with `parse_error` set and the text kept in
  `raw_arguments`. With `truncated=True` (finish_reason "length", or a body that
  just stopped) the error says the arguments were cut off, and a call with no
  arguments at all is reported as cut off too: a truncated call is always reported,
  never dropped. A call that never got a name is reported with `name=""` and a
  `parse_error`. A fragment with no id, name or arguments at all opens nothing worth
  reporting and is dropped.
- A lone surrogate escape (`"\\ud800"`) in a string of the arguments parses to
  U+FFFD, as everywhere provider text enters (see `streamkeep.text`).
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import orjson

from streamkeep.llm.events import ToolCallComplete, ToolCallDelta, ToolCallStart
from streamkeep.llm.types import ToolCall
from streamkeep.text import loads_repairing

ToolCallEvent = ToolCallStart | ToolCallDelta

_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}


@dataclass(slots=True)
class _Call:
    index: int | None
    vendor_id: str | None = None
    name: str = ""
    call_id: str = ""  # set when the call starts
    chunks: list[str] = field(default_factory=list)


class ToolCallAssembler:
    __slots__ = ("_by_id", "_by_index", "_calls", "_used_ids")

    def __init__(self) -> None:
        self._calls: list[_Call] = []
        self._by_index: dict[int, _Call] = {}
        self._by_id: dict[str, _Call] = {}
        self._used_ids: set[str] = set()

    def __bool__(self) -> bool:
        """True while some call is open (fed and not yet finished)."""
        return bool(self._calls)

    def feed(
        self,
        index: int | None,
        id: str | None,
        name: str | None,
        arguments: str | dict[str, Any] | None,
    ) -> list[ToolCallEvent]:
        """Take one vendor fragment; return the events it makes visible."""
        id = id or None
        name = name or None
        call = self._route(index, id, name) or self._open(index)
        if id is not None:
            self._by_id.setdefault(id, call)
            if call.vendor_id is None:
                call.vendor_id = id
        if name is not None and not call.name:
            call.name = name
        text = _as_text(arguments)
        if text:
            call.chunks.append(text)
        if call.call_id:
            return [ToolCallDelta(call.call_id, text)] if text else []
        if not call.name:
            return []
        call.call_id = self._unique_id(call.vendor_id)
        events: list[ToolCallEvent] = [ToolCallStart(call.call_id, call.name)]
        if call.chunks:
            events.append(ToolCallDelta(call.call_id, "".join(call.chunks)))
        return events

    def finish(
        self, *, truncated: bool = False, cut: Collection[int] = ()
    ) -> list[ToolCallComplete]:
        """End of the response: every open call, complete, in the order they opened.
        `truncated` cuts off every call; `cut` only the calls at those indexes (a
        vendor's block that never ended, while the others did)."""
        done: list[ToolCallComplete] = []
        for call in self._calls:
            if not (call.name or call.vendor_id or call.chunks):
                continue
            if not call.call_id:
                call.call_id = self._unique_id(call.vendor_id)
            done.append(ToolCallComplete(_complete(call, truncated or call.index in cut)))
        self._calls.clear()
        self._by_index.clear()
        self._by_id.clear()
        return done

    def _route(self, index: int | None, id: str | None, name: str | None) -> _Call | None:
        if id is not None:
            known = self._by_id.get(id)
            if known is not None and (index is None or known.index in (None, index)):
                if known.index is None and index is not None:
                    known.index = index
                    self._by_index[index] = known
                return known
        if index is not None:
            current = self._by_index.get(index)
            if current is None:
                return None
            if id is not None and name is not None and current.name:
                return None
            return current
        latest = self._calls[-1] if self._calls else None
        if latest is None or (name is not None and latest.name):
            return None
        return latest

    def _open(self, index: int | None) -> _Call:
        call = _Call(index)
        self._calls.append(call)
        if index is not None:
            self._by_index[index] = call
        return call

    def _unique_id(self, vendor_id: str | None) -> str:
        call_id = vendor_id
        while call_id is None or call_id in self._used_ids:
            call_id = f"call_{secrets.token_hex(12)}"
        self._used_ids.add(call_id)
        return call_id


def _as_text(arguments: object) -> str:
    # An empty object says no more than nothing (Anthropic opens every call with {}).
    if arguments is None or (isinstance(arguments, dict) and not arguments):
        return ""
    if isinstance(arguments, str):
        return arguments
    return orjson.dumps(arguments).decode()


def _complete(call: _Call, truncated: bool) -> ToolCall:
    raw = "".join(call.chunks)
    arguments, error = parse_arguments(raw, truncated=truncated)
    if not call.name:
        error = "the provider never sent the tool's name" + (f"; {error}" if error else "")
    return ToolCall(call.call_id, call.name, arguments, raw_arguments=raw, parse_error=error)


def parse_arguments(raw: str, *, truncated: bool = False) -> tuple[dict[str, Any], str | None]:
    """Parse argument text to a JSON object: `(arguments, None)` or `({}, why not)`."""
    text = raw.strip()
    if text == "null":
        return {}, None
    if not text:
        if truncated:
            return {}, "the response was cut off before its arguments"
        return {}, None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        value = loads_repairing(text)  # a lone surrogate escape: U+FFFD
        if value is None:
            if truncated:
                return {}, f"arguments cut off with the response: {exc}"
            return {}, f"arguments are not valid JSON: {exc}"
    if not isinstance(value, dict):
        return {}, f"arguments are a JSON {_JSON_KINDS.get(type(value), 'value')}, not an object"
    return value, None
