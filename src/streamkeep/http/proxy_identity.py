"""Trusted headers from an auth proxy (oauth2-proxy, Authelia, ...).

The proxy signs people in and passes the user on in a header (`X-Forwarded-User`,
and `X-Forwarded-Email`). Anyone can send such a header, so it is believed only from
a peer inside `trusted_proxies`: the TCP peer itself (the server never rewrites the
client address from `X-Forwarded-For`: `cli.serve` runs uvicorn with
`proxy_headers=False`). From anywhere else it is ignored, with a warning in the log,
and the request goes on as if it had not been sent.

The user is `("trusted-header", value)` in the users table, named after the value.
"""

from __future__ import annotations

import ipaddress
import logging
from functools import lru_cache

from starlette.requests import Request

from streamkeep.config import Settings
from streamkeep.http.auth_errors import Unauthorized
from streamkeep.store.external_users import ExternalIdentity

logger = logging.getLogger(__name__)

ISSUER = "trusted-header"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedHeaders:
    def __init__(self, proxies: list[str], user_header: str, email_header: str) -> None:
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(p, strict=False) for p in proxies
        )
        self.user_header = user_header
        self.email_header = email_header
        # A few peers at most (the proxies, and whoever tries): the answer per address.
        self.trusts = lru_cache(maxsize=256)(self._trusts)

    @classmethod
    def from_settings(cls, settings: Settings) -> TrustedHeaders | None:
        if not settings.trusted_proxies:
            return None
        return cls(
            settings.trusted_proxies, settings.trusted_user_header, settings.trusted_email_header
        )

    def identify(self, request: Request) -> ExternalIdentity | None:
        """The user the proxy names, if the header came from a trusted proxy."""
        value = request.headers.get(self.user_header)
        if value is None:
            return None
        peer = request.client.host if request.client is not None else ""
        if not self.trusts(peer):
            logger.warning(
                "ignored %s from %s: not in trusted_proxies", self.user_header, peer or "?"
            )
            return None
        value = value.strip()
        if not value:
            raise Unauthorized(f"the proxy sent an empty {self.user_header} header")
        email = (request.headers.get(self.email_header) or "").strip() or None
        identity = ExternalIdentity(ISSUER, value, name=value, email=email)
        problem = identity.problem()
        if problem is not None:
            raise Unauthorized(f"the {self.user_header} header {problem}")
        return identity

    def _trusts(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False  # a Unix socket, or no peer
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)
