"""Stopping the package's background tasks."""

from __future__ import annotations

import asyncio
import logging

import pytest

from streamkeep.scaleout.tasks import cancel_and_wait, end_if_cancelled


async def test_a_task_that_swallows_its_cancellation_is_cancelled_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # What redis-py can do to a loop: the cancellation lands mid-command and comes
    # out as a connection error, which the loop retries, then parks on its next wait.
    started = asyncio.Event()
    swallowed = 0

    async def loop() -> None:
        nonlocal swallowed
        wakeup = asyncio.Event()
        while True:
            try:
                started.set()
                await asyncio.sleep(3600)  # a command in flight
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed > 1:
                    raise
            await wakeup.wait()  # parked: nothing will wake it

    task = asyncio.create_task(loop(), name="swallower")
    await started.wait()
    async with asyncio.timeout(10):
        await cancel_and_wait(task, again_after=0.05)
    assert task.cancelled()
    assert swallowed == 1
    assert [r.levelno for r in caplog.records if "cancelling again" in r.getMessage()] == [
        logging.WARNING
    ]


async def test_a_task_that_ends_on_its_first_cancellation_is_not_cancelled_twice() -> None:
    cancels = 0

    async def loop() -> None:
        nonlocal cancels
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancels += 1
            await asyncio.sleep(0.2)  # a short clean-up, longer than again_after below
            raise

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    await cancel_and_wait(task, again_after=1.0)
    assert task.cancelled() and cancels == 1


async def test_a_retry_loop_ends_when_its_cancellation_comes_out_as_an_error() -> None:
    started = asyncio.Event()
    retries = 0

    async def command() -> None:
        try:
            started.set()
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise ConnectionError("connection closed by the cancellation") from None

    async def loop() -> None:
        nonlocal retries
        while True:
            try:
                await command()
            except ConnectionError:
                end_if_cancelled()
                retries += 1
                await asyncio.sleep(0)

    task = asyncio.create_task(loop())
    await started.wait()
    task.cancel()
    async with asyncio.timeout(10):
        await asyncio.wait([task])
    assert task.cancelled() and retries == 0
