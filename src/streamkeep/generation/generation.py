"""One live generation: the task that relays a model's stream and keeps the answer.

The task reads the provider's typed events, encodes each into UI-stream frames and
appends them to the event log at once; storage never sits on that path. The answer is
written once at the end (plus the checkpointer's periodic batches), and only then do the
closing frames go out, so a client that refetches on `finish` finds the stored message.
Should every attempt of that write fail, the closing `message-metadata` says
`"stored": false` (the checkpointer keeps retrying in the background); it says `true`
once the final row is in the database.

HTTP requests never own a generation: they `subscribe()` to its log, and leaving does
not stop it (unless `stop_on_disconnect`).

A chat API generation numbers its frames after the chat's `event_seq` (from
`first_seq`), and keeps that column ahead of the ids it sends (`seq_reserved`: set by
the start's write, raised by checkpoints, made exact by the final write), so the
next generation of the chat, even after a crash, never reuses one of its ids.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from opentelemetry import context, trace
from opentelemetry.trace import INVALID_SPAN, Span

from streamkeep.generation.final import EndStatus, FinalWrite, store_final
from streamkeep.generation.log import EventLog, InProcessEventLog
from streamkeep.generation.parts import UIPart
from streamkeep.generation.plan import Continued
from streamkeep.generation.steps import MAX_STEPS, ReplyEvent, ReplyParts, ReplyStream, count_steps
from streamkeep.generation.tracing import db_span, end_span, traceparent
from streamkeep.generation.ui_stream import MAX_END_FRAMES, UIStreamEncoder
from streamkeep.llm.events import Finish, Routed, StreamError
from streamkeep.llm.fallback import skipped_json
from streamkeep.llm.types import FinishReason, Usage
from streamkeep.llm.usage import add_usage, estimate_usage
from streamkeep.logs import CHAT_ID, GENERATION_ID
from streamkeep.sse import numbered_frames

if TYPE_CHECKING:
    from streamkeep.generation.checkpointer import Checkpointer
    from streamkeep.store import ChatStore

logger = logging.getLogger(__name__)

Status = Literal["streaming", "complete", "stopped", "error", "interrupted"]
# Event ids a generation keeps reserved (in its chat's `event_seq`) ahead of the ones it
# has sent: a crash loses at most what it sends between two checkpoints, far fewer.
EVENT_SEQ_MARGIN = 10_000


class FrameEncoder(Protocol):
    """Events -> frame payloads; `UIStreamEncoder` by default (the gateway's differs)."""

    def start(self, message_id: str, metadata: dict[str, Any]) -> list[bytes]: ...

    def encode(self, event: ReplyEvent) -> list[bytes]: ...

    def error(self, error_text: str) -> list[bytes]: ...

    def end(
        self,
        metadata: dict[str, Any],
        finish_reason: FinishReason | None,
        *,
        aborted: bool = False,
    ) -> list[bytes]: ...


@dataclass(slots=True, frozen=True)
class GenerationIds:
    id: str
    chat_id: str
    message_id: str
    user_message_id: str | None
    model: str
    # The start's Idempotency-Key: a same-key retry in this process joins without asking
    # the database (or the provider) again.
    idempotency_key: str | None = None


@dataclass(slots=True)
class Outcome:
    status: EndStatus
    finish_reason: FinishReason | None = None
    error: str | None = None
    # The tool loop ended the reply because it reached `max_steps`.
    max_steps: bool = False


class Generation:
    """A generation owned by this process; see the module docstring."""

    def __init__(
        self,
        ids: GenerationIds,
        *,
        store: ChatStore,
        checkpointer: Checkpointer,
        stop_on_disconnect: bool = False,
        on_done: Callable[[Generation], None] | None = None,
        log: EventLog | None = None,
        encoder: FrameEncoder | None = None,
        ready: Awaitable[object] | None = None,
        first_seq: int = 1,
        seq_reserved: int | None = None,
        steps: bool = False,
        continued: Continued | None = None,
        span: Span = INVALID_SPAN,
        tracer: trace.Tracer | None = None,
    ) -> None:
        """`steps`: a reply with tools (its parts mark each step); `continued`: the
        message it continues, whose parts and usage it adds to.

        `ready`, when given, is the write of this answer's rows, running alongside
        the stream: the final write waits for it. `first_seq` numbers the frames of its
        own log (a given `log` starts where it was made to). `seq_reserved` is the
        chat's `event_seq` as the rows' write sets it; None for a generation that does
        not number the chat's events (the gateway's: they are not resumable).
        `span`: its span (see `generation.tracing`), made current in its task and
        ended with it; `tracer`: for the spans of its final write."""
        self.ids = ids
        self.id = ids.id
        self.chat_id = ids.chat_id
        self.message_id = ids.message_id
        self.user_message_id = ids.user_message_id
        self.model = ids.model
        self.status: Status = "streaming"
        self.log: EventLog = log if log is not None else InProcessEventLog(first_seq)
        self.seq_reserved = seq_reserved
        self.done = asyncio.Event()
        # Set by the run loop on new content, cleared by the checkpointer.
        self.dirty = False
        # Set once the end is being written: checkpoints must no longer touch the message.
        self.finalizing = False
        self._store = store
        self._checkpointer = checkpointer
        self._stop_on_disconnect = stop_on_disconnect
        self._on_done = on_done
        self._parts = ReplyParts(continued.parts if continued else (), steps=steps)
        self._prior_usage = continued.usage if continued else None
        self._encoder: FrameEncoder = encoder if encoder is not None else UIStreamEncoder()
        self._ready = ready
        self._subscribers = 0
        self._task: asyncio.Task[None] | None = None
        self._running = False
        self._cancel_status: EndStatus | None = None
        self._discarded = False
        self._prompt_chars = 0
        # A fallback alias's record (`Routed`): the model that answered the last call,
        # and every model skipped before one answered, over all the reply's calls.
        self.answered_by: str | None = None
        self.fallbacks: list[dict[str, Any]] = []
        self.span = span
        self._tracer = tracer
        self.traceparent = traceparent(span)

    def __repr__(self) -> str:
        return f"<Generation {self.ids.id} chat={self.ids.chat_id} {self.status}>"

    # -- the public face -----------------------------------------------------------

    @property
    def resumable(self) -> bool:
        """True when its frames are the UI message stream the chat API resumes (the
        gateway's OpenAI chunks are not: they belong to the client that asked)."""
        return isinstance(self._encoder, UIStreamEncoder)

    @property
    def first_seq(self) -> int:
        """The event id of its first frame (`start`)."""
        first = self.log.first_seq
        assert first is not None  # a log this process writes knows where it starts
        return first

    @property
    def subscribers(self) -> int:
        return self._subscribers

    def parts(self) -> list[UIPart]:
        """The answer so far, as stored message parts."""
        return self._parts.parts()

    async def subscribe(self, after: int = 0) -> AsyncGenerator[bytes, None]:
        """The stream's frames after sequence number `after`, live until the end."""
        self._subscribers += 1
        try:
            async for chunk in self.log.read(after):
                yield chunk
        finally:
            self._subscribers -= 1
            if self._subscribers == 0 and self._stop_on_disconnect and not self.done.is_set():
                self._cancel("stopped")

    async def stop(self) -> bool:
        """Stop at once: the upstream is closed and the partial answer stored `stopped`.

        True only when this call is what stopped it: False when it had already ended
        or was finishing (its outcome is being stored), when something else stopped it
        first (another stop, a disconnect, a shutdown), or when its start failed and it
        was discarded (there is no stored reply to stop).
        """
        mine = self._cancel("stopped")
        await self.done.wait()
        return mine and self.status == "stopped" and not self._discarded

    def interrupt(self) -> None:
        """Stop for a shutdown: the partial answer is stored `interrupted`."""
        self._cancel("interrupted")

    async def discard(self) -> None:
        """Abandon a generation whose rows were never written (its start failed after
        the provider was asked): close the upstream at once and store nothing."""
        self._discarded = True
        self._cancel("error")
        await self.done.wait()

    async def wait(self) -> None:
        await self.done.wait()

    # -- the task --------------------------------------------------------------------

    def start(
        self, stream: ReplyStream, metadata: dict[str, Any], *, prompt_chars: int = 0
    ) -> None:
        self._prompt_chars = prompt_chars
        # The start frames go in before anyone can subscribe: `start` is the log's first.
        self._append(self._encoder.start(self.ids.message_id, metadata))
        self._task = asyncio.create_task(self._run(stream), name=f"generation-{self.ids.id}")

    def _cancel(self, status: EndStatus) -> bool:
        """Ask the task to end as `status`; True when this call decided its outcome."""
        if self.finalizing or self._cancel_status is not None or self.done.is_set():
            return False
        self._cancel_status = status
        if self._running and self._task is not None:
            self._task.cancel()
        return True

    def _append(self, payloads: list[bytes]) -> None:
        log = self.log
        log.append(numbered_frames(payloads, log.next_seq))

    async def _run(self, stream: ReplyStream) -> None:
        self._running = True
        foreign_cancel = False
        # The task's own context (a copy of the request's): its log lines say which
        # generation they are about, and its spans nest under the generation's.
        GENERATION_ID.set(self.ids.id)
        CHAT_ID.set(self.ids.chat_id)
        context.attach(trace.set_span_in_context(self.span))
        try:
            if self._cancel_status is not None:  # stopped before the task first ran
                await stream.aclose()
                outcome = Outcome(self._cancel_status)
            else:
                outcome = await self._pump(stream)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._cancel_status is None:
                foreign_cancel = True  # e.g. the event loop is going away
            elif task is not None:
                task.uncancel()  # our own stop: the task carries on to store the answer
            outcome = Outcome(self._cancel_status or "interrupted")
        except Exception as exc:  # a bug below us: keep what we have, report it
            logger.exception("generation %s failed", self.ids.id)
            outcome = Outcome("error", "error", f"internal error: {exc}")
        await self._finish(outcome)
        if foreign_cancel:
            raise asyncio.CancelledError

    async def _pump(self, stream: ReplyStream) -> Outcome:
        acc, encoder = self._parts, self._encoder
        first = True
        try:
            async for event in stream:
                acc.add(event)
                if isinstance(event, Finish):
                    return Outcome(
                        "complete", event.reason, max_steps=event.raw_reason == MAX_STEPS
                    )
                if isinstance(event, StreamError):
                    return Outcome("error", "error", event.error.message)
                payloads = encoder.encode(event)
                if payloads:
                    self._append(payloads)
                    self.dirty = True
                    if first:
                        # A read of buffered data does not suspend, so a provider that
                        # sent many tokens at once would be parsed whole before a reader
                        # ran: let the readers send the first frames now.
                        first = False
                        await asyncio.sleep(0)
                elif type(event) is Routed:  # off the token path: it has no frames
                    self.answered_by = event.model
                    self.fallbacks.extend(skipped_json(s) for s in event.skipped)
        finally:
            # Closing the iterator closes the upstream connection, at once on a stop.
            await stream.aclose()
        return Outcome("error", "error", "the model's stream ended without finishing")

    async def _finish(self, outcome: Outcome) -> None:
        self.finalizing = True
        try:
            if outcome.status == "error" and not self._discarded:
                self._append(self._encoder.error(outcome.error or "unknown error"))
            if self._ready is not None:  # the rows to write into must exist first
                (failure,) = await asyncio.gather(self._ready, return_exceptions=True)
                if isinstance(failure, BaseException) and not self._discarded:
                    logger.error(
                        "rows of message %s were never written: %s", self.message_id, failure
                    )
            if self._discarded:  # no rows to write into, and nobody subscribed
                return
            await self._checkpointer.settle(self)
            with db_span(self._tracer, self.span, "final write"):
                stored = await self._store_final(outcome)
            aborted = outcome.status in ("stopped", "interrupted")
            metadata = self._metadata(outcome, stored=stored)
            self._append(self._encoder.end(metadata, outcome.finish_reason, aborted=aborted))
        finally:
            # Whatever happened above, nobody may wait for this generation forever.
            self.status = outcome.status
            self.log.close()
            self.done.set()
            if self.span.is_recording():
                steps = count_steps(self._parts.parts())
                end_span(self.span, outcome.status, steps, outcome.error)
            logger.info("generation ended %s (model %s)", outcome.status, self.model)
            if self._on_done is not None and not self._discarded:
                self._on_done(self)

    def _metadata(self, outcome: Outcome, *, stored: bool) -> dict[str, Any]:
        # `stored` false: the database does not have this outcome yet (the message may
        # still read `streaming`); a client should not take the stored row as final.
        meta: dict[str, Any] = {"status": outcome.status, "stored": stored}
        meta["usage"] = self.usage().as_dict()
        if outcome.finish_reason is not None:
            meta["finishReason"] = outcome.finish_reason
        if outcome.error is not None:
            meta["error"] = outcome.error
        if outcome.max_steps:
            meta["maxStepsReached"] = True
        if self.answered_by is not None:
            meta["answeredBy"] = self.answered_by
            meta["fallbacks"] = self.fallbacks
        return meta

    def usage(self) -> Usage:
        """The provider's numbers, or (stopped before the provider reported them) an
        estimate flagged as such, keeping the counts it did report (the prompt's); for
        a continued reply, added to what the message had used before."""
        acc = self._parts
        usage = acc.usage
        if usage is None:
            usage = estimate_usage(self._prompt_chars, *acc.chars(), known=acc.partial_usage)
        return usage if self._prior_usage is None else add_usage(self._prior_usage, usage)

    def seq_to_reserve(self) -> int | None:
        """The `event_seq` a checkpoint should raise the chat's to now, or None while
        more than half the margin is left (or this generation does not number them)."""
        reserved = self.seq_reserved
        if reserved is None:
            return None
        next_seq = self.log.next_seq
        if next_seq + EVENT_SEQ_MARGIN // 2 <= reserved:
            return None
        return next_seq - 1 + EVENT_SEQ_MARGIN

    def final_write(self, outcome: Outcome) -> FinalWrite:
        # Written before the closing frames go out: count them in.
        last_seq = self.log.next_seq - 1 + MAX_END_FRAMES
        return FinalWrite(
            generation_id=self.ids.id,
            message_id=self.ids.message_id,
            status=outcome.status,
            parts=self._parts.parts(),
            usage=self.usage().as_dict(),
            finish_reason=outcome.finish_reason,
            error=outcome.error,
            event_seq=last_seq if self.seq_reserved is not None else None,
            answered_by=self.answered_by,
            fallbacks=self.fallbacks if self.answered_by is not None else None,
        )

    async def _store_final(self, outcome: Outcome) -> bool:
        """True when the final row is in the database (False: failed every attempt and
        left to the checkpointer, or the chat was deleted meanwhile)."""
        write = self.final_write(outcome)
        return await store_final(self._store, write, retry_later=self._checkpointer.retry_later)
