"""The in-process event log: numbering, replay after N, late readers, close."""

from __future__ import annotations

import asyncio

import pytest

from streamkeep.generation.log import InProcessEventLog


async def collect(log: InProcessEventLog, after: int = 0) -> list[bytes]:
    return [chunk async for chunk in log.read(after)]


def test_sequence_numbers_start_at_one() -> None:
    log = InProcessEventLog()
    assert log.next_seq == 1
    log.append([b"a", b"b"])
    assert log.next_seq == 3
    log.append([b"c"])
    assert log.next_seq == 4 and len(log) == 3


async def test_replay_after_n_yields_exactly_the_rest_joined() -> None:
    log = InProcessEventLog()
    log.append([b"1", b"2", b"3", b"4"])
    log.close()
    assert await collect(log, after=0) == [b"1234"]
    assert await collect(log, after=2) == [b"34"]
    assert await collect(log, after=4) == []
    assert await collect(log, after=99) == []


async def test_readers_follow_live_appends_until_close() -> None:
    log = InProcessEventLog()
    log.append([b"s"])
    reader = log.read(0)
    assert await anext(reader) == b"s"
    pending = asyncio.ensure_future(anext(reader))
    await asyncio.sleep(0)
    assert not pending.done()  # nothing new: the reader waits
    log.append([b"x", b"y"])
    assert await pending == b"xy"
    log.close()
    assert [c async for c in reader] == []


async def test_many_readers_and_a_late_one_all_see_everything() -> None:
    log = InProcessEventLog()
    early = [asyncio.create_task(collect(log)) for _ in range(3)]
    await asyncio.sleep(0)
    for i in range(5):
        log.append([b"%d" % i])
        await asyncio.sleep(0)
    log.close()
    late = await collect(log)
    assert b"".join(late) == b"01234"
    for task in early:
        assert b"".join(await task) == b"01234"


async def test_append_after_close_is_refused() -> None:
    log = InProcessEventLog()
    log.close()
    with pytest.raises(RuntimeError):
        log.append([b"x"])
    assert log.closed


async def test_a_reader_cancelled_while_waiting_leaves_the_others_reading() -> None:
    # Readers share one wake-up: a client that leaves must not wake the others with
    # its cancellation.
    log = InProcessEventLog()
    leaving = asyncio.create_task(collect(log))
    staying = [asyncio.create_task(collect(log)) for _ in range(2)]
    await asyncio.sleep(0)  # all three wait for the first frame
    leaving.cancel()
    await asyncio.sleep(0)
    assert leaving.cancelled()
    assert not any(task.done() for task in staying)
    log.append([b"a"])
    await asyncio.sleep(0)
    log.append([b"b"])
    log.close()
    for task in staying:
        assert b"".join(await task) == b"ab"


async def test_a_log_numbers_from_its_first_seq_and_an_earlier_id_reads_from_its_start() -> None:
    log = InProcessEventLog(first_seq=101)
    assert log.first_seq == log.next_seq == 101
    log.append([b"a", b"b", b"c"])
    log.close()
    assert log.next_seq == 104
    assert await collect(log, after=101) == [b"bc"]
    assert await collect(log, after=103) == []
    # An id of an earlier log of the chat (or none): this one from its start.
    for earlier in (0, 40, 100):
        assert await collect(log, after=earlier) == [b"abc"]
    with pytest.raises(ValueError):
        InProcessEventLog(first_seq=0)
