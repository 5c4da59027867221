"""ChatStore: users, sign-in sessions and API keys, and what each refuses."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from argon2 import PasswordHasher
from argon2.profiles import CHEAPEST
from sqlalchemy import text

from streamkeep.store import (
    AlreadyExists,
    ChatStore,
    Database,
    InvalidOperation,
    NotFound,
    UserRecord,
)
from streamkeep.store import accounts as accounts_module
from streamkeep.store.credentials import KEY_PATTERN, needs_rehash, new_api_key, secret_hash
from tests.store.conftest import Clock

HOUR = timedelta(hours=1)


async def raw(db: Database, sql: str, **params: Any) -> list[Any]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(text(sql), params)).all())


async def user(store: ChatStore, name: str = "ada", password: str | None = "pw") -> UserRecord:
    return await store.create_user(name, password)


# Users


async def test_create_get_list_and_count_users(store: ChatStore, db: Database) -> None:
    assert await store.count_users() == 0
    assert await store.list_users() == []
    ada = await store.create_user("ada", "correct horse", is_admin=True)
    bob = await store.create_user("Zoë Bob", None)
    assert ada.id.startswith("user_") and len(ada.id) == 25
    assert (ada.name, ada.is_admin, ada.disabled_at) == ("ada", True, None)
    assert (bob.name, bob.is_admin) == ("Zoë Bob", False)
    assert await store.get_user(ada.id) == ada
    assert await store.get_user_by_name("Zoë Bob") == bob
    assert await store.list_users() == [ada, bob]
    assert await store.count_users() == 2
    assert "password_hash" not in ada.model_dump()
    [(stored,)] = await raw(db, "SELECT password_hash FROM users WHERE name = 'ada'")
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    [(nothing,)] = await raw(db, "SELECT password_hash FROM users WHERE name = 'Zoë Bob'")
    assert nothing is None


async def test_unknown_users_are_not_found(store: ChatStore) -> None:
    with pytest.raises(NotFound) as err:
        await store.get_user_by_name("nobody")
    assert (err.value.what, err.value.id) == ("user", "nobody")
    with pytest.raises(NotFound):
        await store.get_user("user_nope")
    with pytest.raises(NotFound):
        await store.disable_user("user_nope")


async def test_a_taken_name_is_refused(store: ChatStore) -> None:
    await user(store, "ada")
    with pytest.raises(AlreadyExists) as err:
        await store.create_user("ada", "other", is_admin=True)
    assert (err.value.kind, err.value.what, err.value.name) == ("already_exists", "user", "ada")
    assert await store.count_users() == 1
    assert (await store.get_user_by_name("ada")).is_admin is False


@pytest.mark.parametrize(
    "name", ["", "a" * 65, "a\nb", "a\x00b", "tab\there", " ada", "ada ", "\u200bada", "a\x7f"]
)
async def test_bad_user_names_are_refused(store: ChatStore, name: str) -> None:
    with pytest.raises(InvalidOperation):
        await store.create_user(name, None)
    assert await store.count_users() == 0


async def test_names_of_64_characters_and_any_script_are_fine(store: ChatStore) -> None:
    assert (await store.create_user("a" * 64, None)).name == "a" * 64
    assert (await store.create_user("Ada Lovelace-Byron", None)).name == "Ada Lovelace-Byron"
    assert (await store.create_user("李小龍", None)).name == "李小龍"


async def test_an_empty_password_is_refused(store: ChatStore) -> None:
    with pytest.raises(InvalidOperation):
        await store.create_user("ada", "")


async def test_check_password(store: ChatStore) -> None:
    ada = await store.create_user("ada", "correct horse")
    await store.create_user("bob", None)
    assert await store.check_password("ada", "correct horse") == ada
    assert await store.check_password("ada", "Correct horse") is None
    assert await store.check_password("ada", "") is None
    assert await store.check_password("nobody", "correct horse") is None
    assert await store.check_password("bob", "") is None  # has no password
    await store.disable_user(ada.id)
    assert await store.check_password("ada", "correct horse") is None


async def test_a_weak_hash_is_replaced_at_the_next_sign_in(store: ChatStore, db: Database) -> None:
    ada = await store.create_user("ada", None)
    weak = PasswordHasher.from_parameters(CHEAPEST).hash("pw")
    async with db.engine.begin() as conn:
        await conn.execute(text("UPDATE users SET password_hash = :h"), {"h": weak})
    assert await store.check_password("ada", "pw") == ada
    [(stored,)] = await raw(db, "SELECT password_hash FROM users")
    assert stored != weak and not needs_rehash(stored)
    assert await store.check_password("ada", "pw") == ada


# Sessions


async def test_a_session_is_found_by_its_token_only(store: ChatStore, db: Database) -> None:
    ada = await user(store)
    session, token = await store.create_session(ada.id, lifetime=HOUR)
    assert session.id.startswith("sess_") and session.user_id == ada.id
    assert session.expires_at == session.created_at + HOUR and session.revoked_at is None
    assert await store.lookup_session(token) == (ada, session)
    assert await store.lookup_session(token[:-1]) is None
    assert await store.lookup_session("") is None
    # Only the token's hash is stored.
    [row] = await raw(db, "SELECT * FROM sessions")
    assert secret_hash(token) in tuple(row) and token not in tuple(row)
    assert "token_hash" not in session.model_dump()


async def test_an_expired_session_is_refused(store: ChatStore, clock: Clock) -> None:
    ada = await user(store)
    session, token = await store.create_session(ada.id, lifetime=HOUR)
    clock.step = timedelta(0)
    clock.now = session.expires_at - timedelta(microseconds=1)
    assert await store.lookup_session(token) is not None
    clock.now = session.expires_at  # its end is past it
    assert await store.lookup_session(token) is None


async def test_a_revoked_session_is_refused(store: ChatStore) -> None:
    ada = await user(store)
    _, token = await store.create_session(ada.id, lifetime=HOUR)
    _, other = await store.create_session(ada.id, lifetime=HOUR)
    await store.revoke_session(token)
    assert await store.lookup_session(token) is None
    assert await store.lookup_session(other) is not None
    await store.revoke_session(token)  # again, and an unknown token: nothing happens
    await store.revoke_session("no such token")


async def test_sessions_are_only_made_for_enabled_users(store: ChatStore) -> None:
    ada = await user(store)
    with pytest.raises(InvalidOperation):
        await store.create_session(ada.id, lifetime=timedelta(0))
    with pytest.raises(NotFound):
        await store.create_session("user_nope", lifetime=HOUR)
    await store.disable_user(ada.id)
    with pytest.raises(InvalidOperation):
        await store.create_session(ada.id, lifetime=HOUR)


# API keys


async def test_an_api_key_is_given_once_and_kept_as_a_hash(store: ChatStore, db: Database) -> None:
    ada = await user(store)
    record, key = await store.create_api_key(ada.id, name="laptop")
    assert KEY_PATTERN.fullmatch(key)
    assert record.id.startswith("key_") and record.user_id == ada.id
    assert (record.name, record.prefix, record.allowed_models) == ("laptop", key[:16], None)
    assert (record.last_used_at, record.revoked_at) == (None, None)
    assert not {"key_hash", "key"} & set(record.model_dump())
    [row] = await raw(db, "SELECT * FROM api_keys")
    assert secret_hash(key) in tuple(row) and key not in tuple(row)
    assert await store.list_api_keys(ada.id) == [record]


async def test_a_key_is_found_and_its_use_noted_once_a_minute(
    store: ChatStore, db: Database, clock: Clock
) -> None:
    ada = await user(store)
    record, key = await store.create_api_key(ada.id, allowed_models=["local/smollm2"])
    found = await store.lookup_api_key(key)
    assert found is not None
    owner, used = found
    assert owner == ada and used.id == record.id and used.allowed_models == ["local/smollm2"]
    first_use = used.last_used_at
    assert first_use is not None and first_use > record.created_at
    assert (await store.list_api_keys(ada.id))[0].last_used_at == first_use

    clock.now += timedelta(seconds=59)
    again = await store.lookup_api_key(key)
    assert again is not None and again[1].last_used_at == first_use
    assert (await store.list_api_keys(ada.id))[0].last_used_at == first_use

    clock.now += timedelta(seconds=2)
    later = await store.lookup_api_key(key)
    assert later is not None and later[1].last_used_at is not None
    assert later[1].last_used_at > first_use
    assert (await store.list_api_keys(ada.id))[0].last_used_at == later[1].last_used_at


async def test_a_wrong_key_with_a_real_prefix_is_refused(store: ChatStore) -> None:
    ada = await user(store)
    _, key = await store.create_api_key(ada.id)
    last = "A" if key[-1] != "A" else "B"
    assert await store.lookup_api_key(key[:-1] + last) is None
    assert await store.lookup_api_key(new_api_key()) is None
    assert await store.lookup_api_key(key[:16]) is None
    assert await store.lookup_api_key("") is None
    assert (await store.list_api_keys(ada.id))[0].last_used_at is None


async def test_a_revoked_key_is_refused(store: ChatStore) -> None:
    ada = await user(store)
    revoked, key = await store.create_api_key(ada.id)
    _, kept = await store.create_api_key(ada.id)
    done = await store.revoke_api_key(ada.id, revoked.id)
    assert done.revoked_at is not None and done.id == revoked.id
    assert await store.lookup_api_key(key) is None
    assert await store.lookup_api_key(kept) is not None
    assert (await store.revoke_api_key(ada.id, revoked.id)).revoked_at == done.revoked_at


async def test_another_users_key_id_is_not_found(store: ChatStore) -> None:
    ada, bob = await user(store, "ada"), await user(store, "bob")
    record, key = await store.create_api_key(ada.id)
    with pytest.raises(NotFound) as err:
        await store.revoke_api_key(bob.id, record.id)
    assert (err.value.what, err.value.id) == ("api key", record.id)
    with pytest.raises(NotFound):
        await store.revoke_api_key(ada.id, "key_nope")
    assert await store.lookup_api_key(key) is not None  # untouched
    assert await store.list_api_keys(bob.id) == []


async def test_keys_are_listed_per_user_oldest_first_revoked_ones_too(store: ChatStore) -> None:
    ada, bob = await user(store, "ada"), await user(store, "bob")
    first, _ = await store.create_api_key(ada.id, name="one")
    await store.create_api_key(bob.id, name="bob's")
    second, _ = await store.create_api_key(ada.id, name="two")
    revoked = await store.revoke_api_key(ada.id, first.id)
    assert await store.list_api_keys(ada.id) == [revoked, second]


async def test_all_keys_are_listed_oldest_first(store: ChatStore) -> None:
    assert await store.list_all_api_keys() == []
    ada, bob = await user(store, "ada"), await user(store, "bob")
    first, _ = await store.create_api_key(ada.id, name="one")
    bobs, _ = await store.create_api_key(bob.id)
    second, _ = await store.create_api_key(ada.id, name="two")
    revoked = await store.revoke_api_key(ada.id, first.id)
    assert await store.list_all_api_keys() == [revoked, bobs, second]


async def test_a_key_is_revoked_by_its_prefix(store: ChatStore) -> None:
    ada, bob = await user(store, "ada"), await user(store, "bob")
    record, key = await store.create_api_key(ada.id, name="laptop")
    _, kept = await store.create_api_key(bob.id)
    done = await store.revoke_api_key_by_prefix(record.prefix)
    assert done.id == record.id and done.name == "laptop" and done.revoked_at is not None
    assert await store.lookup_api_key(key) is None
    assert await store.lookup_api_key(kept) is not None
    # Again: its first revocation stands.
    assert (await store.revoke_api_key_by_prefix(record.prefix)).revoked_at == done.revoked_at
    # Only the exact prefix: not the whole key, not another case.
    for unknown in ("sk-keep-nothere", key, "", record.prefix.upper()):
        with pytest.raises(NotFound) as err:
            await store.revoke_api_key_by_prefix(unknown)
        assert (err.value.what, err.value.id) == ("api key", unknown)
    assert await store.lookup_api_key(kept) is not None


async def test_keys_are_only_made_for_enabled_users_with_sound_labels(store: ChatStore) -> None:
    ada = await user(store)
    with pytest.raises(NotFound):
        await store.create_api_key("user_nope")
    with pytest.raises(InvalidOperation):
        await store.create_api_key(ada.id, name="a\nb")
    with pytest.raises(InvalidOperation):
        await store.create_api_key(ada.id, allowed_models=[])
    await store.disable_user(ada.id)
    with pytest.raises(InvalidOperation):
        await store.create_api_key(ada.id)
    assert await store.list_api_keys(ada.id) == []


async def test_a_taken_prefix_is_drawn_again(
    store: ChatStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    ada = await user(store)
    first, key = await store.create_api_key(ada.id)
    # The next draw repeats the stored key's prefix (with another secret), then the
    # draws are random again.
    draws = iter([key[:16] + new_api_key()[16:]])
    monkeypatch.setattr(accounts_module, "new_api_key", lambda: next(draws, None) or new_api_key())
    second, other = await store.create_api_key(ada.id)
    assert second.prefix != first.prefix and other[:16] == second.prefix
    assert await store.lookup_api_key(other) is not None
    assert await store.lookup_api_key(key) is not None


# Disabling


async def test_disabling_a_user_ends_their_sessions_and_keys_only(
    store: ChatStore, db: Database
) -> None:
    ada, bob = await user(store, "ada"), await user(store, "bob")
    _, ada_token = await store.create_session(ada.id, lifetime=HOUR)
    _, ada_key = await store.create_api_key(ada.id)
    old, _ = await store.create_api_key(ada.id)
    old = await store.revoke_api_key(ada.id, old.id)
    _, bob_token = await store.create_session(bob.id, lifetime=HOUR)
    _, bob_key = await store.create_api_key(bob.id)

    disabled = await store.disable_user(ada.id)
    assert disabled.disabled_at is not None and disabled.name == "ada"
    assert await store.lookup_session(ada_token) is None
    assert await store.lookup_api_key(ada_key) is None
    assert await store.lookup_session(bob_token) is not None
    assert await store.lookup_api_key(bob_key) is not None
    # Revoked in the database, not only refused while the user is disabled.
    sessions = await raw(db, "SELECT revoked_at FROM sessions WHERE user_id = :u", u=ada.id)
    assert [r is not None for (r,) in sessions] == [True]
    keys = {k.id: k.revoked_at for k in await store.list_api_keys(ada.id)}
    assert keys[old.id] == old.revoked_at  # revoked before: keeps its time
    assert all(at is not None for at in keys.values())

    assert (await store.disable_user(ada.id)).disabled_at == disabled.disabled_at
    assert await store.count_users() == 2
    assert [u.disabled_at is not None for u in await store.list_users()] == [True, False]


async def test_chats_made_before_accounts_belong_to_nobody(store: ChatStore, db: Database) -> None:
    chat = await store.create_chat(model="m")
    assert await raw(db, "SELECT user_id FROM chats WHERE id = :c", c=chat.id) == [(None,)]
    assert "user_id" not in chat.model_dump()


async def test_the_first_user_adopts_the_ownerless_chats(store: ChatStore, db: Database) -> None:
    old = [await store.create_chat(model="m") for _ in range(3)]
    ada, adopted = await store.create_user_adopting("ada", "pw")
    assert adopted == 3
    owners = await raw(db, "SELECT id, user_id, updated_at FROM chats")
    assert {(c, u) for c, u, _ in owners} == {(c.id, ada.id) for c in old}
    # A change of owner is not an update of the chat: the list keeps its order.
    assert [c.id for c in (await store.list_chats())[0]] == [c.id for c in reversed(old)]

    # Later users adopt nothing, even chats made ownerless after the first user.
    newer = await store.create_chat(model="m")
    bob, adopted = await store.create_user_adopting("bob", "pw")
    assert adopted == 0
    assert await raw(db, "SELECT user_id FROM chats WHERE id = :c", c=newer.id) == [(None,)]
    assert await store.get_user(bob.id) == bob


async def test_create_user_adopts_too_and_a_refused_user_adopts_nothing(
    store: ChatStore, db: Database
) -> None:
    chat = await store.create_chat(model="m")
    with pytest.raises(InvalidOperation):
        await store.create_user_adopting(" ada", "pw")
    with pytest.raises(InvalidOperation):
        await store.create_user_adopting("ada", "")
    assert await raw(db, "SELECT user_id FROM chats") == [(None,)]
    ada = await store.create_user("ada", None)
    assert await raw(db, "SELECT user_id FROM chats WHERE id = :c", c=chat.id) == [(ada.id,)]


async def test_a_first_user_without_chats_adopts_none(store: ChatStore) -> None:
    _, adopted = await store.create_user_adopting("ada", None, is_admin=True)
    assert adopted == 0
