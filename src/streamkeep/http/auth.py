"""Who is calling: a request's `Caller`, and whether auth is on at all.

Auth is off only in the single-user default: no user exists yet (and the server
listens on loopback: `streamkeep serve` refuses anything else without `--no-auth`).
Creating the first user turns it on, for every worker at its next request; users are
disabled, never deleted, so once on it stays on. Each worker reads it at start
(`AuthGate.start`). While the database is away, a worker that last read "no user"
keeps auth off (what needs the database fails by itself; a resume served from memory
or Redis goes on, as before accounts existed); one that never read it answers 503
rather than guess. `--no-auth` (`no_auth`) keeps it off whatever the users.

Configuring an external identity (a JWT issuer, trusted proxies) turns auth on from
the start: its users are created as they arrive.

With auth on, a request names its user by one of, first found wins:
- `Authorization: Bearer TOKEN`: a JWT (two dots: `http.tokens`) when `jwt_*` is set,
  else an API key; `Authorization: Bearer KEY` or `x-api-key: KEY` (the Anthropic
  SDK's header): an API key (`sk-keep-...`), for programs, the gateway's included;
- the proxy's user header, from a peer in `trusted_proxies` (`http.proxy_identity`);
- the `streamkeep_session` cookie, set by `POST /api/auth/login`, for the page.
Nothing, or a key or session that does not work (unknown, revoked, expired, a
disabled user's), is a 401 that says which to send, never why it failed; a JWT's 401
says what is wrong with it (`http.tokens`).

Isolation: every chat has an owner (`chats.user_id`), and `owned_chat` /
`owned_message` answer another user's id exactly as an unknown one (NotFound: a 404,
never a 403), so ids cannot be probed. The stores of every worker are one database, so
the check holds whichever worker a resume or stop lands on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, Request

from streamkeep.config import LimitsConfig
from streamkeep.http.auth_errors import IdentityUnavailable, Unauthorized
from streamkeep.http.limits import Limiter, Subject, subjects_for
from streamkeep.http.proxy_identity import TrustedHeaders
from streamkeep.http.tokens import JwtVerifier, looks_like_jwt
from streamkeep.llm.errors import UnknownModelError
from streamkeep.llm.registry import ModelRegistry
from streamkeep.store import ChatStore
from streamkeep.store.errors import NotFound
from streamkeep.store.external_users import ExternalIdentity
from streamkeep.store.records import ApiKeyRecord, ChatRecord, UserRecord

__all__ = ["AuthGate", "Caller", "IdentityUnavailable", "Unauthorized"]

logger = logging.getLogger(__name__)

SESSION_COOKIE = "streamkeep_session"
BEARER = "bearer "


@dataclass(frozen=True, slots=True)
class Caller:
    """The user a request acts for; `user` None: auth is off (the single user, who
    owns every chat)."""

    user: UserRecord | None = None
    #: the API key the request came with (None: the page's session, or auth off)
    key: ApiKeyRecord | None = None
    #: whom the request counts against (`http.limits`): the user, and the key
    subjects: tuple[Subject, ...] = ()

    @property
    def user_id(self) -> str | None:
        return self.user.id if self.user is not None else None

    @property
    def key_id(self) -> str | None:
        """The id of the request's API key, kept on the replies it asks for."""
        return self.key.id if self.key is not None else None

    @property
    def is_admin(self) -> bool:
        return self.user is None or self.user.is_admin

    def owns(self, owner_id: str | None) -> bool:
        return self.user is None or owner_id == self.user.id

    def may_use(self, model: str) -> bool:
        """Whether the key (if any) allows `model`; a refused model is answered as an
        unknown one (404), like another user's chat."""
        allowed = self.key.allowed_models if self.key is not None else None
        return allowed is None or model in allowed


SINGLE_USER = Caller()


class AuthGate:
    """Whether auth is on: see the module docstring."""

    def __init__(
        self,
        store: ChatStore,
        *,
        forced_off: bool,
        limiter: Limiter | None = None,
        limits: LimitsConfig | None = None,
        jwt: JwtVerifier | None = None,
        proxy: TrustedHeaders | None = None,
        always_on: bool = False,
    ) -> None:
        self._store = store
        self._forced_off = forced_off
        self._jwt = jwt
        self._proxy = proxy
        self._limiter = limiter or Limiter.in_memory()
        self._limits = limits or LimitsConfig()
        # An external identity needs no local user first: a product's users are many.
        self._on = always_on or jwt is not None or proxy is not None
        self._known = False  # a read has told whether a user exists

    async def start(self) -> None:
        """Read the state before the first request (the app's start needs the
        database anyway: migrations)."""
        await self.is_on()

    async def is_on(self) -> bool:
        if self._forced_off:
            return False
        if not self._on:
            # One small read per request until the first user exists; then none.
            try:
                self._on = await self._store.count_users() > 0
            except Exception:
                # Not knowing whether users exist, a request cannot be taken for the
                # single user's, who may read every chat (503). Knowing there was none
                # a moment ago, nothing here is anyone else's yet.
                if not self._known:
                    raise
                logger.debug("users unknown while the database is away: auth stays off")
            else:
                self._known = True
        return self._on

    async def caller(self, request: Request) -> Caller:
        """The request's caller, its request counted against its limits (a 429 if
        over one)."""
        if not await self.is_on():
            return SINGLE_USER
        caller = await self._identify(request)
        await self._limiter.admit_request(caller.subjects)
        return caller

    async def _identify(self, request: Request) -> Caller:
        key = _api_key(request)
        if key is not None and looks_like_jwt(key):
            if self._jwt is None:
                raise Unauthorized(
                    "the bearer token is a JWT, and this server takes none "
                    "(jwt_secret or jwt_jwks_url is not set): send an API key"
                )
            return await self._external(await self._jwt.identify(key))
        if key is not None:
            found = await self._store.lookup_api_key(key)
            if found is None:
                raise Unauthorized("the API key is not valid: it is unknown or was revoked")
            return self._caller(*found)
        if self._proxy is not None:
            identity = self._proxy.identify(request)
            if identity is not None:
                return await self._external(identity)
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            session = await self._store.lookup_session(token)
            if session is None:
                raise Unauthorized("the session has ended: sign in again")
            return self._caller(session[0], None)
        raise Unauthorized(
            "sign in, or send an API key: `Authorization: Bearer sk-keep-...` "
            "(create one with `streamkeep keys create --user NAME`)"
        )

    async def _external(self, identity: ExternalIdentity) -> Caller:
        """The caller an external identity names: one read for a known user, their
        creation the first time."""
        user = await self._store.external_user(identity)
        if user.disabled_at is not None:
            raise Unauthorized(f"the user {user.name!r} is disabled in streamkeep")
        return self._caller(user, None)

    def _caller(self, user: UserRecord, key: ApiKeyRecord | None) -> Caller:
        subjects = subjects_for(
            self._limits,
            user_id=user.id,
            user_name=user.name,
            key_id=key.id if key is not None else None,
            key_prefix=key.prefix if key is not None else None,
        )
        return Caller(user=user, key=key, subjects=subjects)


def _api_key(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is not None:
        if header[: len(BEARER)].lower() != BEARER or not header[len(BEARER) :].strip():
            raise Unauthorized("the Authorization header must be `Bearer KEY`")
        return header[len(BEARER) :].strip()
    return request.headers.get("x-api-key") or None


async def get_caller(request: Request) -> Caller:
    """The request's caller (FastAPI caches it per request, so routes and their
    routers' dependencies share one lookup)."""
    return await cast(AuthGate, request.app.state.auth).caller(request)


CallerDep = Annotated[Caller, Depends(get_caller)]


async def owned_chat(store: ChatStore, caller: Caller, chat_id: str) -> ChatRecord:
    """The chat, if the caller owns it; NotFound (as for an unknown id) otherwise."""
    chat = await store.get_chat(chat_id)
    if not caller.owns(chat.user_id):
        raise NotFound("chat", chat_id)
    return chat


async def owned_message(store: ChatStore, caller: Caller, message_id: str) -> ChatRecord:
    """The chat of a message the caller owns; NotFound (the message's) otherwise."""
    chat = await store.chat_of_message(message_id)
    if not caller.owns(chat.user_id):
        raise NotFound("message", message_id)
    return chat


def resolve_model(registry: ModelRegistry, caller: Caller, model: str) -> None:
    """Refuse a model the registry does not know, or the caller's key may not use,
    alike: UnknownModelError (a 404)."""
    check_model(caller, model)
    registry.resolve(model)


def check_model(caller: Caller, model: str) -> None:
    """Refuse a model the caller's key may not use, as an unknown one."""
    if not caller.may_use(model):
        raise UnknownModelError(f"model {model!r} is not available")


async def check_owner(
    store: ChatStore, caller: Caller, *, chat_id: str | None = None, message_id: str | None = None
) -> ChatRecord | None:
    """The chat (`chat_id`, or `message_id`'s), if the caller owns it; NotFound if
    not. With auth off there is nothing to check and no read (None): the routes tell
    an unknown id themselves."""
    if caller.user is None:
        return None
    if chat_id is not None:
        return await owned_chat(store, caller, chat_id)
    assert message_id is not None
    return await owned_message(store, caller, message_id)


async def check_reply_access(
    store: ChatStore,
    caller: Caller,
    *,
    chat_id: str | None = None,
    message_id: str | None = None,
    model: str | None = None,
) -> None:
    """Before a reply starts: `check_owner`, and the caller may use the model
    (`model`, else the chat's)."""
    chat = await check_owner(store, caller, chat_id=chat_id, message_id=message_id)
    if chat is not None:
        check_model(caller, model or chat.model)
