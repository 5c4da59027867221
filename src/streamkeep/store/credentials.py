"""Secrets as the store keeps them: passwords, session tokens and API keys.

- Passwords: argon2id through argon2-cffi's `PasswordHasher`, with the library's
  default parameters (RFC 9106's low-memory profile). `needs_rehash` says when a stored
  hash was made with other parameters.
- Session tokens and API keys are random with at least 256 bits of entropy, so a fast
  hash is enough: the store keeps their SHA-256 (hex), never the token or key itself.
- An API key is `sk-keep-` plus 8 letters or digits (together: its visible `prefix`,
  shown in lists and used to find the key) plus 43 URL-safe characters (the secret):
  59 characters that a secret scanner can match with
  `sk-keep-[A-Za-z0-9]{8}[A-Za-z0-9_-]{43}`.

Argon2 takes a noticeable time and 64 MiB by design: async callers run `hash_password`
and `verify_password` in a thread.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

KEY_MARK = "sk-keep-"
_PREFIX_CHARS = 8
_SECRET_BYTES = 32
PREFIX_LENGTH = len(KEY_MARK) + _PREFIX_CHARS
KEY_LENGTH = PREFIX_LENGTH + 43  # token_urlsafe(32) is 43 characters
KEY_PATTERN = re.compile(rf"{KEY_MARK}[A-Za-z0-9]{{{_PREFIX_CHARS}}}[A-Za-z0-9_-]{{43}}")
_ALPHANUMERIC = string.ascii_letters + string.digits

# The library's defaults; the hasher holds no state between calls.
_HASHER = PasswordHasher()
# A hash of a random password nobody kept: checking a password against it takes as long
# as against a real hash, so a sign-in does not tell whether a user name exists.
UNKNOWN_USER_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$HjDmPoqDSAn/gUoVIjmQQw"
    "$fWFJWxHdda2+wEEwe9Nh27U4Gs7XDGMjBInRzV92914"
)


def hash_password(password: str) -> str:
    """An argon2id hash of `password` (salted; in PHC string form)."""
    return _HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Whether `password` matches; False (never an exception) for a wrong password
    or a damaged hash."""
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with other parameters than today's defaults."""
    return _HASHER.check_needs_rehash(password_hash)


def secret_hash(secret: str) -> str:
    """SHA-256 (hex) of a session token or API key."""
    return hashlib.sha256(secret.encode()).hexdigest()


def hashes_match(a: str, b: str) -> bool:
    """Compare two hashes in constant time."""
    return hmac.compare_digest(a.encode(), b.encode())


def new_session_token() -> str:
    """A session token (the cookie's value): 256 random bits, URL-safe."""
    return secrets.token_urlsafe(_SECRET_BYTES)


def new_api_key() -> str:
    """A fresh API key: `sk-keep-`, 8 letters or digits, a 256-bit secret."""
    visible = "".join(secrets.choice(_ALPHANUMERIC) for _ in range(_PREFIX_CHARS))
    return f"{KEY_MARK}{visible}{secrets.token_urlsafe(_SECRET_BYTES)}"


def key_prefix(key: str) -> str | None:
    """The visible prefix of something shaped like an API key, None otherwise."""
    if len(key) != KEY_LENGTH or KEY_PATTERN.fullmatch(key) is None:
        return None
    return key[:PREFIX_LENGTH]
