"""The limits of `http.limits` where requests and generations meet them.

- Every request with a user counts against its subjects' requests_per_minute: at
  authentication (`AuthGate.caller`), so no route can forget it.
- A reply is started through `Quotas.limited(caller, start)`: the token budget is
  checked and a concurrent-generation slot taken before it starts (a 429 starts
  nothing), and when the generation ends, however it ends, the slot is given back
  and its tokens (input + output, the provider's or the estimate) are spent. A retry
  that joins a running generation by its `Idempotency-Key` takes no second slot.
- The gateway's pure relay (`gateway_store = false`) stores nothing and has no
  `Generation`: its provider stream goes through `Quotas.metered`, which holds a slot
  while the stream is open and spends its tokens when it is closed.
- `run()` refreshes the leases of this worker's slots, so a crashed worker's slots
  free themselves when their leases run out.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from functools import partial

from streamkeep.generation import Generation
from streamkeep.http.auth import Caller
from streamkeep.http.limits import Limiter, Subject
from streamkeep.llm.accumulator import Accumulator
from streamkeep.llm.events import EventStream, StreamEvent
from streamkeep.llm.types import ChatRequest, Usage
from streamkeep.llm.usage import completion_chars, estimate_usage, prompt_chars

logger = logging.getLogger(__name__)


class Quotas:
    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter
        self._settling: set[asyncio.Task[None]] = set()
        # The generations whose slot and tokens are counted, until they settle.
        self._counted: set[str] = set()

    def limited(
        self, caller: Caller, start: Callable[[], Awaitable[Generation]]
    ) -> Callable[[], Awaitable[Generation]]:
        """`start` run within the caller's budget and concurrency (unchanged when
        the caller has no limits: auth off, or none configured)."""
        subjects = caller.subjects
        if not _limited(subjects):
            return start

        async def limited_start() -> Generation:
            slot = await self._take_slot(subjects)
            try:
                generation = await start()
            except BaseException:
                await self._release(subjects, slot)
                raise
            if generation.id in self._counted:
                # Joined a generation a same-key request started (both were starting at
                # once): that request's slot and settling count it.
                await self._release(subjects, slot)
                return generation
            self._counted.add(generation.id)
            task = asyncio.create_task(self._settle(subjects, slot, generation))
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)
            return generation

        return limited_start

    async def metered(
        self, caller: Caller, stream: EventStream, request: ChatRequest
    ) -> EventStream:
        """`stream`, a provider's answer to `request` relayed as it is (nothing stored),
        within the caller's budget and concurrency: a slot is held from now until the
        stream is closed, then its tokens are spent (the provider's count, or an
        estimate of what went by when it was closed early). LimitExceeded (and
        `stream` closed) if over a limit."""
        subjects = caller.subjects
        if not _limited(subjects):
            return stream
        try:
            slot = await self._take_slot(subjects)
        except BaseException:
            await stream.aclose()
            raise
        return _Metered(stream, prompt_chars(request), partial(self._end_relay, subjects, slot))

    async def _take_slot(self, subjects: tuple[Subject, ...]) -> str:
        """Check the budget and take a concurrency slot: the slot's id."""
        await self.limiter.check_budget(subjects)
        slot = f"slot_{secrets.token_hex(8)}"
        await self.limiter.start_generation(subjects, slot)
        return slot

    async def _settle(self, subjects: tuple[Subject, ...], slot: str, gen: Generation) -> None:
        try:
            await gen.done.wait()
            await self._end(subjects, slot, gen.usage(), gen.id)
        finally:
            self._counted.discard(gen.id)

    def _end_relay(self, subjects: tuple[Subject, ...], slot: str, usage: Usage) -> None:
        # In a task of its own: the relay's close may be under a cancellation.
        task = asyncio.create_task(self._end(subjects, slot, usage, slot))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _end(self, subjects: tuple[Subject, ...], slot: str, usage: Usage, what: str) -> None:
        await self._release(subjects, slot)
        try:
            await self.limiter.spend(subjects, usage.input_tokens + usage.output_tokens)
        except Exception:
            logger.exception("could not count the tokens of %s", what)

    async def _release(self, subjects: tuple[Subject, ...], slot: str) -> None:
        try:
            await self.limiter.end_generation(subjects, slot)
        except Exception:  # its lease runs out instead
            logger.exception("could not give back a generation slot")

    async def run(self) -> None:
        """Refresh this worker's slot leases until cancelled."""
        while True:
            await asyncio.sleep(self.limiter.lease / 3)
            try:
                await self.limiter.refresh_held()
            except Exception as exc:  # Redis away: the next round tries again
                logger.warning("refreshing generation slots failed: %s", exc)

    async def aclose(self) -> None:
        """Wait for the generations' settling (they end before the app does)."""
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)


def _limited(subjects: tuple[Subject, ...]) -> bool:
    return any(s.spec.concurrent_generations or s.spec.tokens_per_period for s in subjects)


class _Metered:
    """A relayed provider stream that calls `ended` with its usage once, when closed
    (`aclose`, which every consumer of an EventStream calls, or its last event)."""

    __slots__ = ("_acc", "_ended", "_prompt_chars", "_stream")

    def __init__(
        self, stream: EventStream, prompt_chars: int, ended: Callable[[Usage], None]
    ) -> None:
        self._stream = stream
        self._prompt_chars = prompt_chars
        self._ended: Callable[[Usage], None] | None = ended
        self._acc = Accumulator()

    def __aiter__(self) -> _Metered:
        return self

    async def __anext__(self) -> StreamEvent:
        try:
            event = await anext(self._stream)
        except BaseException:
            self._end()
            raise
        self._acc.add(event)
        return event

    async def aclose(self) -> None:
        self._end()
        await self._stream.aclose()

    def _end(self) -> None:
        if self._ended is None:
            return
        ended, self._ended = self._ended, None
        completion = self._acc.result()
        usage = completion.usage or estimate_usage(
            self._prompt_chars, *completion_chars(completion), known=completion.partial_usage
        )
        ended(usage)
