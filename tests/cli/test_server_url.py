"""Which server `streamkeep chat` / `chats` talk to: `--url` (anywhere on the command
line), else STREAMKEEP_URL, else STREAMKEEP_HOST/STREAMKEEP_PORT, else the default."""

from __future__ import annotations

import subprocess

import pytest

from streamkeep.cli import build_parser
from streamkeep.cli.target import server_url
from tests.cli.conftest import STREAMKEEP, LiveServer
from tests.conftest import free_port


def url_of(argv: list[str], env: dict[str, str]) -> str:
    return server_url(build_parser().parse_args(argv), env)


@pytest.mark.parametrize(
    "argv",
    [
        ["chats", "list", "--url", "http://h:1"],
        ["chats", "--url", "http://h:1", "list"],
        ["chats", "show", "c1", "--url", "http://h:1"],
        ["chats", "export", "--url", "http://h:1", "c1", "--format", "json"],
        ["chat", "hi", "--url", "http://h:1"],
        ["chat", "--url", "http://h:1", "hi"],
    ],
)
def test_url_flag_is_taken_in_any_position(argv: list[str]) -> None:
    assert url_of(argv, {"STREAMKEEP_URL": "http://env:2"}) == "http://h:1"


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({}, "http://127.0.0.1:8000"),
        ({"STREAMKEEP_URL": "http://env:2/", "STREAMKEEP_PORT": "9"}, "http://env:2"),
        ({"STREAMKEEP_PORT": "9001"}, "http://127.0.0.1:9001"),
        ({"STREAMKEEP_HOST": "0.0.0.0", "STREAMKEEP_PORT": "9001"}, "http://127.0.0.1:9001"),
        ({"STREAMKEEP_HOST": "::"}, "http://[::1]:8000"),
        ({"STREAMKEEP_HOST": "::1"}, "http://[::1]:8000"),
        ({"STREAMKEEP_HOST": "example.org"}, "http://example.org:8000"),
    ],
)
def test_url_from_the_environment(env: dict[str, str], url: str) -> None:
    assert url_of(["chats", "list"], env) == url
    assert url_of(["chat"], env) == url


def test_url_option_has_help_text() -> None:
    for argv in (["chat", "--help"], ["chats", "list", "--help"]):
        done = subprocess.run([STREAMKEEP, *argv], capture_output=True, check=True, timeout=60)
        assert b"STREAMKEEP_URL" in done.stdout and b"STREAMKEEP_PORT" in done.stdout


@pytest.mark.slow
def test_the_serve_variables_reach_the_server_serve_listens_on(live_server: LiveServer) -> None:
    """What `STREAMKEEP_PORT=9001 streamkeep serve` serves, `streamkeep chat` finds with
    the same environment; `chats list --url` works after the action."""
    env = {k: v for k, v in live_server.env.items() if k != "STREAMKEEP_URL"}
    port = live_server.url.rsplit(":", 1)[1]
    served = {**env, "STREAMKEEP_HOST": "0.0.0.0", "STREAMKEEP_PORT": port}
    done = subprocess.run(
        [STREAMKEEP, "chat", "by the port"], env=served, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == "Hello! You said: by the port\n"

    elsewhere = {**env, "STREAMKEEP_PORT": str(free_port())}  # --url wins over it
    listing = subprocess.run(
        [STREAMKEEP, "chats", "list", "--url", live_server.url],
        env=elsewhere,
        capture_output=True,
        timeout=60,
    )
    assert listing.returncode == 0, listing.stderr
    with live_server.api() as api:
        newest = api.get("/api/chats", params={"limit": 1}).json()["items"][0]
    assert newest["id"] in listing.stdout.decode()
