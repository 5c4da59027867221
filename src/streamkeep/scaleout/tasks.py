"""Ending the background tasks of this package."""

from __future__ import annotations

import asyncio
import logging

logger = logging.getLogger(__name__)

# redis-py can turn a cancellation that lands mid-command into a connection error,
# which our loops retry; the task then parks on its next wait and never ends. So a
# task still running this long after its cancellation is cancelled again.
CANCEL_AGAIN_AFTER = 1.0


async def cancel_and_wait(
    task: asyncio.Task[None] | None, *, again_after: float = CANCEL_AGAIN_AFTER
) -> None:
    """Cancel `task` and wait for its end, cancelling it again every `again_after`
    seconds while it goes on, without swallowing a cancellation of the caller
    (unlike `suppress(CancelledError)` around `await task`)."""
    if task is None or task.done():
        return
    task.cancel()
    while True:
        done, _ = await asyncio.wait([task], timeout=again_after)
        if done:
            break
        logger.warning("task %s went on after its cancellation; cancelling again", task.get_name())
        task.cancel()
    if not task.cancelled() and task.exception() is not None:
        logger.error("task %s failed while stopping", task.get_name(), exc_info=task.exception())


def end_if_cancelled() -> None:
    """For a loop's retry handler: a cancellation that came out of a Redis call as an
    error still ends the loop (the task's cancel count stays up until it ends)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
