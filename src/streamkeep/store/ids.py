"""Identifiers: a type prefix and 20 random URL-safe characters (120 bits)."""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    """A fresh id such as ``chat_3q2-Xk...``; the prefix says what it names."""
    return f"{prefix}_{secrets.token_urlsafe(15)}"


def chat_id() -> str:
    return new_id("chat")


def message_id() -> str:
    return new_id("msg")


def generation_id() -> str:
    return new_id("gen")


def user_id() -> str:
    return new_id("user")


def session_id() -> str:
    return new_id("sess")


def api_key_id() -> str:
    return new_id("key")
