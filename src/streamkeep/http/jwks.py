"""A JSON Web Key Set fetched over HTTP, cached, and refetched when a token names a
key it does not hold (the product rotated its keys), at most once per
`refresh_interval`: a stream of tokens with made-up `kid`s cannot make every request
a fetch, nor can a JWKS that fails before any set was held.

Async (httpx) rather than PyJWT's own `PyJWKClient`, whose urllib fetch would block
the event loop; PyJWT still parses the set (`PyJWKSet`). Concurrent requests that miss
share one fetch (a lock, checked again once held).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from streamkeep.http.auth_errors import IdentityUnavailable, Unauthorized

if TYPE_CHECKING:
    from jwt import PyJWK

logger = logging.getLogger(__name__)

FETCH_TIMEOUT = 10.0


class JwksCache:
    def __init__(
        self,
        url: str,
        *,
        max_age: float,
        refresh_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._max_age = max_age
        self._refresh_interval = refresh_interval
        self._clock = clock
        self._keys: dict[str | None, PyJWK] = {}
        self._fetched_at: float | None = None
        # The last failed fetch while no set is held, and why: the set is not asked
        # again before `refresh_interval` (each request with a JWT would, anyone's).
        self._failed_at: float | None = None
        self._failure = ""
        self._lock = asyncio.Lock()
        #: how many times the set was fetched (for the tests and the logs)
        self.fetches = 0

    async def key(self, kid: str | None) -> PyJWK:
        """The key `kid` names (a token without `kid`: the set's only key)."""
        if not self._needs_fetch(kid):
            return self._find(kid)
        async with self._lock:
            if self._needs_fetch(kid):  # another request may have fetched meanwhile
                await self._fetch()
        return self._find(kid)

    def _needs_fetch(self, kid: str | None) -> bool:
        if self._fetched_at is None:
            failed = self._failed_at
            return failed is None or self._clock() - failed >= self._refresh_interval
        age = self._clock() - self._fetched_at
        if age >= self._max_age:
            return True
        return kid not in self._keys and age >= self._refresh_interval

    def _find(self, kid: str | None) -> PyJWK:
        if not self._keys:
            raise IdentityUnavailable(self._failure)
        found = self._keys.get(kid)
        if found is None:
            named = f"key id {kid!r}" if kid is not None else "no key id (`kid`)"
            raise Unauthorized(f"the token names {named}, which the JWKS does not hold")
        return found

    async def _fetch(self) -> None:
        # Imported on the first fetch, as `tokens` imports PyJWT: see there.
        import httpx
        from jwt import PyJWKSet
        from jwt.exceptions import PyJWKSetError

        try:
            async with httpx.AsyncClient(timeout=FETCH_TIMEOUT) as client:
                response = await client.get(self.url, headers={"accept": "application/json"})
                response.raise_for_status()
                keyset = PyJWKSet.from_dict(response.json())
        except (httpx.HTTPError, ValueError, PyJWKSetError) as exc:
            if self._keys:
                # The set held is still the issuer's: keep it and try again later.
                logger.warning(
                    "JWKS %s could not be refetched (%s): keeping the keys held", self.url, exc
                )
                self._fetched_at = self._clock()
                return
            self._failed_at = self._clock()
            self._failure = f"the token's signing keys could not be fetched: {exc}"
            raise IdentityUnavailable(self._failure) from None
        self.fetches += 1
        keys: dict[str | None, PyJWK] = {k.key_id: k for k in keyset.keys}
        if len(keyset.keys) == 1:
            keys[None] = keyset.keys[0]
        self._keys = keys
        self._fetched_at = self._clock()
