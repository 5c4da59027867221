"""`streamkeep db upgrade`: migrates the configured (or given) database."""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path

import pytest

from streamkeep.cli import db as cli_db


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="streamkeep")
    cli_db.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    result: int = args.func(args)
    return result


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows}


EXPECTED = {
    "alembic_version",
    "chats",
    "messages",
    "generations",
    "users",
    "sessions",
    "api_keys",
    "images",
    "image_owners",
}


def test_upgrade_a_given_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "new" / "x.db"
    assert run("db", "upgrade", "--database-url", f"sqlite:///{path}") == 0
    assert tables(path) == EXPECTED
    assert "up to date" in capsys.readouterr().out
    assert run("db", "upgrade", "--database-url", f"sqlite:///{path}") == 0  # again: no-op


def test_upgrade_defaults_to_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMKEEP_DATA_DIR", str(tmp_path / "data"))
    assert run("db", "upgrade") == 0
    assert tables(tmp_path / "data" / "streamkeep.db") == EXPECTED


def test_upgrade_reads_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "env.db"
    monkeypatch.setenv("STREAMKEEP_DATABASE_URL", f"sqlite:///{path}")
    assert run("db", "upgrade") == 0
    assert tables(path) == EXPECTED
