"""Users who arrive from outside: an OIDC sign-in, a product's JWT, an auth proxy's
trusted header. Part of `ChatStore` (see `store.repository`).

Such a user is found by `(issuer, subject)`: who vouches for them and their id there
(the token's `sub`, the proxy's header). The first time, a user is created, named
after the identity's claims (`preferred_username`, `name`, the email's local part, the
subject: the first that is usable) and, if a local or other external user holds that
name already, the name with a short hash of the identity after it. A known user costs
one read: nothing is written per request (`refresh=True`, the page's sign-in, writes a
changed email or admin role).

An external user has no password; they do not adopt the chats made before there were
users (`Accounts.create_user` does: that is the operator, at the terminal).
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from streamkeep.store.accounts import NAME_LENGTH
from streamkeep.store.ids import user_id as new_user_id
from streamkeep.store.models import USERS
from streamkeep.store.records import UserRecord

if TYPE_CHECKING:
    from streamkeep.store.db import Database

_u = USERS.c
_BY_IDENTITY = select(USERS).where(
    _u.issuer == bindparam("b_issuer"), _u.subject == bindparam("b_subject")
)
_NAME_TAKEN = select(_u.id).where(_u.name == bindparam("b_name"))
_REFRESH = (
    update(USERS)
    .where(_u.id == bindparam("b_id"))
    .values(email=bindparam("b_email"), is_admin=bindparam("b_admin"))
)
_SUFFIX = 8  # hex characters of the identity's hash after a taken name
_FIELD_LENGTH = 255  # of `issuer` and `subject`
_EMAIL_LENGTH = 320


@dataclass(frozen=True, slots=True)
class ExternalIdentity:
    """Who an outside party says the caller is."""

    issuer: str
    subject: str
    #: the user name wanted (from claims or the header); None: from the email or subject
    name: str | None = None
    email: str | None = None
    #: the admin role, when the identity says (OIDC's configured claim); None: a new
    #: user is not an admin, a known one keeps theirs
    is_admin: bool | None = None

    def problem(self) -> str | None:
        """What makes this identity unusable, or None."""
        if not self.issuer or not self.subject:
            return "names no issuer or no subject"
        if len(self.issuer) > _FIELD_LENGTH or len(self.subject) > _FIELD_LENGTH:
            return f"has an issuer or subject over {_FIELD_LENGTH} characters"
        return None


class ExternalUsers:
    """`ChatStore`'s users from external identities."""

    _db: Database
    _clock: Callable[[], datetime]

    async def find_external_user(self, issuer: str, subject: str) -> UserRecord | None:
        async with self._db.reading() as conn:
            row = (
                await conn.execute(_BY_IDENTITY, {"b_issuer": issuer, "b_subject": subject})
            ).first()
        return UserRecord.model_validate(row) if row is not None else None

    async def external_user(
        self, identity: ExternalIdentity, *, refresh: bool = False
    ) -> UserRecord:
        """The identity's user, created the first time (see the module docstring).
        `refresh`: write a changed email or admin role to a known user. A disabled user
        is returned as such: the caller refuses them."""
        found = await self.find_external_user(identity.issuer, identity.subject)
        if found is not None:
            return await self._refreshed(found, identity) if refresh else found
        try:
            return await self._create(identity)
        except IntegrityError:
            # Created at the same moment by another request or worker: theirs is it.
            again = await self.find_external_user(identity.issuer, identity.subject)
            if again is not None:
                return again
        # Someone else took the name at the same moment: the name with the suffix.
        return await self._create(identity, suffixed=True)

    async def _create(self, identity: ExternalIdentity, *, suffixed: bool = False) -> UserRecord:
        wanted = user_name(identity)
        if suffixed:
            wanted = _with_suffix(wanted, identity)
        row: dict[str, Any] = {
            "id": new_user_id(),
            "name": wanted,
            "password_hash": None,
            "is_admin": bool(identity.is_admin),
            "disabled_at": None,
            "created_at": self._clock(),
            "issuer": identity.issuer,
            "subject": identity.subject,
            "email": _email(identity.email),
        }
        async with self._db.writing() as conn:
            if (await conn.execute(_NAME_TAKEN, {"b_name": wanted})).first() is not None:
                row["name"] = _with_suffix(wanted, identity)
            await conn.execute(insert(USERS), row)
        return UserRecord.model_validate(row)

    async def _refreshed(self, user: UserRecord, identity: ExternalIdentity) -> UserRecord:
        email = _email(identity.email) if identity.email is not None else user.email
        admin = identity.is_admin if identity.is_admin is not None else user.is_admin
        if email == user.email and admin == user.is_admin:
            return user
        params = {"b_id": user.id, "b_email": email, "b_admin": admin}
        async with self._db.writing() as conn:
            await conn.execute(_REFRESH, params)
        return user.model_copy(update={"email": email, "is_admin": admin})


def user_name(identity: ExternalIdentity) -> str:
    """The first usable of the wanted name, the email's local part and the subject,
    cut to the name length (a subject with control characters: their hash)."""
    email_name = identity.email.partition("@")[0] if identity.email else None
    for candidate in (identity.name, email_name, identity.subject):
        name = _clean(candidate or "")
        if name:
            return name
    return f"user-{_identity_hash(identity)}"


def _clean(name: str) -> str:
    kept = "".join(ch for ch in name if not unicodedata.category(ch).startswith("C"))
    return kept.strip()[:NAME_LENGTH].strip()


def _with_suffix(name: str, identity: ExternalIdentity) -> str:
    return f"{name[: NAME_LENGTH - _SUFFIX - 1].strip()}-{_identity_hash(identity)}"


def _identity_hash(identity: ExternalIdentity) -> str:
    digest = hashlib.sha256(f"{identity.issuer}\n{identity.subject}".encode()).hexdigest()
    return digest[:_SUFFIX]


def _email(email: str | None) -> str | None:
    return email[:_EMAIL_LENGTH] if email else None
