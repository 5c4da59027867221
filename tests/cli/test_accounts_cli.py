"""`streamkeep users` and `streamkeep keys`: the real command, run as an admin would,
on a SQLite file and on a fresh PostgreSQL database; what it did is checked through
the store."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import text

from streamkeep.store import ChatStore, Database
from streamkeep.store.credentials import KEY_PATTERN
from tests.cli.pty_run import PtyProcess
from tests.pg import private_database_sync

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'admin' / 'streamkeep.db'}"
        return
    with private_database_sync("streamkeep_cli") as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'admin' / 'streamkeep.db'}"


def command_env(url: str) -> dict[str, str]:
    # This checkout's code, whichever one the venv's editable install points at.
    return {**os.environ, "STREAMKEEP_DATABASE_URL": url, "PYTHONPATH": str(ROOT / "src")}


def streamkeep(url: str, *argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamkeep", *argv],
        input=stdin,
        env=command_env(url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ok(url: str, *argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    done = streamkeep(url, *argv, stdin=stdin)
    assert done.returncode == 0, done.stderr
    return done


def refused(url: str, *argv: str, stdin: str = "") -> str:
    """The command's error message (it must exit 1 and print nothing on stdout)."""
    done = streamkeep(url, *argv, stdin=stdin)
    assert (done.returncode, done.stdout) == (1, ""), done.stderr
    assert "Traceback" not in done.stderr
    return done.stderr


def on_store(url: str, work: Callable[[ChatStore], Awaitable[T]]) -> T:
    """Run `work` on a store of the database the command used."""

    async def run() -> T:
        db = Database.from_url(url)
        try:
            await db.upgrade()
            return await work(ChatStore(db))
        finally:
            await db.dispose()

    return asyncio.run(run())


def chat_owners(url: str) -> dict[str, str | None]:
    async def read() -> dict[str, str | None]:
        db = Database.from_url(url)
        try:
            async with db.engine.connect() as conn:
                rows = await conn.execute(text("SELECT id, user_id FROM chats"))
                return {chat_id: owner for chat_id, owner in rows}
        finally:
            await db.dispose()

    return asyncio.run(read())


def listed(url: str, what: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(ok(url, what, "list", "--format", "json").stdout)
    return rows


def new_key(url: str, *argv: str) -> str:
    done = ok(url, "keys", "create", *argv)
    (key,) = done.stdout.splitlines()  # the key alone, on stdout's only line
    assert KEY_PATTERN.fullmatch(key)
    assert key[:16] in done.stderr and "will not be shown again" in done.stderr
    assert key not in done.stderr
    return key


# Users


def test_users_are_created_listed_and_disabled(database_url: str) -> None:
    url = database_url
    # Two chats from single-user mode, before any account.
    chats = on_store(url, lambda s: asyncio.gather(*(s.create_chat(model="m") for _ in "ab")))

    done = ok(url, "users", "create", "ada", "--admin", "--password-stdin", stdin="correct horse\n")
    ada = on_store(url, lambda s: s.get_user_by_name("ada"))
    assert f"created user ada (id {ada.id}, admin)" in done.stdout
    assert "2 existing chats now belong to ada" in done.stdout
    assert "correct horse" not in done.stdout + done.stderr
    assert ada.is_admin
    # The stored hash verifies the password, without the newline that ended it.
    assert on_store(url, lambda s: s.check_password("ada", "correct horse")) == ada
    assert on_store(url, lambda s: s.check_password("ada", "correct horse\n")) is None
    assert chat_owners(url) == {c.id: ada.id for c in chats}

    done = ok(url, "users", "create", "bob", "--password-stdin", stdin="pw")  # no newline: fine
    assert "created user bob" in done.stdout and "not admin" in done.stdout
    assert "belong" not in done.stdout  # only the first user adopts chats
    assert on_store(url, lambda s: s.check_password("bob", "pw")) is not None

    rows = listed(url, "users")
    assert [(u["name"], u["is_admin"], u["disabled_at"]) for u in rows] == [
        ("ada", True, None),
        ("bob", False, None),
    ]
    assert rows[0]["id"] == ada.id and "password_hash" not in rows[0]
    table = ok(url, "users", "list").stdout
    assert "ada" in table and ada.id in table and "bob" in table

    key = new_key(url, "--user", "bob")
    assert on_store(url, lambda s: s.lookup_api_key(key)) is not None
    done = ok(url, "users", "disable", "bob")
    assert "disabled user bob" in done.stdout
    assert on_store(url, lambda s: s.lookup_api_key(key)) is None
    assert on_store(url, lambda s: s.check_password("bob", "pw")) is None
    assert on_store(url, lambda s: s.check_password("ada", "correct horse")) is not None
    [bob_key] = on_store(url, lambda s: s.list_all_api_keys())
    assert bob_key.revoked_at is not None  # revoked, not only refused
    disabled = {u["name"]: u["disabled_at"] for u in listed(url, "users")}
    assert disabled["ada"] is None and disabled["bob"] is not None

    assert "was disabled already" in ok(url, "users", "disable", "bob").stdout
    assert "user 'nobody' not found" in refused(url, "users", "disable", "nobody")


def test_a_taken_name_is_refused_and_changes_nothing(sqlite_url: str) -> None:
    ok(sqlite_url, "users", "create", "ada", "--password-stdin", stdin="first\n")
    message = refused(
        sqlite_url, "users", "create", "ada", "--admin", "--password-stdin", stdin="second\n"
    )
    assert "user 'ada' exists already" in message
    [ada] = on_store(sqlite_url, lambda s: s.list_users())
    assert not ada.is_admin
    assert on_store(sqlite_url, lambda s: s.check_password("ada", "first")) == ada
    assert on_store(sqlite_url, lambda s: s.check_password("ada", "second")) is None


@pytest.mark.parametrize("name", ["", " ada", "a" * 65, "a\tb"])
def test_bad_names_are_refused(sqlite_url: str, name: str) -> None:
    message = refused(sqlite_url, "users", "create", name, "--password-stdin", stdin="pw\n")
    assert "user name" in message
    assert on_store(sqlite_url, lambda s: s.count_users()) == 0


@pytest.mark.parametrize(
    ("stdin", "said"), [("\n", "password is empty"), ("", "password is empty")]
)
def test_an_empty_password_is_refused(sqlite_url: str, stdin: str, said: str) -> None:
    message = refused(sqlite_url, "users", "create", "ada", "--password-stdin", stdin=stdin)
    assert said in message
    assert on_store(sqlite_url, lambda s: s.count_users()) == 0


def prompted(url: str, *answers: str) -> tuple[int, str]:
    """`users create ada` on a terminal, answering its password prompts."""
    term = PtyProcess(
        [sys.executable, "-m", "streamkeep", "users", "create", "ada"], command_env(url)
    )
    for n, answer in enumerate(answers, 1):
        term.expect(lambda text, n=n: text.count("Password") == n)
        term.send(answer + "\n")
    code = term.wait()
    return code, term.text


def test_the_password_is_asked_twice_on_the_terminal_without_echo(sqlite_url: str) -> None:
    code, shown = prompted(sqlite_url, "s3cret pass", "s3cret pass")
    assert code == 0, shown
    assert "Password (again)" in shown and "created user ada" in shown
    assert "s3cret" not in shown  # not echoed, not printed
    assert on_store(sqlite_url, lambda s: s.check_password("ada", "s3cret pass")) is not None


def test_two_different_passwords_create_nothing(sqlite_url: str) -> None:
    code, shown = prompted(sqlite_url, "one", "two")
    assert code == 1 and "passwords differ" in shown
    assert on_store(sqlite_url, lambda s: s.count_users()) == 0


# API keys


def test_keys_are_created_listed_and_revoked(database_url: str) -> None:
    url = database_url
    ok(url, "users", "create", "ada", "--password-stdin", stdin="pw\n")
    everywhere = new_key(url, "--user", "ada")
    scoped = new_key(url, "--user", "ada", "--name", "ci", "--model", "a/x", "--model", "b/y")

    found = on_store(url, lambda s: s.lookup_api_key(everywhere))
    assert found is not None and found[0].name == "ada" and found[1].allowed_models is None
    found = on_store(url, lambda s: s.lookup_api_key(scoped))
    assert found is not None and found[1].allowed_models == ["a/x", "b/y"]
    assert found[1].name == "ci"

    rows = listed(url, "keys")
    assert [(k["prefix"], k["user"], k["name"], k["allowed_models"]) for k in rows] == [
        (everywhere[:16], "ada", None, None),
        (scoped[:16], "ada", "ci", ["a/x", "b/y"]),
    ]
    assert rows[0]["last_used_at"] is not None and rows[0]["revoked_at"] is None
    assert not any(everywhere in json.dumps(k) for k in rows)
    table = ok(url, "keys", "list", "--user", "ada").stdout
    assert everywhere[:16] in table and scoped[:16] in table and everywhere not in table

    done = ok(url, "keys", "revoke", everywhere[:16])
    assert f"revoked key {everywhere[:16]} of ada" in done.stdout
    assert on_store(url, lambda s: s.lookup_api_key(everywhere)) is None
    assert on_store(url, lambda s: s.lookup_api_key(scoped)) is not None
    revoked = {k["prefix"]: k["revoked_at"] for k in listed(url, "keys")}
    assert revoked[everywhere[:16]] is not None and revoked[scoped[:16]] is None

    assert "revoked already" in ok(url, "keys", "revoke", everywhere[:16]).stdout
    assert "'sk-keep-nothere0' not found" in refused(url, "keys", "revoke", "sk-keep-nothere0")
    assert on_store(url, lambda s: s.lookup_api_key(scoped)) is not None


def test_keys_list_one_users_keys_or_everyones(sqlite_url: str) -> None:
    for name in ("ada", "bob"):
        ok(sqlite_url, "users", "create", name, "--password-stdin", stdin="pw\n")
    ada_key, bob_key = new_key(sqlite_url, "--user", "ada"), new_key(sqlite_url, "--user", "bob")
    everyone = json.loads(ok(sqlite_url, "keys", "list", "--format", "json").stdout)
    assert [(k["user"], k["prefix"]) for k in everyone] == [
        ("ada", ada_key[:16]),
        ("bob", bob_key[:16]),
    ]
    bobs = json.loads(ok(sqlite_url, "keys", "list", "--user", "bob", "--format", "json").stdout)
    assert [k["prefix"] for k in bobs] == [bob_key[:16]]
    assert "user 'carol' not found" in refused(sqlite_url, "keys", "list", "--user", "carol")


def test_keys_are_refused_for_unknown_and_disabled_users(sqlite_url: str) -> None:
    assert "user 'ada' not found" in refused(sqlite_url, "keys", "create", "--user", "ada")
    ok(sqlite_url, "users", "create", "ada", "--password-stdin", stdin="pw\n")
    ok(sqlite_url, "users", "disable", "ada")
    assert "disabled" in refused(sqlite_url, "keys", "create", "--user", "ada")
    assert "key name" in refused(sqlite_url, "keys", "create", "--user", "ada", "--name", " x")
    assert on_store(sqlite_url, lambda s: s.list_all_api_keys()) == []


# Options and failures


def test_the_database_url_option_wins_before_or_after_the_action(
    sqlite_url: str, tmp_path: Path
) -> None:
    other = f"sqlite:///{tmp_path / 'other.db'}"
    ok(sqlite_url, "users", "create", "ada", "--password-stdin", "--database-url", other, stdin="p")
    ok(sqlite_url, "users", "--database-url", other, "create", "bob", "--password-stdin", stdin="p")
    assert [u["name"] for u in listed(other, "users")] == ["ada", "bob"]
    assert listed(sqlite_url, "users") == []


def test_an_unreachable_database_is_one_clear_line(tmp_path: Path) -> None:
    message = refused("postgresql://nobody:secret@127.0.0.1:1/none", "users", "list")
    assert "cannot use the database postgresql://nobody:***@127.0.0.1:1/none" in message
    assert "secret" not in message
