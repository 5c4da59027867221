"""What every vendor's stream parser is, and the part they share.

A parser turns one response's body bytes into typed events, with no I/O (the HTTP
provider feeds it; tests and the benchmark feed it bytes). A vendor's parser only maps
its wire format: text and reasoning to deltas, tool-call fragments into the one
`ToolCallAssembler` (`self.calls`), usage into `self.usage`. How a response ends is
written here once, for every vendor:

- `end()`: the provider said the answer is finished. Every tool call completes (cut off
  when `truncated`), then one `UsageReport` if usage came, then `Finish`.
- `fail()`: the answer failed (an error in the stream, a body cut short, a broken
  connection). The usage seen so far comes first, since the vendor's own count beats an
  estimate; it is reported `final=False` while it is only a partial count (Anthropic's
  `message_start`: the prompt's tokens, not yet the output's). Then `StreamError`.
  Open tool calls are not completed, lest a consumer run a call that was cut off.

After either, the parser is `done` and returns no more events.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from streamkeep.llm.errors import ProviderError, ProviderStreamError
from streamkeep.llm.events import Finish, StreamError, StreamEvent, UsageReport
from streamkeep.llm.sse import SSEDecoder
from streamkeep.llm.toolcalls import ToolCallAssembler
from streamkeep.llm.types import FinishReason, Usage


class StreamParser:
    """Base of the vendor parsers; subclasses implement `feed`, `close` and `finished`."""

    __slots__ = (
        "_done",
        "calls",
        "model",
        "provider",
        "response_id",
        "sse",
        "usage",
        "usage_final",
    )

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.response_id: str | None = None
        self.model: str | None = None
        self.sse = SSEDecoder()
        self.calls = ToolCallAssembler()
        #: the vendor's usage so far, and whether it counts the whole response yet
        self.usage: Usage | None = None
        self.usage_final = True
        self._done = False

    @property
    def done(self) -> bool:
        """True once the final event (Finish or StreamError) was returned."""
        return self._done

    @property
    def finished(self) -> bool:
        """True once the provider said the answer is finished, even if its final events
        are still held back (OpenAI's finish reason comes before usage and `[DONE]`)."""
        raise NotImplementedError

    def feed(self, data: bytes) -> list[StreamEvent]:
        """Take the next bytes of the body; return the events they complete."""
        raise NotImplementedError

    def close(self) -> list[StreamEvent]:
        """The body ended: the final events, unless the parser is done already."""
        raise NotImplementedError

    def broke_off(self, error: ProviderError) -> list[StreamEvent]:
        """The body broke off (`error` from the transport): the final events, unless
        the parser is done already. An answer already finished loses only its tail."""
        if self._done:
            return []
        if self.finished:
            return self.close()
        out: list[StreamEvent] = []
        self.fail(error, out)
        return out

    def end(
        self,
        out: list[StreamEvent],
        reason: FinishReason,
        raw: str | None,
        *,
        truncated: bool,
        cut: Collection[int] = (),
    ) -> None:
        """The answer is finished: its tool calls (all cut off when `truncated`, else
        those at the indexes in `cut`), its usage, then `Finish`."""
        self._done = True
        out.extend(self.calls.finish(truncated=truncated, cut=cut))
        if self.usage is not None:
            out.append(UsageReport(self.usage))
        out.append(Finish(reason, self.response_id, self.model, raw))

    def fail(self, error: ProviderError, out: list[StreamEvent]) -> None:
        """The answer failed: the usage seen so far, then `StreamError`."""
        self._done = True
        if self.usage is not None:
            out.append(UsageReport(self.usage, final=self.usage_final))
        out.append(StreamError(error, self.response_id, self.model))

    def stream_error(self, message: str, code: Any = None) -> ProviderStreamError:
        """An error the provider reported in the stream (its `code`, if it gave one)."""
        return ProviderStreamError(
            message, provider=self.provider, code=None if code is None else str(code)
        )


def count(value: Any) -> int:
    """A token count from a vendor's JSON: a positive int, else 0."""
    return value if type(value) is int and value > 0 else 0
