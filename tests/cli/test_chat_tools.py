"""Tool calls in the terminal: `streamkeep chat --tools` against a real server whose
model (the fake provider, a process) is scripted by a `[[calls=...]]` directive.

The directive scripts the model's first call only; its second call (after the tool
results) is the fake's echo, "Tool results: <each result, joined by ' | '>"."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests.cli.conftest import STREAMKEEP, LiveServer
from tests.cli.pty_run import PtyProcess
from tests.cli.test_chat import latest_chat
from tests.fakes.upstream_wire import calls_directive

pytestmark = pytest.mark.slow  # each test spawns the real command (a Python start-up)

SIX_BY_SEVEN = ("calculator", {"expression": "6*7"})
BY_ZERO = ("calculator", {"expression": "1/0"})


def run(server: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STREAMKEEP, *args], env=server.env, capture_output=True, text=True, timeout=60, check=False
    )


def tools_of(server: LiveServer, chat_id: str) -> list[str]:
    with server.api() as api:
        tools: list[str] = api.get(f"/api/chats/{chat_id}").json()["tools"]
        return tools


def tool_parts(chat: dict[str, Any]) -> list[dict[str, Any]]:
    reply = chat["messages"][-1]
    return [p for p in reply["parts"] if p["type"].startswith("tool-")]


def test_calls_and_their_results_are_shown_live(live_server: LiveServer) -> None:
    calls = [SIX_BY_SEVEN, ("current_time", {"timezone": "UTC"}), BY_ZERO]
    message = "work it out " + calls_directive(calls, text="Let me see.")
    term = PtyProcess(
        [STREAMKEEP, "chat", "--tools", "calculator,current_time", message], live_server.env
    )
    term.expect(lambda t: "tokens:" in t)
    assert term.wait() == 0
    chat = latest_chat(live_server)
    assert chat["tools"] == ["calculator", "current_time"]
    parts = tool_parts(chat)
    assert [p["state"] for p in parts] == ["output-available"] * 2 + ["output-error"]
    now = parts[1]["output"]
    # One line per call: its arguments and its result (or error), as stored.
    assert '⚙ calculator({"expression": "6*7"}) → 42' in term.text
    assert f'⚙ current_time({{"timezone": "UTC"}}) → {now}' in term.text
    assert '✗ calculator({"expression": "1/0"}) → ' in term.text
    assert "division by zero" in parts[2]["errorText"]
    assert parts[2]["errorText"] in term.text
    # The text of both steps: the model's, then its answer to the results.
    assert "Let me see." in term.text
    assert f"Tool results: 42 | {now} | Error: " in term.text


def test_piped_output_is_the_answer_and_the_calls_go_to_stderr(live_server: LiveServer) -> None:
    message = "go " + calls_directive([SIX_BY_SEVEN])
    done = run(live_server, "chat", "--tools", "calculator", message)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Tool results: 42\n"
    assert '⚙ calculator({"expression": "6*7"}) → 42\n' in done.stderr


def test_tools_are_set_on_a_new_chat_and_replaced_on_a_continued_one(
    live_server: LiveServer,
) -> None:
    assert run(live_server, "chat", "--tools", "calculator", "hello").returncode == 0
    chat_id = latest_chat(live_server)["id"]
    assert tools_of(live_server, chat_id) == ["calculator"]

    both = run(live_server, "chat", "-c", "--tools", "current_time, calculator", "hi")
    assert both.returncode == 0, both.stderr
    assert latest_chat(live_server)["id"] == chat_id
    assert tools_of(live_server, chat_id) == ["current_time", "calculator"]
    offered = run(live_server, "chat", "--chat", chat_id, "--tools", "", "none now")
    assert offered.returncode == 0, offered.stderr
    assert tools_of(live_server, chat_id) == []
    # A turn without --tools leaves them as they are.
    assert run(live_server, "chat", "-c", "again").returncode == 0
    assert tools_of(live_server, chat_id) == []

    wrong = run(live_server, "chat", "-c", "--tools", "calculator,nope", "x")
    assert wrong.returncode == 1
    assert "'nope'" in wrong.stderr and "HTTP 422" in wrong.stderr
    assert tools_of(live_server, chat_id) == []
    # Nothing was sent: the last message is still the previous turn's reply.
    assert latest_chat(live_server)["messages"][-2]["parts"][0]["text"] == "again"


def test_export_md_shows_the_calls(live_server: LiveServer) -> None:
    long_input = {"expression": " + ".join(["1"] * 60)}
    calls = [SIX_BY_SEVEN, BY_ZERO, ("calculator", long_input)]
    done = run(live_server, "chat", "--tools", "calculator", "sums " + calls_directive(calls))
    assert done.returncode == 0, done.stderr
    chat = latest_chat(live_server)
    error = tool_parts(chat)[1]["errorText"]

    md = run(live_server, "chats", "export", chat["id"], "--format", "md")
    assert md.returncode == 0, md.stderr
    assert '⚙ `calculator({"expression": "6*7"})` → `42`' in md.stdout
    assert f'✗ `calculator({{"expression": "1/0"}})` → error: `{error}`' in md.stdout
    # Too long for a line: the arguments and the result in blocks of their own.
    expression = long_input["expression"]
    assert f'⚙ **calculator**\n\n```\n{{\n  "expression": "{expression}"\n}}\n```' in md.stdout
    assert "\n\nResult:\n\n```\n60\n```" in md.stdout
    assert "Tool results: 42 | Error: " in md.stdout

    shown = run(live_server, "chats", "show", chat["id"])
    assert shown.returncode == 0, shown.stderr
    assert "calculator" in shown.stdout and "→" in shown.stdout
