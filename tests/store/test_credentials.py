"""store.credentials: argon2id passwords, hashed session tokens, API keys' shape."""

from __future__ import annotations

import hashlib

import pytest
from argon2 import PasswordHasher, Type, extract_parameters
from argon2.profiles import CHEAPEST, get_default_parameters

from streamkeep.store.credentials import (
    KEY_LENGTH,
    KEY_PATTERN,
    PREFIX_LENGTH,
    UNKNOWN_USER_HASH,
    hash_password,
    hashes_match,
    key_prefix,
    needs_rehash,
    new_api_key,
    new_session_token,
    secret_hash,
    verify_password,
)


def test_a_password_hash_is_argon2id_with_the_librarys_defaults() -> None:
    stored = hash_password("correct horse")
    params = extract_parameters(stored)
    assert params == get_default_parameters()
    assert params.type is Type.ID
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    assert not needs_rehash(stored)


def test_a_hash_verifies_its_password_only() -> None:
    stored = hash_password("correct horse")
    assert verify_password(stored, "correct horse")
    assert not verify_password(stored, "correct horse ")
    assert not verify_password(stored, "")
    assert hash_password("correct horse") != stored  # salted


def test_a_damaged_hash_verifies_nothing() -> None:
    assert not verify_password("not a hash", "x")
    assert not verify_password(hash_password("x")[:-8], "x")


def test_a_hash_made_with_weaker_parameters_needs_a_rehash() -> None:
    weak = PasswordHasher.from_parameters(CHEAPEST).hash("x")
    assert verify_password(weak, "x")
    assert needs_rehash(weak)


def test_the_unknown_user_hash_costs_what_a_real_one_does() -> None:
    assert extract_parameters(UNKNOWN_USER_HASH) == get_default_parameters()
    assert not verify_password(UNKNOWN_USER_HASH, "")


def test_an_api_key_is_marked_and_split_into_prefix_and_secret() -> None:
    key = new_api_key()
    assert key.startswith("sk-keep-")
    assert len(key) == KEY_LENGTH == 59
    assert KEY_PATTERN.fullmatch(key)
    assert key_prefix(key) == key[:PREFIX_LENGTH] and PREFIX_LENGTH == 16
    assert key[PREFIX_LENGTH - 8 : PREFIX_LENGTH].isalnum()
    # 43 URL-safe characters: 256 bits of secret.
    assert len(key) - PREFIX_LENGTH == 43
    assert len({new_api_key() for _ in range(50)}) == 50
    assert len({key_prefix(new_api_key()) for _ in range(50)}) == 50


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sk-keep-",
        "sk-keep-short",
        "Bearer sk-keep-" + "a" * 51,
        "sk-keep-" + "a" * 52,  # one too many
        "sk-keep-" + "a" * 50,  # one too few
        "sk-kept-" + "a" * 51,
        "sk-keep-abc_defg" + "a" * 43,  # the visible part is letters and digits
        "sk-keep-" + "a" * 50 + "\n",
    ],
)
def test_what_is_not_shaped_like_a_key_has_no_prefix(text: str) -> None:
    assert key_prefix(text) is None


def test_secrets_are_kept_as_their_sha256() -> None:
    assert secret_hash("abc") == hashlib.sha256(b"abc").hexdigest()
    assert secret_hash("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert hashes_match(secret_hash("abc"), secret_hash("abc"))
    assert not hashes_match(secret_hash("abc"), secret_hash("abd"))


def test_session_tokens_are_long_and_fresh() -> None:
    tokens = {new_session_token() for _ in range(50)}
    assert len(tokens) == 50
    assert all(len(t) == 43 for t in tokens)
