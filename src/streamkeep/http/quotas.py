"""The limits of `http.limits` where requests and generations meet them.

- Every request with a user counts against its subjects' requests_per_minute: at
  authentication (`AuthGate.caller`), so no route can forget it.
- A reply is started through `Quotas.limited(caller, start)`: the token budget is
  checked and a concurrent-generation slot taken before it starts (a 429 starts
  nothing), and when the generation ends, however it ends, the slot is given back
  and its tokens (input + output, the provider's or the estimate) are spent. A retry
  that joins a running generation by its `Idempotency-Key` takes no second slot.
- `run()` refreshes the leases of this worker's slots, so a crashed worker's slots
  free themselves when their leases run out.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable

from streamkeep.generation import Generation
from streamkeep.http.auth import Caller
from streamkeep.http.limits import Limiter, Subject

logger = logging.getLogger(__name__)


class Quotas:
    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter
        self._settling: set[asyncio.Task[None]] = set()

    def limited(
        self, caller: Caller, start: Callable[[], Awaitable[Generation]]
    ) -> Callable[[], Awaitable[Generation]]:
        """`start` run within the caller's budget and concurrency (unchanged when
        the caller has no limits: auth off, or none configured)."""
        subjects = caller.subjects
        if not any(s.spec.concurrent_generations or s.spec.tokens_per_period for s in subjects):
            return start

        async def limited_start() -> Generation:
            await self.limiter.check_budget(subjects)
            slot = f"slot_{secrets.token_hex(8)}"
            await self.limiter.start_generation(subjects, slot)
            try:
                generation = await start()
            except BaseException:
                await self._release(subjects, slot)
                raise
            task = asyncio.create_task(self._settle(subjects, slot, generation))
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)
            return generation

        return limited_start

    async def _settle(self, subjects: tuple[Subject, ...], slot: str, gen: Generation) -> None:
        await gen.done.wait()
        usage = gen.usage()
        await self._release(subjects, slot)
        try:
            await self.limiter.spend(subjects, usage.input_tokens + usage.output_tokens)
        except Exception:
            logger.exception("could not count the tokens of generation %s", gen.id)

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
