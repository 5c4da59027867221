"""Users, their sign-in sessions and API keys. Part of `ChatStore` (see
`store.repository`).

The first user created adopts the chats made before there were users (single-user
mode: `chats.user_id` NULL), in the transaction that creates them: those chats were
made by whoever runs the server, who is the one creating the first account.

Secrets never leave this module: a password is checked here (`check_password`), a
session token or API key is looked up here, and the records returned hold no hash.
Every lookup that fails says only None, whatever the reason (unknown, wrong, expired,
revoked, disabled user), so a caller cannot give away which.

An API key's `last_used_at` is written at most once a minute (`KEY_TOUCH_INTERVAL`), so
a busy key costs one write a minute, not one per request.
"""

from __future__ import annotations

import asyncio
import unicodedata
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from streamkeep.store.credentials import (
    PREFIX_LENGTH,
    UNKNOWN_USER_HASH,
    hash_password,
    hashes_match,
    key_prefix,
    needs_rehash,
    new_api_key,
    new_session_token,
    secret_hash,
    verify_password,
)
from streamkeep.store.errors import AlreadyExists, InvalidOperation, NotFound
from streamkeep.store.ids import api_key_id as new_api_key_id
from streamkeep.store.ids import session_id as new_session_id
from streamkeep.store.ids import user_id as new_user_id
from streamkeep.store.models import API_KEYS, CHATS, SESSIONS, USERS
from streamkeep.store.records import ApiKeyRecord, SessionRecord, UserRecord

if TYPE_CHECKING:
    from streamkeep.store.core import CoreConnection
    from streamkeep.store.db import Database

NAME_LENGTH = 64
KEY_TOUCH_INTERVAL = timedelta(minutes=1)
# A fresh key's prefix colliding with a stored one is a one in 10^14 event; trying again
# that many times makes it none.
_KEY_ATTEMPTS = 3

_u, _s, _k = USERS.c, SESSIONS.c, API_KEYS.c
_INSERT_USER = insert(USERS)
_USER_BY_ID = select(USERS).where(_u.id == bindparam("b_id"))
_USER_BY_NAME = select(USERS).where(_u.name == bindparam("b_name"))
_LIST_USERS = select(USERS).order_by(_u.created_at, _u.id)
_COUNT_USERS = select(func.count()).select_from(USERS)
# `updated_at` stays: a change of owner is not a change of the chat.
_ADOPT_OWNERLESS_CHATS = (
    update(CHATS).where(CHATS.c.user_id.is_(None)).values(user_id=bindparam("b_user"))
)
_DISABLE_USER = (
    update(USERS)
    .where(_u.id == bindparam("b_id"), _u.disabled_at.is_(None))
    .values(disabled_at=bindparam("b_now"))
)
_REHASH = (
    update(USERS)
    .where(_u.id == bindparam("b_id"), _u.password_hash == bindparam("b_old"))
    .values(password_hash=bindparam("b_new"))
)
_INSERT_SESSION = insert(SESSIONS)
_SESSION_BY_HASH = select(SESSIONS).where(_s.token_hash == bindparam("b_hash"))
_REVOKE_SESSION = (
    update(SESSIONS)
    .where(_s.token_hash == bindparam("b_hash"), _s.revoked_at.is_(None))
    .values(revoked_at=bindparam("b_now"))
)
_REVOKE_USER_SESSIONS = (
    update(SESSIONS)
    .where(_s.user_id == bindparam("b_id"), _s.revoked_at.is_(None))
    .values(revoked_at=bindparam("b_now"))
)
_INSERT_KEY = insert(API_KEYS)
_KEY_BY_PREFIX = select(API_KEYS).where(_k.prefix == bindparam("b_prefix"))
_KEY_OF_USER = select(API_KEYS).where(_k.id == bindparam("b_id"), _k.user_id == bindparam("b_user"))
_KEYS_OF_USER = (
    select(API_KEYS).where(_k.user_id == bindparam("b_user")).order_by(_k.created_at, _k.id)
)
_ALL_KEYS = select(API_KEYS).order_by(_k.created_at, _k.id)
_TOUCH_KEY = (
    update(API_KEYS)
    .where(
        _k.id == bindparam("b_id"),
        or_(_k.last_used_at.is_(None), _k.last_used_at <= bindparam("b_before")),
    )
    .values(last_used_at=bindparam("b_now"))
)
_REVOKE_KEY = (
    update(API_KEYS)
    .where(_k.id == bindparam("b_id"), _k.user_id == bindparam("b_user"), _k.revoked_at.is_(None))
    .values(revoked_at=bindparam("b_now"))
)
_REVOKE_KEY_BY_PREFIX = (
    update(API_KEYS)
    .where(_k.prefix == bindparam("b_prefix"), _k.revoked_at.is_(None))
    .values(revoked_at=bindparam("b_now"))
)
_REVOKE_USER_KEYS = (
    update(API_KEYS)
    .where(_k.user_id == bindparam("b_id"), _k.revoked_at.is_(None))
    .values(revoked_at=bindparam("b_now"))
)


def checked_name(name: str, what: str = "user name") -> str:
    """A user name or key label: 1 to 64 characters, no control or format characters,
    no space at either end."""
    if not 0 < len(name) <= NAME_LENGTH:
        raise InvalidOperation(f"a {what} is 1 to {NAME_LENGTH} characters long")
    if name != name.strip():
        raise InvalidOperation(f"a {what} does not start or end with a space")
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        raise InvalidOperation(f"a {what} has no control characters")
    return name


class Accounts:
    """`ChatStore`'s users, sessions and API keys."""

    _db: Database
    _clock: Callable[[], datetime]

    # Users

    async def create_user(
        self, name: str, password: str | None, *, is_admin: bool = False
    ) -> UserRecord:
        """A new user. `password` None: one who cannot sign in with a password (yet).
        The first user adopts the ownerless chats (see the module docstring and
        `create_user_adopting`, which also says how many). AlreadyExists if the name is
        taken; InvalidOperation for a bad name or an empty password."""
        user, _ = await self.create_user_adopting(name, password, is_admin=is_admin)
        return user

    async def create_user_adopting(
        self, name: str, password: str | None, *, is_admin: bool = False
    ) -> tuple[UserRecord, int]:
        """`create_user`, returning the user and how many ownerless chats became theirs
        (0 unless they are the first user). Created and adopted in one transaction.

        Two first users created at the same moment on PostgreSQL may both count as
        first: each chat still goes to exactly one of them (the second UPDATE skips the
        rows the first one took)."""
        checked_name(name)
        if password == "":
            raise InvalidOperation("a password is not empty")
        password_hash = None
        if password is not None:
            password_hash = await asyncio.to_thread(hash_password, password)
        row = {
            "id": new_user_id(),
            "name": name,
            "password_hash": password_hash,
            "is_admin": is_admin,
            "disabled_at": None,
            "created_at": self._clock(),
            "issuer": None,  # a local user (`store.external_users` makes the others)
            "subject": None,
            "email": None,
        }
        adopted = 0
        try:
            async with self._db.writing() as conn:
                first = (await conn.execute(_COUNT_USERS)).scalar_one() == 0
                await conn.execute(_INSERT_USER, row)
                if first:
                    params = {"b_user": row["id"]}
                    adopted = (await conn.execute(_ADOPT_OWNERLESS_CHATS, params)).rowcount
        except IntegrityError:
            raise AlreadyExists("user", name) from None
        return UserRecord.model_validate(row), adopted

    async def get_user(self, user_id: str) -> UserRecord:
        async with self._db.reading() as conn:
            return UserRecord.model_validate(await _user_row(conn, user_id))

    async def get_user_by_name(self, name: str) -> UserRecord:
        async with self._db.reading() as conn:
            row = (await conn.execute(_USER_BY_NAME, {"b_name": name})).first()
        if row is None:
            raise NotFound("user", name)
        return UserRecord.model_validate(row)

    async def list_users(self) -> list[UserRecord]:
        """Every user, disabled ones too, oldest first."""
        async with self._db.reading() as conn:
            rows = (await conn.execute(_LIST_USERS)).all()
        return [UserRecord.model_validate(row) for row in rows]

    async def count_users(self) -> int:
        """How many users exist, disabled ones included (0: single-user mode)."""
        async with self._db.reading() as conn:
            count: int = (await conn.execute(_COUNT_USERS)).scalar_one()
        return count

    async def disable_user(self, user_id: str) -> UserRecord:
        """Disable the user and, in the same transaction, revoke their sessions and API
        keys. Disabling a disabled user keeps its first `disabled_at`."""
        now = self._clock()
        params = {"b_id": user_id, "b_now": now}
        async with self._db.writing() as conn:
            await _user_row(conn, user_id)
            await conn.execute(_DISABLE_USER, params)
            await conn.execute(_REVOKE_USER_SESSIONS, params)
            await conn.execute(_REVOKE_USER_KEYS, params)
            return UserRecord.model_validate(await _user_row(conn, user_id))

    async def check_password(self, name: str, password: str) -> UserRecord | None:
        """The user, if `password` is theirs and they are not disabled; else None. An
        unknown name takes as long as a wrong password. A hash made with older
        parameters is replaced by one with today's."""
        async with self._db.reading() as conn:
            row = (await conn.execute(_USER_BY_NAME, {"b_name": name})).first()
        stored: str | None = None
        if row is not None and row.disabled_at is None:
            stored = row.password_hash
        matches = await asyncio.to_thread(verify_password, stored or UNKNOWN_USER_HASH, password)
        if row is None or stored is None or not matches:
            return None
        if needs_rehash(stored):
            new = await asyncio.to_thread(hash_password, password)
            async with self._db.writing() as conn:
                await conn.execute(_REHASH, {"b_id": row.id, "b_old": stored, "b_new": new})
        return UserRecord.model_validate(row)

    # Sessions

    async def create_session(
        self, user_id: str, *, lifetime: timedelta
    ) -> tuple[SessionRecord, str]:
        """A session for the user, ending after `lifetime`; returns it and its token
        (given out only here: the store keeps its hash). NotFound for an unknown user,
        InvalidOperation for a disabled one."""
        if lifetime <= timedelta(0):
            raise InvalidOperation("a session's lifetime is positive")
        token = new_session_token()
        now = self._clock()
        row = {
            "id": new_session_id(),
            "user_id": user_id,
            "token_hash": secret_hash(token),
            "created_at": now,
            "expires_at": now + lifetime,
            "revoked_at": None,
        }
        async with self._db.writing() as conn:
            _check_enabled(await _user_row(conn, user_id))
            await conn.execute(_INSERT_SESSION, row)
        return SessionRecord.model_validate(row), token

    async def lookup_session(self, token: str) -> tuple[UserRecord, SessionRecord] | None:
        """The user and session of a token; None unless the session exists, is not
        revoked, has not expired, and its user is not disabled."""
        now = self._clock()
        async with self._db.reading() as conn:
            params = {"b_hash": secret_hash(token)}
            session = (await conn.execute(_SESSION_BY_HASH, params)).first()
            if session is None or session.revoked_at is not None or session.expires_at <= now:
                return None
            user = (await conn.execute(_USER_BY_ID, {"b_id": session.user_id})).first()
        if user is None or user.disabled_at is not None:
            return None
        return UserRecord.model_validate(user), SessionRecord.model_validate(session)

    async def revoke_session(self, token: str) -> None:
        """End the session of a token (sign-out); nothing happens for an unknown or
        already revoked token."""
        params = {"b_hash": secret_hash(token), "b_now": self._clock()}
        async with self._db.writing() as conn:
            await conn.execute(_REVOKE_SESSION, params)

    # API keys

    async def create_api_key(
        self,
        user_id: str,
        *,
        name: str | None = None,
        allowed_models: Sequence[str] | None = None,
    ) -> tuple[ApiKeyRecord, str]:
        """A new key for the user; returns it and the key itself (given out only here:
        the store keeps its prefix and hash). `allowed_models` None: every model.
        NotFound for an unknown user, InvalidOperation for a disabled one."""
        if name is not None:
            checked_name(name, "key name")
        if allowed_models is not None and not allowed_models:
            raise InvalidOperation("allowed_models lists at least one model (None: all)")
        models = list(allowed_models) if allowed_models is not None else None
        attempts = _KEY_ATTEMPTS
        while True:
            key = new_api_key()
            row = {
                "id": new_api_key_id(),
                "user_id": user_id,
                "name": name,
                "prefix": key[:PREFIX_LENGTH],
                "key_hash": secret_hash(key),
                "allowed_models": models,
                "created_at": self._clock(),
                "last_used_at": None,
                "revoked_at": None,
            }
            try:
                async with self._db.writing() as conn:
                    _check_enabled(await _user_row(conn, user_id))
                    await conn.execute(_INSERT_KEY, row)
            except IntegrityError:  # the prefix is taken
                attempts -= 1
                if attempts == 0:
                    raise
                continue
            return ApiKeyRecord.model_validate(row), key

    async def lookup_api_key(self, key: str) -> tuple[UserRecord, ApiKeyRecord] | None:
        """The user and record of a key; None unless it is a stored key (its hash
        compared in constant time), not revoked, of a user not disabled. Notes the
        use in `last_used_at` if the last note is a minute old or more."""
        prefix = key_prefix(key)
        if prefix is None:
            return None
        now = self._clock()
        async with self._db.reading() as conn:
            found = (await conn.execute(_KEY_BY_PREFIX, {"b_prefix": prefix})).first()
            if found is None or not hashes_match(found.key_hash, secret_hash(key)):
                return None
            if found.revoked_at is not None:
                return None
            user = (await conn.execute(_USER_BY_ID, {"b_id": found.user_id})).first()
        if user is None or user.disabled_at is not None:
            return None
        record = ApiKeyRecord.model_validate(found)
        if found.last_used_at is None or found.last_used_at <= now - KEY_TOUCH_INTERVAL:
            params = {"b_id": found.id, "b_now": now, "b_before": now - KEY_TOUCH_INTERVAL}
            async with self._db.writing() as conn:
                touched = (await conn.execute(_TOUCH_KEY, params)).rowcount
            if touched:
                record = record.model_copy(update={"last_used_at": now})
        return UserRecord.model_validate(user), record

    async def list_api_keys(self, user_id: str) -> list[ApiKeyRecord]:
        """The user's keys, revoked ones too (see `revoked_at`), oldest first."""
        async with self._db.reading() as conn:
            rows = (await conn.execute(_KEYS_OF_USER, {"b_user": user_id})).all()
        return [ApiKeyRecord.model_validate(row) for row in rows]

    async def list_all_api_keys(self) -> list[ApiKeyRecord]:
        """Every user's keys, revoked ones too, oldest first."""
        async with self._db.reading() as conn:
            rows = (await conn.execute(_ALL_KEYS)).all()
        return [ApiKeyRecord.model_validate(row) for row in rows]

    async def revoke_api_key(self, user_id: str, key_id: str) -> ApiKeyRecord:
        """Revoke one of the user's keys (again: it keeps its first `revoked_at`).
        NotFound for an unknown key id and for another user's."""
        params = {"b_id": key_id, "b_user": user_id, "b_now": self._clock()}
        async with self._db.writing() as conn:
            await conn.execute(_REVOKE_KEY, params)
            row = (await conn.execute(_KEY_OF_USER, params)).first()
        if row is None:
            raise NotFound("api key", key_id)
        return ApiKeyRecord.model_validate(row)

    async def revoke_api_key_by_prefix(self, prefix: str) -> ApiKeyRecord:
        """Revoke the key with this visible prefix, whoever's it is (an admin's tool:
        the prefix is what lists show). Again: it keeps its first `revoked_at`.
        NotFound for an unknown prefix."""
        params = {"b_prefix": prefix, "b_now": self._clock()}
        async with self._db.writing() as conn:
            await conn.execute(_REVOKE_KEY_BY_PREFIX, params)
            row = (await conn.execute(_KEY_BY_PREFIX, params)).first()
        if row is None:
            raise NotFound("api key", prefix)
        return ApiKeyRecord.model_validate(row)


async def _user_row(conn: CoreConnection, user_id: str) -> Any:
    row = (await conn.execute(_USER_BY_ID, {"b_id": user_id})).first()
    if row is None:
        raise NotFound("user", user_id)
    return row


def _check_enabled(user: Any) -> None:
    if user.disabled_at is not None:
        raise InvalidOperation(f"user {user.name!r} is disabled")
