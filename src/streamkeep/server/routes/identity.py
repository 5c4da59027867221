"""Who you are: sign-in and sign-out for the page, `GET /api/me`, and the caller's own
API keys. When and how a request is authenticated: `http.auth`.

The page's session is a cookie: HttpOnly (no script reads it), SameSite=Strict (no
other site's page or link sends it), Secure when the request came over HTTPS, valid for
`session_lifetime` seconds and revocable (sign-out, or the user disabled). Writes with
it are also covered by the `Origin` check of `server.security` (CSRF: a cross-site
form or fetch carries a foreign `Origin` and is refused before routing).
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request, Response

from streamkeep.config import LimitSpec
from streamkeep.http.auth import SESSION_COOKIE, CallerDep, check_model
from streamkeep.http.deps import QuotasDep, SettingsDep, StoreDep
from streamkeep.http.limits import Subject
from streamkeep.server.errors import RequestRefused
from streamkeep.server.schemas import ERROR_RESPONSES, KeyCreate, KeyCreated, KeyList, Login, Me
from streamkeep.store.records import UserRecord

router = APIRouter(tags=["identity"], responses=ERROR_RESPONSES)


# Sign-in attempts per user name and minute, on every worker together: online password
# guessing gets nowhere, and each attempt's argon2 check costs the server real CPU.
LOGIN_ATTEMPTS = LimitSpec(requests_per_minute=10)


@router.post("/api/auth/login", response_model=Me)
async def login(
    body: Login, request: Request, store: StoreDep, settings: SettingsDep, quotas: QuotasDep
) -> Response:
    """Start a page session: sets the session cookie."""
    attempts = Subject("user", f"sign-in:{body.name}", body.name, LOGIN_ATTEMPTS)
    await quotas.limiter.admit_request([attempts])
    user = await store.check_password(body.name, body.password)
    if user is None:  # unknown name, wrong password or disabled user: one answer
        raise RequestRefused(401, "unauthorized", "wrong user name or password")
    lifetime = timedelta(seconds=settings.session_lifetime)
    _, token = await store.create_session(user.id, lifetime=lifetime)
    response = Response(Me(auth=True, user=user).model_dump_json(), media_type="application/json")
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(lifetime.total_seconds()),
        path="/",
        httponly=True,
        samesite="strict",
        secure=(
            settings.cookie_secure
            if settings.cookie_secure is not None
            else request.url.scheme == "https"
        ),
    )
    return response


@router.post("/api/auth/logout", status_code=204, response_class=Response)
async def logout(request: Request, store: StoreDep) -> Response:
    """End the page session (its cookie stops working on every worker at once)."""
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await store.revoke_session(token)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/api/me", response_model=Me)
async def me(caller: CallerDep) -> Me:
    """The caller: `auth` false and no `user` in the single-user default."""
    return Me(auth=caller.user is not None, user=caller.user, key=caller.key)


@router.get("/api/keys", response_model=KeyList)
async def list_keys(store: StoreDep, caller: CallerDep) -> KeyList:
    """The caller's API keys, revoked ones too (`revoked_at`); never the keys."""
    return KeyList(items=await store.list_api_keys(_user(caller.user).id))


@router.post("/api/keys", status_code=201, response_model=KeyCreated)
async def create_key(body: KeyCreate, store: StoreDep, caller: CallerDep) -> KeyCreated:
    """A new key for the caller; the answer's `key` is the only time it is shown. A
    request with a key limited to some models makes keys limited to those at most (a
    model beyond them is answered as unknown), so no key widens its own limit."""
    user = _user(caller.user)
    models = body.models
    if models is None and caller.key is not None:
        models = caller.key.allowed_models
    for model in models or ():
        check_model(caller, model)
    record, key = await store.create_api_key(user.id, name=body.name, allowed_models=models)
    return KeyCreated(**record.model_dump(), key=key)


@router.delete("/api/keys/{key_id}", status_code=204, response_class=Response)
async def revoke_key(key_id: str, store: StoreDep, caller: CallerDep) -> Response:
    """Revoke one of the caller's keys (another user's is a 404)."""
    await store.revoke_api_key(_user(caller.user).id, key_id)
    return Response(status_code=204)


def _user(user: UserRecord | None) -> UserRecord:
    if user is None:
        raise RequestRefused(
            422,
            "invalid_operation",
            "API keys belong to users, and auth is off: create the first user with "
            "`streamkeep users create NAME`",
        )
    return user
