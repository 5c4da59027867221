"""Alembic: an empty database upgraded to head has exactly the models' schema."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from streamkeep.store import ChatStore, Database
from streamkeep.store.external_users import ExternalIdentity
from streamkeep.store.migrations import (
    MIGRATIONS_DIR,
    alembic_config,
    downgrade_to,
    upgrade_to_head,
)
from streamkeep.store.models import Base


def _diff(conn: Connection) -> list[Any]:
    diff: list[Any] = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    return diff


async def test_upgrading_an_empty_database_gives_the_models_schema(db: Database) -> None:
    await db.upgrade()
    async with db.engine.connect() as conn:
        assert await conn.run_sync(_diff) == []


async def test_a_schema_the_models_disagree_with_is_detected(db: Database) -> None:
    # The check above can fail: a missing index (the one that allows a single running
    # generation per chat) shows up as a difference.
    await db.upgrade()
    async with db.engine.begin() as conn:
        await conn.execute(text("DROP INDEX uq_generations_running_chat_id"))
    async with db.engine.connect() as conn:
        diff = await conn.run_sync(_diff)
    assert [(kind, index.name) for kind, index in diff] == [
        ("add_index", "uq_generations_running_chat_id")
    ]


async def test_upgrade_is_idempotent_and_stamps_head(db: Database) -> None:
    await db.upgrade()
    await db.upgrade()
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    async with db.engine.connect() as conn:
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert version == head == "0008_external_identity"
    assert tables == {
        "alembic_version",
        "chats",
        "messages",
        "generations",
        "users",
        "sessions",
        "api_keys",
        "images",
        "image_owners",
    }


def test_revisions_ship_inside_the_package() -> None:
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert (MIGRATIONS_DIR / "versions" / "0001_initial.py").is_file()
    assert (MIGRATIONS_DIR / "versions" / "0002_chat_event_seq.py").is_file()
    assert (MIGRATIONS_DIR / "versions" / "0003_accounts.py").is_file()
    assert (MIGRATIONS_DIR / "versions" / "0004_message_api_key.py").is_file()
    assert (MIGRATIONS_DIR / "versions" / "0005_chat_tools.py").is_file()
    assert (MIGRATIONS_DIR / "versions" / "0006_message_fallbacks.py").is_file()
    assert (MIGRATIONS_DIR / "versions" / "0007_images.py").is_file()
    assert (MIGRATIONS_DIR / "versions" / "0008_external_identity.py").is_file()
    assert "streamkeep" in MIGRATIONS_DIR.parts


BATCH_REVISION = """
import sqlalchemy as sa
from alembic import op

revision = "0099_batch"
down_revision = "{head}"


def upgrade():
    with op.batch_alter_table("messages", recreate="always") as batch:
        batch.add_column(sa.Column("extra", sa.Text(), nullable=True))
"""


async def test_a_sqlite_table_rebuild_keeps_the_rows_that_reference_it(tmp_path: Path) -> None:
    # A later revision that makes SQLite rebuild `messages` (copy, drop, rename) must
    # not cascade-delete the generations that reference it.
    db = Database.from_url(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        await db.upgrade()
        store = ChatStore(db)
        chat = await store.create_chat(model="m")
        _, reply, gen = await store.start_reply(
            chat_id=chat.id, parent_id=None, user_content="hi", model="m"
        )
        location = tmp_path / "migrations"
        shutil.copytree(MIGRATIONS_DIR, location, ignore=shutil.ignore_patterns("__pycache__"))
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        (location / "versions" / "0099_batch.py").write_text(BATCH_REVISION.format(head=head))
        async with db.engine.connect() as conn:
            await conn.run_sync(lambda c: upgrade_to_head(c, location=location))
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        assert version == "0099_batch"
        assert (await store.get_generation(gen.id)).message_id == reply.id
        assert [m.id for m in await store.active_branch(chat.id)] == [reply.parent_id, reply.id]
        async with db.engine.connect() as conn:  # the pooled connection has them back on
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
    finally:
        await db.dispose()


async def upgrade_to(db: Database, tmp_path: Path, last: str) -> None:
    """Migrate an empty database with the revisions up to `last` (a file name's start)."""
    location = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, location, ignore=shutil.ignore_patterns("__pycache__"))
    for revision in (location / "versions").glob("*.py"):
        if revision.name[:4] > last:
            revision.unlink()
    async with db.engine.connect() as conn:
        await conn.run_sync(lambda c: upgrade_to_head(c, location=location))


async def chats_columns(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        return await conn.run_sync(
            lambda c: {col["name"] for col in inspect(c).get_columns("chats")}
        )


async def test_upgrading_a_0001_database_keeps_its_chats_and_numbers_them_from_1(
    db: Database, tmp_path: Path
) -> None:
    # A database made by 0001 alone, with a chat and a finished reply in it.
    await upgrade_to(db, tmp_path, "0001")
    now = "2026-01-01 12:00:00"
    async with db.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO chats (id, title, model, system, active_leaf_id, created_at,"
                " updated_at) VALUES ('chat_old', 'old', 'm', NULL, NULL, :now, :now)"
            ),
            {"now": datetime.fromisoformat(now + "+00:00")},
        )
    assert "event_seq" not in await chats_columns(db)

    await db.upgrade()  # 0001 -> head, on the database as it is

    async with db.engine.connect() as conn:
        assert await conn.run_sync(_diff) == []
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        seq = (await conn.execute(text("SELECT event_seq FROM chats"))).scalar()
    assert version == "0008_external_identity"
    assert seq == 0
    store = ChatStore(db)
    chat = await store.get_chat("chat_old")
    assert chat.title == "old" and chat.event_seq == 0
    # A reply in it numbers its events from 1, as before the upgrade.
    await store.start_reply(
        chat_id=chat.id, parent_id=None, user_content="hi", model="m", first_seq=1
    )
    assert (await store.get_chat(chat.id)).event_seq == 0


async def test_upgrading_a_0002_database_keeps_its_chats_as_nobodys(
    db: Database, tmp_path: Path
) -> None:
    await upgrade_to(db, tmp_path, "0002")
    store = ChatStore(db)
    async with db.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO chats (id, title, model, system, active_leaf_id, created_at,"
                " updated_at, event_seq) VALUES ('chat_old', 'old', 'm', NULL, NULL, :now,"
                " :now, 7)"
            ),
            {"now": datetime.fromisoformat("2026-01-01 12:00:00+00:00")},
        )
    assert "user_id" not in await chats_columns(db)

    await db.upgrade()

    async with db.engine.connect() as conn:
        assert await conn.run_sync(_diff) == []
        owner = (await conn.execute(text("SELECT user_id FROM chats"))).scalar_one()
    assert owner is None
    chat = await store.get_chat("chat_old")
    assert (chat.title, chat.event_seq) == ("old", 7)


async def test_0003_downgrades_to_0002_and_keeps_the_chats(db: Database) -> None:
    await db.upgrade()
    store = ChatStore(db)
    chat = await store.create_chat(model="m", title="kept")
    _, reply, _ = await store.start_reply(
        chat_id=chat.id, parent_id=None, user_content="hi", model="m"
    )
    async with db.engine.begin() as conn:  # a user who owns the chat
        await conn.execute(
            text(
                "INSERT INTO users (id, name, password_hash, is_admin, created_at)"
                " VALUES ('user_ada', 'ada', NULL, false, :now)"
            ),
            {"now": chat.created_at},
        )
        await conn.execute(text("UPDATE chats SET user_id = 'user_ada'"))

    async with db.engine.connect() as conn:
        await conn.run_sync(lambda c: downgrade_to(c, "0002_chat_event_seq"))
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert version == "0002_chat_event_seq"
    assert tables == {"alembic_version", "chats", "messages", "generations"}
    assert "user_id" not in await chats_columns(db)
    async with db.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT id, title FROM chats"))).all()
        messages = (await conn.execute(text("SELECT count(*) FROM messages"))).scalar()
    assert [tuple(r) for r in rows] == [(chat.id, "kept")]
    assert messages == 2 and reply.chat_id == chat.id

    await db.upgrade()  # and up again
    async with db.engine.connect() as conn:
        assert await conn.run_sync(_diff) == []


async def columns_of(db: Database, table: str) -> set[str]:
    async with db.engine.connect() as conn:
        return await conn.run_sync(lambda c: {col["name"] for col in inspect(c).get_columns(table)})


async def test_upgrading_a_0003_database_keeps_its_messages_with_no_key(
    db: Database, tmp_path: Path
) -> None:
    await upgrade_to(db, tmp_path, "0003")
    store = ChatStore(db)
    async with db.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO chats (id, title, model, system, active_leaf_id, created_at,"
                " updated_at, event_seq) VALUES ('chat_old', 'old', 'm', NULL, 'msg_old', :now,"
                " :now, 0)"
            ),
            {"now": datetime.fromisoformat("2026-01-01 12:00:00+00:00")},
        )
        await conn.execute(
            text(
                "INSERT INTO messages (id, chat_id, parent_id, role, parts, status, model,"
                " usage, created_at) VALUES ('msg_old', 'chat_old', NULL, 'assistant', '[]',"
                " 'complete', 'm', '{\"input_tokens\": 3}', :now)"
            ),
            {"now": datetime.fromisoformat("2026-01-01 12:00:00+00:00")},
        )
    assert "api_key_id" not in await columns_of(db, "messages")

    await db.upgrade()

    async with db.engine.connect() as conn:
        assert await conn.run_sync(_diff) == []
    message = await store.get_message("msg_old")
    assert message.api_key_id is None and message.usage == {"input_tokens": 3}


async def test_0004_keeps_a_replys_key_nulls_it_when_the_key_goes_and_downgrades(
    db: Database,
) -> None:
    await db.upgrade()
    store = ChatStore(db)
    user = await store.create_user("ada", None)
    key, _ = await store.create_api_key(user.id)
    chat = await store.create_chat(model="m", user_id=user.id)
    prompt, reply, _ = await store.start_reply(
        chat_id=chat.id, parent_id=None, user_content="hi", model="m", api_key_id=key.id
    )
    assert prompt is not None and prompt.api_key_id is None  # usage is the reply's
    assert reply.api_key_id == key.id
    assert (await store.get_message(reply.id)).api_key_id == key.id
    assert "api_key_id" not in reply.model_dump()  # internal, not in the API's JSON

    async with db.engine.begin() as conn:  # keys are revoked, not deleted; but if one is
        await conn.execute(text("DELETE FROM api_keys WHERE id = :id"), {"id": key.id})
    assert (await store.get_message(reply.id)).api_key_id is None

    async with db.engine.connect() as conn:
        await conn.run_sync(lambda c: downgrade_to(c, "0003_accounts"))
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        count = (await conn.execute(text("SELECT count(*) FROM messages"))).scalar()
    assert version == "0003_accounts"
    assert "api_key_id" not in await columns_of(db, "messages")
    assert count == 2

    await db.upgrade()  # and up again
    async with db.engine.connect() as conn:
        assert await conn.run_sync(_diff) == []
    assert (await store.get_message(reply.id)).api_key_id is None


async def test_0008_keeps_local_users_adds_external_identities_and_downgrades(
    db: Database, tmp_path: Path
) -> None:
    await upgrade_to(db, tmp_path, "0007")
    params = {"now": datetime.fromisoformat("2026-01-01 12:00:00+00:00")}
    async with db.engine.begin() as conn:  # a user of 0007
        await conn.execute(
            text(
                "INSERT INTO users (id, name, is_admin, created_at)"
                " VALUES ('u_ada', 'ada', false, :now)"
            ),
            params,
        )
    store = ChatStore(db)

    await db.upgrade()
    async with db.engine.connect() as conn:
        assert await conn.run_sync(_diff) == []
    kept = await store.get_user("u_ada")
    assert (kept.name, kept.issuer, kept.email) == ("ada", None, None)
    # Local users all have (NULL, NULL): the unique pair does not hold them apart.
    await store.create_user("bea", None)

    first = ExternalIdentity("https://idp.example", "42", name="ada", email="a@idp.example")
    user = await store.external_user(first)
    assert user.name.startswith("ada-") and user.issuer == "https://idp.example"
    assert (await store.external_user(first)).id == user.id  # found, not made again
    with pytest.raises(IntegrityError):  # a second user with the same (issuer, subject)
        async with db.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO users (id, name, is_admin, created_at, issuer, subject)"
                    " VALUES ('u_dup', 'dup', false, :now, 'https://idp.example', '42')"
                ),
                params,
            )

    async with db.engine.connect() as conn:
        await conn.run_sync(lambda c: downgrade_to(c, "0007_images"))
    assert not {"issuer", "subject", "email"} & await columns_of(db, "users")
    async with db.engine.connect() as conn:
        names = (await conn.execute(text("SELECT name FROM users ORDER BY name"))).scalars()
        assert sorted(names) == sorted(["ada", "bea", user.name])
