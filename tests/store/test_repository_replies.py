"""ChatStore generations: start (with conflicts and idempotency), finish, checkpoint,
heartbeat and the recovery of orphans."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from streamkeep.store import (
    ChatStore,
    Database,
    GenerationConflict,
    InvalidOperation,
    NotFound,
    Role,
)
from streamkeep.store.chats import NewChat
from tests.store.conftest import Clock

TEXT = [{"type": "text", "text": "Hello"}]


async def counts(db: Database) -> tuple[int, int]:
    async with db.reading() as conn:
        messages = (await conn.execute(text("SELECT count(*) FROM messages"))).scalar_one()
        generations = (await conn.execute(text("SELECT count(*) FROM generations"))).scalar_one()
    return messages, generations


class StatementLog:
    """Records the SQL and the commits a real database connection sends."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.statements: list[tuple[str, bool]] = []
        self.commits = 0

    def _statement(self, sql: str, many: bool) -> None:
        self.statements.append((sql.split()[0].upper(), many))

    def _commit(self) -> None:
        self.commits += 1

    def __enter__(self) -> StatementLog:
        self._unwatch = self._db.watch(self._statement, self._commit)
        return self

    def __exit__(self, *exc: object) -> None:
        self._unwatch()


@pytest.fixture
def log(db: Database) -> Iterator[StatementLog]:
    with StatementLog(db) as statements:
        yield statements


async def test_start_reply_writes_user_reply_and_generation(store: ChatStore) -> None:
    chat = await store.create_chat(model="m")
    user, reply, gen = await store.start_reply(
        chat_id=chat.id,
        parent_id=None,
        user_content="Hi there",
        model="local/smollm2",
        idempotency_key="k1",
        worker_id="w1",
    )
    assert user is not None
    assert (user.role, user.status, user.parent_id) == ("user", "complete", None)
    assert user.parts == [{"type": "text", "text": "Hi there"}]
    assert user.completed_at is not None
    assert (reply.role, reply.status, reply.parts, reply.model) == (
        "assistant",
        "streaming",
        [],
        "local/smollm2",
    )
    assert reply.parent_id == user.id and reply.completed_at is None
    assert reply.id.startswith("msg_") and gen.id.startswith("gen_")
    assert (gen.chat_id, gen.message_id, gen.status) == (chat.id, reply.id, "running")
    assert (gen.idempotency_key, gen.worker_id, gen.ended_at) == ("k1", "w1", None)

    after = await store.get_chat(chat.id)
    assert after.active_leaf_id == reply.id and after.updated_at > chat.updated_at
    assert await store.get_message(reply.id) == reply.model_copy(update={"sibling_ids": [reply.id]})
    assert await store.running_generation(chat.id) == gen
    assert await store.get_generation(gen.id) == gen


async def test_a_second_start_conflicts_and_writes_nothing(store: ChatStore, db: Database) -> None:
    chat = await store.create_chat(model="m")
    _, reply, gen = await store.start_reply(
        chat_id=chat.id, parent_id=None, user_content="one", model="m", idempotency_key="a"
    )
    before, chat_before = await counts(db), await store.get_chat(chat.id)
    for key in ("b", None):
        with pytest.raises(GenerationConflict) as err:
            await store.start_reply(
                chat_id=chat.id,
                parent_id=reply.id,
                user_content="two",
                model="m",
                idempotency_key=key,
            )
        assert (err.value.generation_id, err.value.message_id) == (gen.id, reply.id)
        assert err.value.same_key is False and err.value.running is True
    assert await counts(db) == before
    assert await store.get_chat(chat.id) == chat_before


async def test_the_same_idempotency_key_joins(store: ChatStore) -> None:
    chat = await store.create_chat(model="m")
    _, reply, gen = await store.start_reply(
        chat_id=chat.id, parent_id=None, user_content="one", model="m", idempotency_key="k"
    )
    with pytest.raises(GenerationConflict) as err:
        await store.start_reply(
            chat_id=chat.id, parent_id=None, user_content="one", model="m", idempotency_key="k"
        )
    assert (err.value.generation_id, err.value.message_id, err.value.same_key) == (
        gen.id,
        reply.id,
        True,
    )
    # After it finished, a retry with the key still finds it (and starts nothing new).
    await store.finish_reply(
        generation_id=gen.id,
        message_id=reply.id,
        status="complete",
        parts=TEXT,
        usage=None,
        finish_reason="stop",
        error=None,
    )
    with pytest.raises(GenerationConflict) as err:
        await store.start_reply(
            chat_id=chat.id, parent_id=None, user_content="one", model="m", idempotency_key="k"
        )
    assert (err.value.generation_id, err.value.same_key, err.value.running) == (
        gen.id,
        True,
        False,
    )
    # Keys are per chat.
    other = await store.create_chat(model="m")
    await store.start_reply(
        chat_id=other.id, parent_id=None, user_content="one", model="m", idempotency_key="k"
    )


async def test_bad_parents_are_refused_and_nothing_is_written(
    store: ChatStore, db: Database
) -> None:
    chat = await store.create_chat(model="m")
    theirs = await store.create_chat(model="m")
    _, foreign, _ = await store.start_reply(
        chat_id=theirs.id, parent_id=None, user_content="x", model="m"
    )
    before = await counts(db)
    for parent in (foreign.id, "msg_unknown"):
        with pytest.raises(InvalidOperation):
            await store.start_reply(chat_id=chat.id, parent_id=parent, user_content="y", model="m")
    with pytest.raises(InvalidOperation):  # regenerate needs a parent
        await store.start_reply(chat_id=chat.id, parent_id=None, user_content=None, model="m")
    with pytest.raises(NotFound):
        await store.start_reply(chat_id="chat_x", parent_id=None, user_content="y", model="m")
    assert await counts(db) == before
    assert (await store.get_chat(chat.id)).active_leaf_id is None


async def test_prior_messages_and_chosen_ids(store: ChatStore, db: Database) -> None:
    # The OpenAI-compatible gateway stores the history a client sent, then the reply,
    # with ids it announced before the write.
    chat = await store.create_chat(model="m")
    prior: list[tuple[Role, list[dict[str, Any]]]] = [
        ("system", [{"type": "text", "text": "Be terse."}]),
        ("user", [{"type": "text", "text": "2+2?"}]),
        ("assistant", [{"type": "text", "text": "4"}]),
        ("user", [{"type": "text", "text": "3+3?"}]),
    ]
    user, reply, gen = await store.start_reply(
        chat_id=chat.id,
        parent_id=None,
        user_content=None,
        model="m",
        prior=prior,
        message_id="msg_chosen",
        generation_id="gen_chosen",
    )
    assert user is None
    assert (reply.id, gen.id, gen.message_id) == ("msg_chosen", "gen_chosen", "msg_chosen")
    branch = await store.active_branch(chat.id)
    assert [(m.role, m.parts, m.status) for m in branch[:-1]] == [
        (role, parts, "complete") for role, parts in prior
    ]
    assert branch[-1].id == "msg_chosen" and branch[-1].status == "streaming"
    assert [m.parent_id for m in branch] == [None] + [m.id for m in branch[:-1]]

    # prior and a user message together: the user message comes last, under prior.
    await store.finish_reply(
        generation_id=gen.id,
        message_id=reply.id,
        status="complete",
        parts=TEXT,
        usage=None,
        finish_reason="stop",
        error=None,
    )
    user, reply, _ = await store.start_reply(
        chat_id=chat.id,
        parent_id=reply.id,
        user_content="and 4+4?",
        model="m",
        prior=[("tool", [{"type": "text", "text": "calculator says 8"}])],
    )
    assert user is not None
    history = await store.active_branch(chat.id, leaf_id=reply.id)
    assert [m.role for m in history[-3:]] == ["tool", "user", "assistant"]
    assert history[-2].id == user.id

    # A chosen id that does not fit, or is taken, is refused and nothing is written.
    await store.interrupt_orphans()
    before = await counts(db)
    for message_id in ("m" * 41, "msg_chosen"):
        with pytest.raises(InvalidOperation):
            await store.start_reply(
                chat_id=chat.id, parent_id=None, user_content="x", model="m", message_id=message_id
            )
    with pytest.raises(InvalidOperation):
        await store.start_reply(
            chat_id=chat.id, parent_id=None, user_content="x", model="m", generation_id="gen_chosen"
        )
    assert await counts(db) == before


async def test_a_new_chat_and_its_first_reply_are_one_transaction(
    store: ChatStore, db: Database, log: StatementLog
) -> None:
    # The gateway's new chats: the chat, the history the client sent, the reply and its
    # generation in one commit (one of the three a call cost before).
    prior: list[tuple[Role, list[dict[str, Any]]]] = [("user", TEXT)]
    owner = await store.create_user("ann", password="a-long-password")
    log.commits = 0
    _, reply, gen = await store.start_reply(
        chat_id="chat_new",
        parent_id=None,
        user_content=None,
        model="m",
        prior=prior,
        new_chat=NewChat(system="Be terse.", title="Hello", user_id=owner.id),
    )
    assert log.commits == 1
    chat = await store.get_chat("chat_new")
    assert (chat.system, chat.title, chat.model, chat.user_id) == (
        "Be terse.",
        "Hello",
        "m",
        owner.id,
    )
    assert chat.active_leaf_id == reply.id == gen.message_id
    assert [m.role for m in await store.active_branch("chat_new")] == ["user", "assistant"]

    # A chat id that exists is refused, and nothing of the call is written.
    before = await counts(db)
    with pytest.raises(InvalidOperation, match="exists already"):
        await store.start_reply(
            chat_id="chat_new",
            parent_id=None,
            user_content="again",
            model="m",
            new_chat=NewChat(),
        )
    assert await counts(db) == before
    assert (await store.get_chat("chat_new")).title == "Hello"


async def test_the_database_allows_one_running_generation_per_chat(
    store: ChatStore, db: Database
) -> None:
    chat = await store.create_chat(model="m")
    _, reply, _ = await store.start_reply(
        chat_id=chat.id, parent_id=None, user_content="x", model="m"
    )
    # Bypassing the store: the unique partial index itself refuses a second one...
    insert = text(
        "INSERT INTO generations (id, chat_id, message_id, status, started_at, heartbeat_at)"
        " VALUES (:id, :chat, :msg, :status, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
    )
    values = {"chat": chat.id, "msg": reply.id}
    with pytest.raises(IntegrityError):
        async with db.writing() as conn:
            await conn.execute(insert, {**values, "id": "gen_second", "status": "running"})
    # ...while finished ones may be many.
    async with db.writing() as conn:
        for n in range(2):
            await conn.execute(insert, {**values, "id": f"gen_old{n}", "status": "finished"})


async def test_conflict_holds_across_two_engines(database_url: str, store: ChatStore) -> None:
    # Two Database instances are what two server processes would have: only the
    # database can tell them apart. Both race to start a reply in the same chat.
    chat = await store.create_chat(model="m")
    first, second = Database.from_url(database_url), Database.from_url(database_url)
    try:
        results = await asyncio.gather(
            *(
                ChatStore(db).start_reply(
                    chat_id=chat.id, parent_id=None, user_content=f"from {n}", model="m"
                )
                for n, db in enumerate((first, second) * 3)
            ),
            return_exceptions=True,
        )
    finally:
        await first.dispose()
        await second.dispose()
    started = [r for r in results if isinstance(r, tuple)]
    conflicts = [r for r in results if isinstance(r, GenerationConflict)]
    assert len(started) == 1 and len(conflicts) == 5, results
    winner = started[0][2]
    assert {c.generation_id for c in conflicts} == {winner.id}
    assert await store.running_generation(chat.id) == winner


async def test_finish_reply_writes_the_message_and_ends_the_generation(
    store: ChatStore, log: StatementLog
) -> None:
    chat = await store.create_chat(model="m")
    _, reply, gen = await store.start_reply(
        chat_id=chat.id, parent_id=None, user_content="x", model="m"
    )
    usage = {"input_tokens": 3, "output_tokens": 1, "estimated": False}
    commits = log.commits
    await store.finish_reply(
        generation_id=gen.id,
        message_id=reply.id,
        status="error",
        parts=TEXT,
        usage=usage,
        finish_reason="error",
        error="upstream failed",
        model="m-2024",
    )
    assert log.commits == commits + 1  # one transaction
    done = await store.get_message(reply.id)
    assert (done.status, done.parts, done.usage, done.finish_reason, done.error, done.model) == (
        "error",
        TEXT,
        usage,
        "error",
        "upstream failed",
        "m-2024",
    )
    assert done.completed_at is not None
    ended = await store.get_generation(gen.id)
    assert ended.status == "finished" and ended.ended_at is not None
    assert await store.running_generation(chat.id) is None
    # The chat is free for the next reply.
    await store.start_reply(chat_id=chat.id, parent_id=reply.id, user_content="y", model="m")


async def test_finish_reply_refuses_bad_input(store: ChatStore) -> None:
    chat = await store.create_chat(model="m")
    _, reply, gen = await store.start_reply(
        chat_id=chat.id, parent_id=None, user_content="x", model="m"
    )
    common: dict[str, Any] = {"parts": TEXT, "usage": None, "finish_reason": None, "error": None}
    with pytest.raises(InvalidOperation):
        await store.finish_reply(
            generation_id=gen.id, message_id=reply.id, status="streaming", **common
        )
    with pytest.raises(NotFound):
        await store.finish_reply(
            generation_id="gen_x", message_id=reply.id, status="complete", **common
        )
    with pytest.raises(NotFound):  # a generation of another message
        await store.finish_reply(
            generation_id=gen.id, message_id="msg_x", status="complete", **common
        )
    assert (await store.get_message(reply.id)).status == "streaming"
    assert await store.running_generation(chat.id) == gen


async def test_checkpoint_saves_many_replies_in_one_statement(
    store: ChatStore, log: StatementLog
) -> None:
    replies = []
    for n in range(3):
        chat = await store.create_chat(model="m")
        replies.append(
            await store.start_reply(chat_id=chat.id, parent_id=None, user_content=str(n), model="m")
        )
    finished_reply, finished_gen = replies[2][1], replies[2][2]
    await store.finish_reply(
        generation_id=finished_gen.id,
        message_id=finished_reply.id,
        status="stopped",
        parts=TEXT,
        usage=None,
        finish_reason=None,
        error=None,
    )
    items = [(r.id, [{"type": "text", "text": f"part {n}"}]) for n, (_, r, _) in enumerate(replies)]
    log.statements.clear()
    commits = log.commits
    await store.checkpoint(items)
    assert log.commits == commits + 1
    assert [verb for verb, _ in log.statements if verb != "BEGIN"] == ["UPDATE"]
    assert log.statements[-1][1] is True  # executemany
    for message_id, parts in items[:2]:
        saved = await store.get_message(message_id)
        assert (saved.parts, saved.status) == (parts, "streaming")
    # A reply that is no longer streaming keeps its final content.
    assert (await store.get_message(finished_reply.id)).parts == TEXT


async def test_heartbeat_and_interrupt_orphans(store: ChatStore, clock: Clock) -> None:
    gens = []
    for n in range(3):
        chat = await store.create_chat(model="m")
        gens.append(
            await store.start_reply(chat_id=chat.id, parent_id=None, user_content=str(n), model="m")
        )
    (_, live, live_gen), (_, stale, stale_gen), (_, dead, dead_gen) = gens
    await store.checkpoint([(stale.id, TEXT)])
    clock.now += timedelta(minutes=5)
    await store.heartbeat([live_gen.id, dead_gen.id], "worker-1")
    beat = await store.get_generation(live_gen.id)
    assert beat.worker_id == "worker-1" and beat.heartbeat_at > live_gen.heartbeat_at

    # Another worker sweeps what has not beaten for a minute.
    swept = await store.interrupt_orphans(stale_before=clock.now - timedelta(minutes=1))
    assert swept == [stale.id]
    interrupted = await store.get_message(stale.id)
    assert (interrupted.status, interrupted.parts) == ("interrupted", TEXT)
    assert interrupted.completed_at is not None
    assert (await store.get_generation(stale_gen.id)).status == "finished"

    # At shutdown (or start), everything but this process's live generations.
    assert await store.interrupt_orphans(exclude_generation_ids={live_gen.id}) == [dead.id]
    assert (await store.get_message(dead.id)).status == "interrupted"
    assert (await store.get_message(live.id)).status == "streaming"
    assert (await store.get_generation(live_gen.id)).status == "running"
    assert await store.interrupt_orphans() == [live.id]
    assert await store.interrupt_orphans() == []


async def test_empty_batches_are_no_ops(store: ChatStore, log: StatementLog) -> None:
    log.statements.clear()
    await store.checkpoint([])
    await store.heartbeat([], "w")
    assert log.statements == []


async def test_running_chats_of_a_user(store: ChatStore) -> None:
    alice = await store.create_user("alice", None)
    bob = await store.create_user("bob", None)
    chats = {
        name: await store.create_chat(model="m", user_id=owner)
        for name, owner in (("a1", alice.id), ("a2", alice.id), ("b", bob.id), ("none", None))
    }
    gens = {}
    for name, chat in chats.items():
        _, reply, gens[name] = await store.start_reply(
            chat_id=chat.id, parent_id=None, user_content="hi", model="m"
        )
        if name == "a2":  # ended: not running any more
            await store.finish_reply(
                generation_id=gens[name].id,
                message_id=reply.id,
                status="complete",
                parts=TEXT,
                usage=None,
                finish_reason="stop",
                error=None,
            )
    assert await store.running_chats_of_user(alice.id) == [chats["a1"].id]
    assert await store.running_chats_of_user(bob.id) == [chats["b"].id]
    assert await store.running_chats_of_user("user_nobody") == []
