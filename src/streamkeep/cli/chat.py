"""`streamkeep chat [MESSAGE]`: talk to a server (or, with --local, an in-process one)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

from streamkeep.cli.target import NEEDS_KEY, add_url_argument, api_key, server_url
from streamkeep.cli.term import consoles
from streamkeep.client import ApiError, ServerUnreachable, StreamkeepClient
from streamkeep.client.render import CUT_AT_LIMIT, ReplyOutcome, render_reply, usage_line

HELP = "Enter to send; /new starts a new chat, /exit (or Ctrl+D) quits, Ctrl+C stops a reply."


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("chat", help="chat in the terminal", description=__doc__)
    p.add_argument("message", nargs="?", help="the message (else stdin when piped, else a prompt)")
    add_url_argument(p)
    p.add_argument("--local", action="store_true", help="run the engine in this process")
    p.add_argument("--model", help="PROVIDER/MODEL for a new chat or this message")
    p.add_argument("--system", help="system prompt for a new chat")
    p.add_argument(
        "--tools",
        type=tool_names,
        metavar="NAME[,NAME...]",
        help="the tools the chat's replies may call (the server's `GET /api/tools`); "
        "with --chat or -c it replaces the chat's tools ('' for none)",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument("--chat", metavar="ID", help="continue this chat")
    group.add_argument(
        "-c", "--continue", dest="last", action="store_true", help="continue the most recent chat"
    )
    p.set_defaults(func=run)


def tool_names(value: str) -> list[str]:
    """`--tools a,b`: the names, in order, each once; '' is none."""
    names = [n.strip() for n in value.split(",") if n.strip()]
    return list(dict.fromkeys(names))


def run(args: argparse.Namespace) -> int:
    console, err = consoles()
    message = args.message
    if message is None and not sys.stdin.isatty():
        message = sys.stdin.read().strip()
    with contextlib.ExitStack() as stack:
        url = server_url(args)
        if args.local:
            from streamkeep.client.local import LocalServer
            from streamkeep.config import load_settings

            url = stack.enter_context(LocalServer(load_settings())).url
        client = stack.enter_context(StreamkeepClient(url, api_key=api_key(args)))
        try:
            session = _Session(client, args, console, err)
            if message:
                return session.turn(message, interactive=False)
            return session.loop()
        except ServerUnreachable:
            err.print(
                f"[red]No streamkeep server at {escape(url)}.[/] Start one with "
                "`streamkeep serve` (or `make run`), or use `streamkeep chat --local`."
            )
            return 1
        except ApiError as exc:
            if exc.status == 401:
                err.print(f"[red]{escape(exc.message)}.[/] {escape(NEEDS_KEY)}")
                return 1
            err.print(f"[red]{escape(exc.message)}[/] [dim](HTTP {exc.status})[/]")
            return 1


class _Session:
    def __init__(
        self, client: StreamkeepClient, args: argparse.Namespace, console: Console, err: Console
    ) -> None:
        self.client, self.args, self.console, self.err = client, args, console, err
        self.chat_id: str | None = args.chat
        if args.last:
            items = client.list_chats(limit=1)["items"]
            self.chat_id = items[0]["id"] if items else None
        if self.chat_id is not None and args.tools is not None:
            client.update_chat(self.chat_id, tools=args.tools)  # an unknown name: 422

    def _ensure_chat(self) -> str:
        if self.chat_id is None:
            chat = self.client.create_chat(
                model=self.args.model, system=self.args.system, tools=self.args.tools
            )
            self.chat_id = str(chat["id"])
        return self.chat_id

    def turn(self, message: str, *, interactive: bool) -> int:
        chat_id = self._ensure_chat()
        outcome = ReplyOutcome()
        try:
            chunks = self.client.send(chat_id, message, model=self.args.model)
            render_reply(chunks, self.console, outcome, notes=self.err)
        except KeyboardInterrupt:
            stopped = self.client.stop(chat_id)
            self.err.print("[yellow]stopped[/]" if stopped else "[dim]the reply had ended[/]")
            return 0 if interactive else 130
        if outcome.status is None and outcome.message_id:
            self._settle(outcome)  # the stream ended early: the stored message is the truth
        if outcome.error:
            self.err.print(f"[red]error: {escape(outcome.error)}[/]")
            return 1
        footer = usage_line(outcome.usage)
        if outcome.status and outcome.status != "complete":
            footer = f"{outcome.status} · {footer}" if footer else outcome.status
        if footer:
            self.err.print(f"[dim]{escape(footer)}[/]")
        if outcome.finish_reason == "length":
            # It looks finished but is not: say so, and how to get the rest.
            more = (
                "send “continue”" if interactive else f"streamkeep chat --chat {chat_id} continue"
            )
            # soft_wrap: the command must stay one line to be copied, whatever the width.
            self.err.print(
                f"[yellow]{CUT_AT_LIMIT}[/] [dim]· for the rest: {escape(more)}[/]", soft_wrap=True
            )
        return 0

    def _settle(self, outcome: ReplyOutcome) -> None:
        assert outcome.message_id is not None
        stored = self.client.get_message(outcome.message_id)
        outcome.status = stored.get("status")
        outcome.finish_reason = stored.get("finish_reason") or outcome.finish_reason
        outcome.usage = stored.get("usage") or outcome.usage
        outcome.error = stored.get("error") or outcome.error
        if outcome.status == "streaming":
            self.err.print("[yellow]lost the connection; the reply goes on on the server[/]")

    def loop(self) -> int:
        self.err.print(f"[dim]{HELP}[/]")
        while True:
            try:
                line = input(">>> ").strip()
            except EOFError:
                self.err.print()
                return 0
            except KeyboardInterrupt:
                self.err.print()
                continue
            if line in ("/exit", "/quit"):
                return 0
            if line == "/new":
                self.chat_id = None
                continue
            if not line:
                continue
            try:
                self.turn(line, interactive=True)
            except ServerUnreachable:
                self.err.print(f"[red]No streamkeep server at {escape(self.client.base_url)}.[/]")
            except ApiError as exc:  # e.g. a too long message: say so, keep the session
                self.err.print(f"[red]{escape(exc.message)}[/] [dim](HTTP {exc.status})[/]")
            except KeyboardInterrupt:
                self.err.print()
