"""ChatStore.usage: one aggregate statement whose sums are exactly those of the stored
replies, per user, model, UTC day and API key, on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from streamkeep.store import ChatRecord, ChatStore, Database, InvalidOperation
from streamkeep.store.damage import load_json
from streamkeep.store.db import normalize_url
from tests.store.conftest import Clock
from tests.store.usage_sums import as_sums, summed_usage

GROUPS = ("user", "model", "day", "key")


def usage(i: int, o: int, r: int = 0, c: int = 0, *, estimated: bool = False) -> dict[str, Any]:
    return {
        "input_tokens": i,
        "output_tokens": o,
        "reasoning_tokens": r,
        "cached_input_tokens": c,
        "estimated": estimated,
    }


async def reply(
    store: ChatStore,
    chat: ChatRecord,
    used: dict[str, Any] | None,
    *,
    model: str = "m1",
    key: str | None = None,
    status: str = "complete",
) -> str:
    _, message, gen = await store.start_reply(
        chat_id=chat.id, parent_id=None, user_content="hi", model=model, api_key_id=key
    )
    await store.finish_reply(
        generation_id=gen.id,
        message_id=message.id,
        status=status,
        parts=[{"type": "text", "text": "ok"}],
        usage=used,
        finish_reason="stop",
        error=None,
    )
    return message.id


async def set_usage(db: Database, message_id: str, document: str) -> None:
    """Store `document` as the message's usage as it is (another tool wrote it)."""
    value = ":u" if db.is_sqlite else "CAST(:u AS JSONB)"
    async with db.engine.begin() as conn:
        await conn.execute(
            text(f"UPDATE messages SET usage = {value} WHERE id = :id"),
            {"u": document, "id": message_id},
        )


@dataclass
class Made:
    alice: str
    bob: str
    keys: dict[str, str]  # name -> prefix
    damaged: str  # a reply whose usage holds counts of the wrong JSON types


async def populate(store: ChatStore, db: Database, clock: Clock) -> Made:
    alice = await store.create_user("alice", None)
    bob = await store.create_user("bob", None)
    a1, _ = await store.create_api_key(alice.id, name="a1")
    a2, _ = await store.create_api_key(alice.id, name="a2")
    b1, _ = await store.create_api_key(bob.id, name="b1")
    single = await store.create_chat(model="m1")  # made before auth: nobody's
    mine = await store.create_chat(model="m1", user_id=alice.id)
    theirs = await store.create_chat(model="m2", user_id=bob.id)

    clock.now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    await reply(store, single, usage(3, 5))
    await reply(store, mine, usage(10, 20, 4, 2), key=a1.id)
    await reply(store, mine, usage(6, 9, estimated=True), model="m2", key=a2.id, status="stopped")
    await reply(store, mine, None, status="error")  # failed before any usage: not counted
    # A reply still streaming has no usage yet.
    await store.start_reply(chat_id=single.id, parent_id=None, user_content="x", model="m1")
    # The last millisecond of a UTC day, and the first of the next (the clock reads a
    # step after `now`).
    clock.now = datetime(2026, 1, 1, 23, 59, 59, 998000, tzinfo=UTC)
    await reply(store, theirs, usage(7, 1), model="m2", key=b1.id)
    clock.now = datetime(2026, 1, 1, 23, 59, 59, 999000, tzinfo=UTC)
    await reply(store, mine, usage(1, 1, estimated=True))

    # Rows another tool damaged: counted as the store's records read them.
    damaged = await reply(store, mine, usage(0, 0), key=a1.id)
    await set_usage(
        db,
        damaged,
        '{"input_tokens": "5", "output_tokens": 2.5, "reasoning_tokens": true,'
        ' "cached_input_tokens": 4, "estimated": "true"}',
    )
    for document in ("[1, 2]", '"text"', "null", "7"):  # not objects: not counted
        await set_usage(db, await reply(store, theirs, usage(100, 100)), document)
    if db.is_sqlite:  # SQLite keeps text that is not JSON at all in a JSON column
        await set_usage(db, await reply(store, theirs, usage(100, 100)), "{not json")
    branch = await store.active_branch(theirs.id)
    await set_usage(db, branch[0].id, '{"input_tokens": 50}')  # a user message: never counted
    return Made(
        alice.id, bob.id, {"a1": a1.prefix, "a2": a2.prefix, "b1": b1.prefix}, damaged=damaged
    )


@pytest.mark.parametrize("group_by", GROUPS)
async def test_usage_is_the_sum_over_the_stored_replies(
    store: ChatStore, db: Database, clock: Clock, group_by: str
) -> None:
    await populate(store, db, clock)
    found = await store.usage(group_by)  # type: ignore[arg-type]
    assert as_sums(found) == await summed_usage(store, db, group_by)
    assert found  # and not by both being empty


async def test_the_groups_and_their_numbers(store: ChatStore, db: Database, clock: Clock) -> None:
    made = await populate(store, db, clock)

    def row(messages: int, i: int, o: int, r: int, c: int, est: int) -> dict[str, Any]:
        return {
            "messages": messages,
            "input_tokens": i,
            "output_tokens": o,
            "reasoning_tokens": r,
            "cached_input_tokens": c,
            "estimated": est > 0,
            "estimated_messages": est,
        }

    by_user = await store.usage("user")
    assert [r.group for r in by_user] == ["(single-user)", "alice", "bob"]  # unnamed first
    assert [r.group_id for r in by_user] == [None, made.alice, made.bob]
    assert as_sums(by_user) == {
        "(single-user)": row(1, 3, 5, 0, 0, 0),
        # 10+6+1 in, 20+9+1 out, 4 reasoning, 2 + 4 (the damaged row's one sound count)
        "alice": row(4, 17, 30, 4, 6, 2),
        "bob": row(1, 7, 1, 0, 0, 0),
    }
    keys = made.keys
    assert as_sums(await store.usage("key")) == {
        "(no key)": row(2, 4, 6, 0, 0, 1),
        keys["a1"]: row(2, 10, 20, 4, 6, 0),
        keys["a2"]: row(1, 6, 9, 0, 0, 1),
        keys["b1"]: row(1, 7, 1, 0, 0, 0),
    }
    assert as_sums(await store.usage("model")) == {
        "m1": row(4, 14, 26, 4, 6, 1),
        "m2": row(2, 13, 10, 0, 0, 1),
    }
    by_day = await store.usage("day")
    assert [r.group for r in by_day] == ["2026-01-01", "2026-01-02"]
    assert [r.messages for r in by_day] == [4, 2]  # the damaged one is on the 2nd


async def test_from_to_and_user_filter(store: ChatStore, db: Database, clock: Clock) -> None:
    made = await populate(store, db, clock)
    last_ms = datetime(2026, 1, 1, 23, 59, 59, 999000, tzinfo=UTC)
    midnight = datetime(2026, 1, 2, tzinfo=UTC)
    cases: list[dict[str, Any]] = [
        {"start": midnight},
        {"end": midnight},
        {"start": last_ms, "end": midnight},  # `start` counts, `end` does not
        {"start": midnight, "end": midnight},
        {"user_id": made.alice},
        {"user_id": made.bob, "end": midnight},
        {"user_id": "user_nobody"},
    ]
    for filters in cases:
        for group_by in GROUPS:
            found = as_sums(await store.usage(group_by, **filters))  # type: ignore[arg-type]
            assert found == await summed_usage(store, db, group_by, **filters), filters
    around_midnight = await store.usage("user", start=last_ms, end=midnight)
    assert [(r.group, r.messages, r.input_tokens) for r in around_midnight] == [("bob", 1, 7)]
    assert await store.usage("key", start=midnight, end=midnight) == []


async def test_an_unknown_grouping_is_refused(store: ChatStore) -> None:
    with pytest.raises(InvalidOperation):
        await store.usage("week")  # type: ignore[arg-type]


async def test_days_are_utc_whatever_the_sessions_time_zone(
    store: ChatStore, db: Database, clock: Clock
) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite has no session time zone: it stores UTC text")
    await populate(store, db, clock)
    url = normalize_url(db.engine.url.render_as_string(hide_password=False))
    tokyo = Database(
        create_async_engine(
            url,
            json_deserializer=load_json,
            connect_args={"server_settings": {"timezone": "Asia/Tokyo"}},
        )
    )
    try:
        async with tokyo.engine.connect() as conn:
            assert (await conn.execute(text("SHOW timezone"))).scalar() == "Asia/Tokyo"
        assert await ChatStore(tokyo).usage("day") == await store.usage("day")
    finally:
        await tokyo.dispose()
