"""JwtVerifier on its own: a verified token is kept until its `exp`, never longer, and
a token that fails is never kept."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamkeep.config import Settings
from streamkeep.http.auth_errors import Unauthorized
from streamkeep.http.tokens import JwtVerifier, looks_like_jwt
from tests.server.jwks_server import AUDIENCE, ISSUER, SECRET, hs_token


def verifier(**overrides: object) -> JwtVerifier:
    values = {"jwt_secret": SECRET, "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE}
    return JwtVerifier(Settings(**(values | overrides)))


def test_a_jwt_has_two_dots_and_an_api_key_none() -> None:
    assert looks_like_jwt(hs_token("a"))
    assert not looks_like_jwt("sk-keep-AbCd1234" + "x" * 43)


async def test_a_kept_token_stops_working_at_its_exp() -> None:
    check = verifier(jwt_leeway=0)
    expires = int(time.time()) + 2
    token = hs_token("kim", exp=expires)
    first = await check.identify(token)
    assert (first.issuer, first.subject, first.name) == (ISSUER, "kim", "kim")
    assert await check.identify(token) == first  # kept: the same answer
    # Until the token is past its exp (a wait for the wall clock, not a timed assertion).
    await asyncio.sleep(max(0.0, expires - time.time()) + 0.1)
    assert time.time() > expires
    with pytest.raises(Unauthorized, match="expired"):
        await check.identify(token)


async def test_a_refused_token_is_refused_again() -> None:
    check = verifier()
    token = hs_token("kim", aud="elsewhere")
    for _ in range(2):
        with pytest.raises(Unauthorized, match="audience"):
            await check.identify(token)


def test_a_server_without_jwts_or_oidc_loads_neither_pyjwt_nor_authlib(tmp_path: Path) -> None:
    # They add about 15 MB to every server's memory (issue 17's RSS goal): imported
    # only where a token is checked or OIDC is configured.
    code = (
        "import sys\n"
        "from streamkeep.config import Settings\n"
        "from streamkeep.server.app import create_app\n"
        f"create_app(Settings(enable_local_model=False, data_dir={str(tmp_path)!r}))\n"
        "print(sorted(m for m in ('jwt', 'authlib', 'httpx2') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
