"""OIDC sign-in for the page: the authorization code flow with PKCE (S256) and a
nonce, through Authlib's Starlette client (discovery, the token request, the ID
token's signature, `iss`, `aud`, `exp` and nonce checked there).

The flow's state (Authlib's `state`, the PKCE verifier, the nonce) waits for the
browser's return in a cookie of its own, signed (itsdangerous) with a key derived from
the client secret (so any worker can read it), ten minutes at most, SameSite=Lax (the
provider's redirect back is a cross-site navigation) and only on `/api/auth/oidc/`.
No session middleware: it would sit on every request, streams' included.

The signed-in user is `(iss, sub)` in the users table (`store.external_users`),
created the first time; their email and admin role follow the claims at each sign-in.
Who may sign in at all: `oidc_allowed_domains` (the `email` claim's domain, unless
`email_verified` is false) and
`oidc_required_group` (in `oidc_groups_claim`); anyone else is a 403.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from streamkeep.config import Settings
from streamkeep.http.auth import IdentityUnavailable, Unauthorized
from streamkeep.server.errors import RequestRefused
from streamkeep.store.external_users import ExternalIdentity

STATE_COOKIE = "streamkeep_oidc"
STATE_PATH = "/api/auth/oidc"
STATE_MAX_AGE = 600
LOGIN_PATH = "/api/auth/oidc/login"
CALLBACK_PATH = "/api/auth/oidc/callback"


class OidcSignIn:
    def __init__(self, settings: Settings) -> None:
        assert settings.oidc_issuer and settings.oidc_client_id and settings.oidc_client_secret
        self.settings = settings
        self.name = settings.oidc_provider_name
        secret = settings.oidc_client_secret.get_secret_value()
        # Imported here, not with the module: Authlib and its HTTP clients add about
        # 15 MB to a server's memory, and only a server with OIDC configured uses them.
        from authlib.integrations.starlette_client import OAuth, OAuthError

        self._oauth_error: type[Exception] = OAuthError
        self._http_errors = _http_errors()
        self._start_errors = (OAuthError, *self._http_errors, ValueError)
        self.client: Any = OAuth().register(
            name="oidc",
            client_id=settings.oidc_client_id,
            client_secret=secret,
            server_metadata_url=(
                settings.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration"
            ),
            client_kwargs={"scope": settings.oidc_scopes, "code_challenge_method": "S256"},
        )
        key = hmac.new(secret.encode(), b"streamkeep oidc state", hashlib.sha256).hexdigest()
        self._signer = URLSafeTimedSerializer(key, salt="streamkeep-oidc-state")

    @classmethod
    def from_settings(cls, settings: Settings) -> OidcSignIn | None:
        return cls(settings) if settings.oidc_enabled else None

    async def start(self, request: Request) -> Response:
        """The redirect to the provider, with the flow's state in its cookie."""
        request.scope["session"] = {}
        redirect_uri = (
            self.settings.oidc_redirect_url or str(request.base_url).rstrip("/") + CALLBACK_PATH
        )
        try:
            response: Response = await self.client.authorize_redirect(request, redirect_uri)
        except self._start_errors as exc:  # discovery failed
            raise IdentityUnavailable(f"{self.name} could not be reached: {exc}") from None
        response.set_cookie(
            STATE_COOKIE,
            self._signer.dumps(dict(request.session)),
            max_age=STATE_MAX_AGE,
            path=STATE_PATH,
            httponly=True,
            samesite="lax",
            secure=self._secure(request),
        )
        return response

    async def finish(self, request: Request) -> ExternalIdentity:
        """The identity the provider vouches for, on the browser's way back."""
        request.scope["session"] = self._state(request)
        if "error" in request.query_params:
            said = request.query_params.get("error_description") or request.query_params["error"]
            raise Unauthorized(f"{self.name} did not sign you in: {said[:200]}")
        try:
            token = await self.client.authorize_access_token(request)
        except self._oauth_error as exc:
            raise Unauthorized(f"the sign-in with {self.name} failed: {_said(exc)}") from None
        except self._http_errors as exc:
            raise IdentityUnavailable(f"{self.name} could not be reached: {exc}") from None
        claims: dict[str, Any] = dict(token.get("userinfo") or {})
        self._check_allowed(claims)
        identity = ExternalIdentity(
            issuer=str(claims.get("iss", "")),
            subject=str(claims.get("sub", "")),
            name=_text(claims.get("preferred_username")) or _text(claims.get("name")),
            email=_text(claims.get("email")),
            is_admin=self._is_admin(claims),
        )
        problem = identity.problem()
        if problem is not None:
            raise Unauthorized(f"the ID token {problem}")
        return identity

    def clear_state(self, response: Response, request: Request) -> None:
        response.delete_cookie(
            STATE_COOKIE,
            path=STATE_PATH,
            httponly=True,
            samesite="lax",
            secure=self._secure(request),
        )

    def _state(self, request: Request) -> dict[str, Any]:
        raw = request.cookies.get(STATE_COOKIE)
        if not raw:
            return {}
        try:
            state: dict[str, Any] = self._signer.loads(raw, max_age=STATE_MAX_AGE)
        except BadSignature:  # tampered with, or expired (SignatureExpired)
            return {}
        return state

    def _check_allowed(self, claims: dict[str, Any]) -> None:
        domains = [d.lower().lstrip("@") for d in self.settings.oidc_allowed_domains]
        if domains:
            email = _text(claims.get("email")) or ""
            if email.rpartition("@")[2].lower() not in domains:
                raise RequestRefused(
                    403, "forbidden", f"{email or 'an account without email'} may not sign in here"
                )
            # Many providers let anyone register any address: one they say is not
            # verified proves no domain (as oauth2-proxy: refused when the claim says
            # false; a provider that never sends it is believed). Cognito sends a string.
            if str(claims.get("email_verified", True)).lower() == "false":
                raise RequestRefused(
                    403, "forbidden", f"{email} is not verified by {self.name}: it may not sign in"
                )
        group = self.settings.oidc_required_group
        if group is not None and group not in _values(claims.get(self.settings.oidc_groups_claim)):
            raise RequestRefused(403, "forbidden", f"only members of {group!r} may sign in here")

    def _is_admin(self, claims: dict[str, Any]) -> bool | None:
        wanted = self.settings.oidc_admin_value
        if wanted is None:
            return None  # admins are made with `streamkeep users`, as ever
        return wanted in _values(claims.get(self.settings.oidc_admin_claim))

    def _secure(self, request: Request) -> bool:
        configured = self.settings.cookie_secure
        return configured if configured is not None else request.url.scheme == "https"


def _values(claim: object) -> list[str]:
    """A claim as a list of strings: a list's, or a single value."""
    if isinstance(claim, list):
        return [str(v) for v in claim]
    return [str(claim)] if claim is not None else []


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _http_errors() -> tuple[type[Exception], ...]:
    """Authlib's HTTP client is httpx2 where installed, else httpx: either one's
    failures."""
    import httpx

    try:
        import httpx2
    except ImportError:  # pragma: no cover - httpx2 comes with the SDKs streamkeep uses
        return (httpx.HTTPError,)
    return (httpx.HTTPError, httpx2.HTTPError)


def _said(exc: Exception) -> str:
    """An `OAuthError`'s own words (its description, else its error code)."""
    said = getattr(exc, "description", None) or getattr(exc, "error", None) or exc
    return str(said)[:300]
