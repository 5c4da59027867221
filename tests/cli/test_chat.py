"""`streamkeep chat` driven in a real pseudo-terminal against a real server."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest

from tests.cli.conftest import STREAMKEEP, LiveServer
from tests.cli.pty_run import PtyProcess
from tests.conftest import free_port
from tests.tcpcut import CutRelay

pytestmark = pytest.mark.slow  # each test spawns the real command (a Python start-up)


def latest_chat(server: LiveServer) -> dict[str, Any]:
    with server.api() as api:
        chat_id = api.get("/api/chats", params={"limit": 1}).json()["items"][0]["id"]
        chat: dict[str, Any] = api.get(f"/api/chats/{chat_id}").json()
        return chat


def texts(chat: dict[str, Any]) -> list[str]:
    return ["".join(p.get("text", "") for p in m["parts"]) for m in chat["messages"]]


def test_one_shot_message_streams_the_reply_and_usage(live_server: LiveServer) -> None:
    term = PtyProcess([STREAMKEEP, "chat", "ping pong"], live_server.env)
    term.expect(lambda t: "tokens:" in t)
    assert term.wait() == 0
    assert "You said: ping pong" in term.text
    assert texts(latest_chat(live_server))[-1] == "Hello! You said: ping pong"


def test_piped_stdin_is_the_message_and_output_is_plain_text(live_server: LiveServer) -> None:
    done = subprocess.run(
        [STREAMKEEP, "chat"],
        input=b"from a pipe\n",
        env=live_server.env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == "Hello! You said: from a pipe\n"  # no escape codes


def test_continue_flag_appends_to_the_most_recent_chat(live_server: LiveServer) -> None:
    run = [STREAMKEEP, "chat"]
    subprocess.run([*run, "first turn"], env=live_server.env, capture_output=True, check=True)
    subprocess.run(
        [*run, "-c", "second turn"], env=live_server.env, capture_output=True, check=True
    )
    assert texts(latest_chat(live_server)) == [
        "first turn",
        "Hello! You said: first turn",
        "second turn",
        "Hello! You said: second turn",
    ]


def test_ctrl_c_mid_answer_stops_the_generation_and_it_is_stored_stopped(
    live_server: LiveServer,
) -> None:
    term = PtyProcess([STREAMKEEP, "chat", "[[tokens=600 delay=0.05]] go"], live_server.env)
    term.expect(lambda t: "lorem ipsum dolor" in t)  # the answer is streaming
    term.interrupt()
    assert term.wait() == 130
    assert "stopped" in term.text
    reply = latest_chat(live_server)["messages"][-1]
    assert reply["status"] == "stopped"
    assert 0 < len(texts({"messages": [reply]})[0].split()) < 600


def test_interactive_mode_keeps_one_chat_across_turns_until_eof(live_server: LiveServer) -> None:
    term = PtyProcess([STREAMKEEP, "chat"], live_server.env)
    term.expect(lambda t: ">>> " in t)
    term.send("alpha\r")
    term.expect(lambda t: "You said: alpha" in t and t.count(">>> ") >= 2)
    term.send("beta\r")
    term.expect(lambda t: "You said: beta" in t and t.count(">>> ") >= 3)
    term.send("\x04")  # Ctrl+D
    assert term.wait() == 0
    assert texts(latest_chat(live_server)) == [
        "alpha",
        "Hello! You said: alpha",
        "beta",
        "Hello! You said: beta",
    ]


def test_a_provider_error_is_shown_and_exits_1(live_server: LiveServer) -> None:
    done = subprocess.run(
        [STREAMKEEP, "chat", "[[tokens=10 error_after=3]] fail please"],
        env=live_server.env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "error:" in done.stderr.decode()
    assert latest_chat(live_server)["messages"][-1]["status"] == "error"


def test_a_reply_cut_short_is_an_error_not_a_whole_answer(live_server: LiveServer) -> None:
    # The provider's body ends after three words with no finish reason and no [DONE].
    done = subprocess.run(
        [STREAMKEEP, "chat", "[[tokens=10 cut_after=3]] go"],
        env=live_server.env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout.decode() == "lorem ipsum dolor\n"
    assert "error: the provider closed the stream before finishing" in done.stderr.decode()
    reply = latest_chat(live_server)["messages"][-1]
    assert (reply["status"], reply["error"]) == (
        "error",
        "the provider closed the stream before finishing",
    )


def test_a_reply_cut_at_the_token_limit_says_so(live_server: LiveServer) -> None:
    term = PtyProcess([STREAMKEEP, "chat", "[[tokens=5 finish=length]] go"], live_server.env)
    term.expect(lambda t: "cut at the token limit" in t)
    assert term.wait() == 0
    chat = latest_chat(live_server)
    assert f"streamkeep chat --chat {chat['id']} continue" in term.text
    assert chat["messages"][-1]["finish_reason"] == "length"
    shown = subprocess.run(
        [STREAMKEEP, "chats", "show", chat["id"]],
        env=live_server.env,
        capture_output=True,
        check=True,
    ).stdout.decode()
    assert "assistant · cut at the token limit" in shown

    finished = PtyProcess([STREAMKEEP, "chat", "[[tokens=5]] go"], live_server.env)
    finished.expect(lambda t: "tokens:" in t)
    assert finished.wait() == 0
    assert "token limit" not in finished.text


def test_no_server_gives_a_clear_message(live_server: LiveServer) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [STREAMKEEP, "chat", "--url", url, "hi"],
        env=live_server.env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    err = done.stderr.decode()
    assert "No streamkeep server" in err and "streamkeep serve" in err


def test_chats_list_show_and_export(live_server: LiveServer) -> None:
    env = live_server.env
    subprocess.run([STREAMKEEP, "chat", "export me"], env=env, capture_output=True, check=True)
    chat = latest_chat(live_server)

    listing = subprocess.run(
        [STREAMKEEP, "chats", "list"], env=env, capture_output=True, check=True
    ).stdout.decode()
    assert chat["id"] in listing

    shown = subprocess.run(
        [STREAMKEEP, "chats", "show", chat["id"]], env=env, capture_output=True, check=True
    ).stdout.decode()
    assert "export me" in shown and "You said: export me" in shown

    md = subprocess.run(
        [STREAMKEEP, "chats", "export", chat["id"], "--format", "md"],
        env=env,
        capture_output=True,
        check=True,
    ).stdout.decode()
    assert "## user\n\nexport me" in md and "## assistant\n\nHello! You said: export me" in md

    raw = subprocess.run(
        [STREAMKEEP, "chats", "export", chat["id"], "--format", "json"],
        env=env,
        capture_output=True,
        check=True,
    ).stdout
    assert json.loads(raw)["messages"] == chat["messages"]

    missing = subprocess.run(
        [STREAMKEEP, "chats", "show", "chat_nope"], env=env, capture_output=True, check=False
    )
    assert missing.returncode == 1 and b"HTTP 404" in missing.stderr


def test_markup_like_text_in_titles_is_shown_as_text(live_server: LiveServer) -> None:
    with live_server.api() as api:
        chat = api.post("/api/chats", json={"title": "What does [/INST] mean? [bold]x"}).json()
    env = live_server.env
    listing = subprocess.run(
        [STREAMKEEP, "chats", "list"], env=env, capture_output=True, check=True
    ).stdout.decode()
    assert "[/INST]" in listing
    shown = subprocess.run(
        [STREAMKEEP, "chats", "show", chat["id"]], env=env, capture_output=True, check=True
    ).stdout.decode()
    assert "What does [/INST] mean? [bold]x" in shown


def test_an_error_in_one_turn_does_not_end_the_interactive_session(
    live_server: LiveServer,
) -> None:
    term = PtyProcess([STREAMKEEP, "chat", "--model", "nope/missing"], live_server.env)
    term.expect(lambda t: ">>> " in t)
    term.send("hello\r")
    term.expect(lambda t: "unknown provider" in t and t.count(">>> ") >= 2)
    term.send("\x04")
    assert term.wait() == 0


def test_a_dropped_connection_is_resumed_without_loss_or_repeats(live_server: LiveServer) -> None:
    relay = CutRelay(int(live_server.url.rsplit(":", 1)[1]))
    try:
        proc = subprocess.Popen(
            [STREAMKEEP, "chat", "--url", relay.url, "[[tokens=80 delay=0.03]] go"],
            env=live_server.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None
        # Unbuffered: `communicate` reads the descriptor, not a file object's buffer.
        first = os.read(proc.stdout.fileno(), 40)  # the answer streams through the relay
        assert relay.cut() >= 1
        rest, err = proc.communicate(timeout=60)
    finally:
        relay.close()
    assert proc.returncode == 0, err
    printed = (first + rest).decode().strip()
    stored = texts(latest_chat(live_server))[-1]
    assert printed == stored, (printed, stored)
    assert len(printed.split()) == 80
