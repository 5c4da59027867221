"""Batched checkpoints: one transaction per tick for every live answer, one final write
per message, nothing per token. Statements are counted on the real engine."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from streamkeep.generation import GenerationManager
from streamkeep.store import ChatStore, Database
from tests.conftest import TEST_DATABASE_URL
from tests.fakes.upstream import FakeUpstream, Script
from tests.generation.conftest import MODEL
from tests.generation.streams import deltas, read_all, read_until, stored_text


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    """Every SQL statement sent to the database while inside the block (BEGIN included)."""
    seen: list[str] = []

    def record(sql: str, many: bool) -> None:
        seen.append(" ".join(sql.split()).upper())

    unwatch = db.watch(record, lambda: None)
    try:
        yield seen
    finally:
        unwatch()


def message_updates(seen: list[str]) -> list[str]:
    return [s for s in seen if s.startswith("UPDATE MESSAGES")]


async def test_live_answers_are_checkpointed_together_in_one_transaction(
    manager: GenerationManager, store: ChatStore, db: Database, fake_upstream: FakeUpstream
) -> None:
    gens = []
    for _ in range(3):
        chat_id = (await store.create_chat(model=MODEL)).id
        fake_upstream.enqueue(Script(tokens=10, hang_after=3))
        gen = await manager.reply(chat_id=chat_id, content="hi")
        await read_until(gen.subscribe(), deltas(3))
        gens.append(gen)

    with statements(db) as seen:
        await manager.checkpointer.tick()

    # One UPDATE (executemany) for all three messages, one for the heartbeats, and
    # nothing else but the transaction's own bookkeeping.
    assert len(message_updates(seen)) == 1
    assert len([s for s in seen if s.startswith("UPDATE GENERATIONS")]) == 1
    assert not [s for s in seen if s.startswith(("INSERT", "DELETE"))]
    for gen in gens:
        message = await store.get_message(gen.message_id)
        assert message.status == "streaming"
        assert stored_text(message.parts) == "lorem ipsum dolor"

    with statements(db) as seen:
        await manager.checkpointer.tick()  # nothing new since: only heartbeats
    assert message_updates(seen) == []

    with statements(db) as seen:
        for gen in gens:
            await gen.stop()
        await manager.checkpointer.tick()  # nothing live any more: nothing written
    assert len(message_updates(seen)) == 3  # exactly one final write per message
    for gen in gens:
        message = await store.get_message(gen.message_id)
        assert message.status == "stopped"
        assert stored_text(message.parts) == "lorem ipsum dolor"


async def test_a_generation_writes_its_message_once_with_no_checkpoint_in_between(
    manager: GenerationManager, store: ChatStore, db: Database, fake_upstream: FakeUpstream
) -> None:
    chat_id = (await store.create_chat(model=MODEL)).id
    fake_upstream.enqueue(Script(tokens=50))
    with statements(db) as seen:
        gen = await manager.reply(chat_id=chat_id, content="hi")
        frames = await read_all(gen)
    assert frames[-1].type == "[DONE]"
    # start_reply inserts it; finish_reply is the only UPDATE of any message.
    assert len(message_updates(seen)) == 1
    message = await store.get_message(gen.message_id)
    assert message.status == "complete" and len(stored_text(message.parts).split()) == 50


# PostgreSQL only: it takes the database's server away, which SQLite does not have.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_final_write_that_fails_while_the_database_is_down_is_kept_and_retried(
    manager: GenerationManager,
    store: ChatStore,
    database_url: str,
    fake_upstream: FakeUpstream,
) -> None:
    chat_id = (await store.create_chat(model=MODEL)).id
    fake_upstream.enqueue(Script(tokens=10, hang_after=2))
    gen = await manager.reply(chat_id=chat_id, content="hi")
    await read_until(gen.subscribe(), deltas(2))

    name = make_url(database_url).database
    admin = await asyncpg.connect(TEST_DATABASE_URL)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        await gen.stop()  # every retry of the final write fails: the database is gone
        frames = await read_all(gen)
        assert frames[-1].type == "[DONE]"  # the client is not left hanging meanwhile
        # ...and is told the stored row is not final yet.
        (meta,) = [f.data["messageMetadata"] for f in frames if f.type == "message-metadata"]
        assert meta["status"] == "stopped" and meta["stored"] is False
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()

    await manager.checkpointer.tick()  # the database is back

    message = await store.get_message(gen.message_id)
    assert message.status == "stopped"
    assert stored_text(message.parts) == "lorem ipsum"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_database_outage_logs_one_traceback_not_one_per_tick(
    manager: GenerationManager,
    store: ChatStore,
    database_url: str,
    fake_upstream: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    chat_id = (await store.create_chat(model=MODEL)).id
    fake_upstream.enqueue(Script(tokens=10, hang_after=2))
    gen = await manager.reply(chat_id=chat_id, content="hi")
    await read_until(gen.subscribe(), deltas(2))  # live and dirty: every tick writes

    name = make_url(database_url).database
    admin = await asyncpg.connect(TEST_DATABASE_URL)
    caplog.set_level(logging.INFO, logger="streamkeep.generation.checkpointer")
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        for _ in range(5):
            await manager.checkpointer.tick_or_log()
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
    await manager.checkpointer.tick_or_log()
    await gen.stop()

    logged = [(r.levelname, r.exc_info is not None, r.getMessage()) for r in caplog.records]
    assert [(level, tb) for level, tb, _ in logged] == [
        ("ERROR", True),  # the first failure, with its traceback
        ("WARNING", False),  # the 2nd in a row
        ("WARNING", False),  # the 4th
        ("WARNING", False),  # back
    ]
    assert "failed 4 times in a row" in logged[2][2]
    assert logged[3][2] == "checkpoints work again after 5 failed ticks"
