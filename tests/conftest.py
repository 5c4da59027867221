"""Fixtures shared by the whole suite: real services, temporary data directories."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.fakes.upstream", "tests.services"]  # `fake_upstream`, `private_*`

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TEST_DATABASE_URL = os.environ.get(
    "STREAMKEEP_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
TEST_REDIS_URL = os.environ.get("STREAMKEEP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip when a real service is missing, except in CI where it must be there."""
    if _reachable(host, port):
        return
    if IN_CI:
        pytest.fail(f"{name} at {host}:{port} is unreachable; .ci/run should have started it")
    pytest.skip(f"{name} at {host}:{port} is unreachable (set it up to run this test)")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test reads the developer's own keys, config file or data directory."""
    for var in list(os.environ):
        if var.startswith(("STREAMKEEP_", "OPENAI_", "ANTHROPIC_", "OTEL_")) and not var.startswith(
            "STREAMKEEP_TEST_"
        ):
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("STREAMKEEP_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("STREAMKEEP_DATA_DIR", str(tmp_path / "data"))
    yield
