"""A product's auth for the JWT tests: signing keys (RSA and EC, from `cryptography`),
tokens made with PyJWT, and its JWKS served over real HTTP on loopback (aiohttp)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://auth.product.example"
AUDIENCE = "streamkeep"
SECRET = "a shared secret of the product, 32+ characters long"


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        algorithm = RSAAlgorithm if self.alg.startswith("RS") else ECAlgorithm
        jwk: dict[str, Any] = json.loads(algorithm.to_jwk(public))
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}


def rsa_key(kid: str) -> SigningKey:
    return SigningKey(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_key(kid: str) -> SigningKey:
    return SigningKey(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


def claims(subject: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject,
        "iat": now,
        "exp": now + 300,
        "preferred_username": subject,
        "email": f"{subject}@product.example",
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def hs_token(subject: str, *, secret: str = SECRET, **overrides: Any) -> str:
    return jwt.encode(claims(subject, **overrides), secret, algorithm="HS256")


def key_token(key: SigningKey, subject: str, **overrides: Any) -> str:
    return jwt.encode(
        claims(subject, **overrides), key.private, algorithm=key.alg, headers={"kid": key.kid}
    )


@dataclass
class JwksServer:
    url: str
    keys: list[SigningKey] = field(default_factory=list)
    fetches: int = 0


@asynccontextmanager
async def jwks_server(*keys: SigningKey) -> AsyncIterator[JwksServer]:
    """The product's `/.well-known/jwks.json`; the keys it publishes can change."""
    served = JwksServer("", list(keys))

    async def jwks(_: web.Request) -> web.Response:
        served.fetches += 1
        return web.json_response({"keys": [k.jwk() for k in served.keys]})

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    served.url = f"http://127.0.0.1:{port}/.well-known/jwks.json"
    try:
        yield served
    finally:
        await runner.cleanup()
