"""The closing `message-metadata` says whether the final write reached the database.

The database refuses it for real here: a trigger rejects every UPDATE of `generations`
(the first statement of the final write) until it is dropped.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from streamkeep.generation import GenerationManager
from streamkeep.store import ChatStore, Database
from tests.fakes.upstream import FakeUpstream, Script
from tests.generation.conftest import MODEL
from tests.generation.streams import Frame, read_all, stored_text


async def refuse_final_writes(db: Database) -> None:
    async with db.writing() as conn:
        if db.is_sqlite:
            await conn.execute(
                text(
                    "CREATE TRIGGER sk_refuse BEFORE UPDATE ON generations "
                    "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
                )
            )
        else:
            await conn.execute(
                text(
                    "CREATE FUNCTION sk_refuse() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$"
                )
            )
            await conn.execute(
                text(
                    "CREATE TRIGGER sk_refuse BEFORE UPDATE ON generations "
                    "FOR EACH ROW EXECUTE FUNCTION sk_refuse()"
                )
            )


async def allow_final_writes(db: Database) -> None:
    async with db.writing() as conn:
        if db.is_sqlite:
            await conn.execute(text("DROP TRIGGER sk_refuse"))
        else:
            await conn.execute(text("DROP TRIGGER sk_refuse ON generations"))
            await conn.execute(text("DROP FUNCTION sk_refuse()"))


def closing_metadata(frames: list[Frame]) -> dict[str, Any]:
    (meta,) = [f.data["messageMetadata"] for f in frames if f.type == "message-metadata"]
    assert isinstance(meta, dict)
    return meta


async def test_the_closing_metadata_says_stored_when_the_final_write_landed(
    manager: GenerationManager, store: ChatStore, fake_upstream: FakeUpstream
) -> None:
    chat_id = (await store.create_chat(model=MODEL)).id
    fake_upstream.enqueue(Script(tokens=3))
    gen = await manager.reply(chat_id=chat_id, content="hi")

    meta = closing_metadata(await read_all(gen))

    assert meta["status"] == "complete" and meta["stored"] is True
    assert (await store.get_message(gen.message_id)).status == "complete"


async def test_a_final_write_failing_every_attempt_is_announced_as_not_stored(
    manager: GenerationManager, store: ChatStore, db: Database, fake_upstream: FakeUpstream
) -> None:
    chat_id = (await store.create_chat(model=MODEL)).id
    fake_upstream.enqueue(Script(tokens=3))
    await refuse_final_writes(db)
    try:
        gen = await manager.reply(chat_id=chat_id, content="hi")
        frames = await read_all(gen)

        # The stream still ends (nobody hangs), but says the row is not final.
        assert [f.type for f in frames][-3:] == ["message-metadata", "finish", "[DONE]"]
        meta = closing_metadata(frames)
        assert meta["status"] == "complete" and meta["stored"] is False
        assert (await store.get_message(gen.message_id)).status == "streaming"
    finally:
        await allow_final_writes(db)

    await manager.checkpointer.tick()  # the background retry stores it

    message = await store.get_message(gen.message_id)
    assert message.status == "complete"
    assert stored_text(message.parts) == "lorem ipsum dolor"
