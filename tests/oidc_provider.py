"""A real OpenID provider for the sign-in tests: `oidc-provider-mock` (PyPI: Authlib's
provider components in a Flask app), started as its own process on a free loopback
port with the users (and claims) it vouches for. Its authorization page lets the
browser pick one of them; `PUT /users/<sub>` changes a user's claims."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.procs import ROOT, clean_env, stop_process
from tests.conftest import free_port


@contextmanager
def oidc_provider(users: list[dict[str, Any]], log: Path) -> Iterator[str]:
    """The provider, with `users` (each a `sub` and its claims); yields its issuer."""
    port = free_port()
    claims = [arg for user in users for arg in ("--user-claims", json.dumps(user))]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "oidc_provider_mock", "--port", str(port), *claims],
            cwd=ROOT,
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    issuer = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:  # start-up is setup: poll until it answers
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the OIDC provider did not start:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{issuer}/.well-known/openid-configuration").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield issuer
    finally:
        stop_process(proc)
