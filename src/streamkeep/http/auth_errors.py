"""The two ways authentication fails: the caller's credentials (a 401), or what checks
them being out of reach (a 503: a JWKS that cannot be fetched says nothing about the
token, and a client told 401 would sign its user out)."""

from __future__ import annotations


class Unauthorized(Exception):
    """No credentials, or credentials that do not work: a 401."""

    kind = "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class IdentityUnavailable(Exception):
    """The keys that check a token could not be had: a 503."""

    kind = "identity_unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
