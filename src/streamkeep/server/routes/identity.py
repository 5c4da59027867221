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
from fastapi.responses import RedirectResponse

from streamkeep.config import LimitSpec, Settings
from streamkeep.http.auth import SESSION_COOKIE, CallerDep, check_model
from streamkeep.http.deps import QuotasDep, SettingsDep, StoreDep
from streamkeep.http.limits import Subject
from streamkeep.server.errors import RequestRefused
from streamkeep.server.oidc import CALLBACK_PATH, LOGIN_PATH, OidcSignIn
from streamkeep.server.schemas import (
    ERROR_RESPONSES,
    AuthMethods,
    KeyCreate,
    KeyCreated,
    KeyList,
    Login,
    Me,
    OidcMethod,
)
from streamkeep.store import ChatStore
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
    if not settings.password_login:
        raise RequestRefused(
            403,
            "password_login_disabled",
            "password sign-in is off here: sign in with "
            f"{settings.oidc_provider_name} (GET {LOGIN_PATH})",
        )
    user = await store.check_password(body.name, body.password)
    if user is None:  # unknown name, wrong password or disabled user: one answer
        raise RequestRefused(401, "unauthorized", "wrong user name or password")
    response = Response(Me(auth=True, user=user).model_dump_json(), media_type="application/json")
    await start_session(response, request, store, settings, user)
    return response


async def start_session(
    response: Response, request: Request, store: ChatStore, settings: Settings, user: UserRecord
) -> None:
    """A new page session for `user`, its cookie set on `response`."""
    lifetime = timedelta(seconds=settings.session_lifetime)
    _, token = await store.create_session(user.id, lifetime=lifetime)
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


@router.get("/api/auth/methods", response_model=AuthMethods)
async def auth_methods(settings: SettingsDep) -> AuthMethods:
    """How the page may sign in (no credentials needed): password, and/or the OIDC
    provider's button."""
    oidc = None
    if settings.oidc_enabled:
        oidc = OidcMethod(name=settings.oidc_provider_name, url=LOGIN_PATH)
    return AuthMethods(password=settings.password_login, oidc=oidc)


@router.get(LOGIN_PATH, status_code=302, response_class=Response)
async def oidc_login(request: Request) -> Response:
    """Start the OIDC sign-in: a redirect to the provider (404 unless configured)."""
    return await _oidc(request).start(request)


@router.get(CALLBACK_PATH, status_code=302, response_class=Response)
async def oidc_callback(request: Request, store: StoreDep, settings: SettingsDep) -> Response:
    """The provider's redirect back: checks the code, signs the user in (a session
    cookie, as `POST /api/auth/login`) and sends the browser to the page."""
    oidc = _oidc(request)
    identity = await oidc.finish(request)
    user = await store.external_user(identity, refresh=True)
    if user.disabled_at is not None:
        raise RequestRefused(403, "forbidden", f"the user {user.name!r} is disabled here")
    response = RedirectResponse("/", status_code=302)
    oidc.clear_state(response, request)
    await start_session(response, request, store, settings, user)
    return response


def _oidc(request: Request) -> OidcSignIn:
    oidc: OidcSignIn | None = request.app.state.oidc
    if oidc is None:
        raise RequestRefused(404, "not_found", "OIDC sign-in is not configured here")
    return oidc


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
