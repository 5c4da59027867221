"""JwksCache against a JWKS served over real HTTP: fetched once and kept, refetched when
old or for an unknown `kid` (at most once per interval), and kept when a refetch
fails."""

from __future__ import annotations

import pytest

from streamkeep.http.auth_errors import IdentityUnavailable, Unauthorized
from streamkeep.http.jwks import JwksCache
from tests.server.jwks_server import ec_key, jwks_server, rsa_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_keys_are_kept_refetched_when_old_and_kept_when_the_issuer_is_away() -> None:
    clock = Clock()
    first, second = rsa_key("k1"), ec_key("k2")
    async with jwks_server(first) as served:
        cache = JwksCache(served.url, max_age=300, refresh_interval=30, clock=clock)
        assert (await cache.key("k1")).key_id == "k1"
        assert (await cache.key(None)).key_id == "k1"  # the only key: no kid needed
        assert served.fetches == 1

        served.keys.append(second)
        with pytest.raises(Unauthorized, match="'k2'"):  # within the interval: no fetch
            await cache.key("k2")
        assert served.fetches == 1
        clock.now += 30
        assert (await cache.key("k2")).key_id == "k2"  # an unknown kid, interval over
        assert served.fetches == 2
        with pytest.raises(Unauthorized, match="no key id"):  # two keys now: kid needed
            await cache.key(None)

        clock.now += 300  # old: refetched even for a known kid
        await cache.key("k1")
        assert served.fetches == 3
    clock.now += 300  # the issuer is away: the keys held still serve
    assert (await cache.key("k2")).key_id == "k2"


async def test_no_keys_and_no_issuer_is_unavailable_not_unauthorized() -> None:
    async with jwks_server(rsa_key("k1")) as served:
        url = served.url
    cache = JwksCache(url, max_age=300, refresh_interval=30)
    with pytest.raises(IdentityUnavailable, match="could not be fetched"):
        await cache.key("k1")
