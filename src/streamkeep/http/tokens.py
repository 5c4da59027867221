"""JWT bearer tokens from a product's own auth (PyJWT).

The product signs a token for its signed-in user, HS256 with a secret it shares with
streamkeep (`jwt_secret`), or with a private key whose public half its JWKS publishes
(`jwt_jwks_url`: RS256, ES256, ...). A token is taken when its signature verifies with
one of the configured algorithms (never the token's choice beyond them), its `iss`
and `aud` are the configured ones, and `exp` (required) and `nbf` hold, give or take
`jwt_leeway` seconds. Its `sub` is the user: `(iss, sub)` in the users table, created
the first time (`store.external_users`).

Each failure is a 401 that says what is wrong (expired, audience, issuer, signature):
the product's developers read these, and none of it helps a forger.

A product's front end sends the same token with every request until it renews it, and
checking one costs a signature and a JSON parse (measured: ~0.2 ms for HS256 and
RS256, ~0.4 ms for ES256 on a busy 2-core machine). So the tokens that verified are
kept (`CACHE_SIZE` at most, the oldest dropped first) with their identity until their
`exp` (plus the leeway): the same bytes again are that identity, with no new check.
"""

from __future__ import annotations

import time
from typing import Any

from streamkeep.config import Settings
from streamkeep.http.auth_errors import Unauthorized
from streamkeep.http.jwks import JwksCache
from streamkeep.store.external_users import ExternalIdentity

REQUIRED_CLAIMS = ["exp", "iss", "aud", "sub"]
# The JWK key type (`kty`) each public-key algorithm family verifies with.
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
CACHE_SIZE = 4096


def looks_like_jwt(token: str) -> bool:
    """A JWS compact token is three base64url parts; an API key (`sk-keep-...`) has
    no dot."""
    return token.count(".") == 2


class JwtVerifier:
    def __init__(self, settings: Settings) -> None:
        assert settings.jwt_issuer is not None and settings.jwt_audience is not None
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self.algorithms = settings.jwt_algorithm_list()
        self._leeway = settings.jwt_leeway
        self._name_claim = settings.jwt_name_claim
        self._email_claim = settings.jwt_email_claim
        self._secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        self._verified: dict[str, tuple[ExternalIdentity, float]] = {}
        self._clock = time.time
        self.jwks: JwksCache | None = None
        if settings.jwt_jwks_url is not None:
            self.jwks = JwksCache(
                settings.jwt_jwks_url,
                max_age=settings.jwks_cache_seconds,
                refresh_interval=settings.jwks_refresh_interval,
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> JwtVerifier | None:
        return cls(settings) if settings.jwt_enabled else None

    async def identify(self, token: str) -> ExternalIdentity:
        """The identity the token vouches for; Unauthorized saying why not."""
        known = self._verified.get(token)
        if known is not None:
            if self._clock() < known[1]:
                return known[0]
            del self._verified[token]
        identity, expires = await self._verify(token)
        if len(self._verified) >= CACHE_SIZE:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (identity, expires)
        return identity

    async def _verify(self, token: str) -> tuple[ExternalIdentity, float]:
        # PyJWT (and `cryptography` under it) only where tokens are checked: they add
        # about 15 MB to a server's memory, and most servers are configured without JWTs.
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"the bearer token is not a valid JWT: {exc}") from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise Unauthorized(
                f"the token is signed with {alg!r}; this server takes {', '.join(self.algorithms)}"
            )
        key: Any = self._secret
        if self.jwks is not None:
            kid = header.get("kid")
            jwk = await self.jwks.key(kid if isinstance(kid, str) else None)
            # PyJWT picks the algorithm from the header and raises a TypeError (not a
            # PyJWTError) for a key of another kind: the JWKS is public, so anyone could
            # name its EC key with RS256. Refuse that here, as a 401.
            if _KEY_TYPES.get(alg[:2]) != jwk.key_type:
                raise Unauthorized(
                    f"the token's {alg} cannot verify with the {jwk.key_type} key it names"
                )
            key = jwk.key
        claims = self._decode(token, key)
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise Unauthorized("the token's `sub` claim is not a non-empty string")
        identity = ExternalIdentity(
            issuer=self.issuer,
            subject=subject,
            name=_text(claims.get(self._name_claim)) or _text(claims.get("name")),
            email=_text(claims.get(self._email_claim)),
        )
        problem = identity.problem()
        if problem is not None:
            raise Unauthorized(f"the token {problem}")
        return identity, float(claims["exp"]) + self._leeway

    def _decode(self, token: str, key: Any) -> dict[str, Any]:
        import jwt

        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self._leeway,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired (`exp`)") from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("the token is not valid yet (`nbf` or `iat`)") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"the token has no `{exc.claim}` claim") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized(f"the token's audience (`aud`) is not {self.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized(f"the token's issuer (`iss`) is not {self.issuer!r}") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("the token's signature does not verify") from None
        except jwt.PyJWTError as exc:  # malformed parts, a key of the wrong kind
            raise Unauthorized(f"the token is not valid: {exc}") from None
        return claims


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
