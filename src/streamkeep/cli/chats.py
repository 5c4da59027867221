"""`streamkeep chats list|show|export`: browse the stored chats of a server."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape
from rich.table import Column, Table

from streamkeep.cli.target import NEEDS_KEY, add_url_argument, api_key, server_url
from streamkeep.cli.term import consoles
from streamkeep.client import ApiError, ServerUnreachable, StreamkeepClient
from streamkeep.client.render import CUT_AT_LIMIT, message_markdown, usage_line


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("chats", help="list, show and export stored chats")
    add_url_argument(p)  # before or after the action: `chats --url X list`, `chats list --url X`
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    lst = sub.add_parser("list", help="the most recent chats")
    add_url_argument(lst)
    lst.add_argument("--limit", type=int, default=20)
    show = sub.add_parser("show", help="a chat's active branch")
    show.add_argument("chat_id")
    add_url_argument(show)
    export = sub.add_parser("export", help="a chat as Markdown or JSON, to stdout")
    export.add_argument("chat_id")
    export.add_argument("--format", choices=("md", "json"), default="md")
    add_url_argument(export)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    console, err = consoles()
    url = server_url(args)
    try:
        with StreamkeepClient(url, api_key=api_key(args)) as client:
            if args.action == "list":
                _list(client, console, args.limit)
            elif args.action == "show":
                _show(client.get_chat(args.chat_id), console)
            else:
                _export(client.get_chat(args.chat_id), args.format, console)
    except ServerUnreachable:
        err.print(f"[red]No streamkeep server at {escape(url)}.[/] Start one: `streamkeep serve`.")
        return 1
    except ApiError as exc:
        if exc.status == 401:
            err.print(f"[red]{escape(exc.message)}.[/] {escape(NEEDS_KEY)}")
            return 1
        err.print(f"[red]{escape(exc.message)}[/] [dim](HTTP {exc.status})[/]")
        return 1
    return 0


def _list(client: StreamkeepClient, console: Console, limit: int) -> None:
    chats = client.list_chats(limit=limit)["items"]
    # The id is what every other command takes: it is shown whole, the title gives way.
    id_width = max((len(c["id"]) for c in chats), default=2)
    table = Table(Column("id", no_wrap=True, min_width=id_width), "title", "model", "updated")
    for chat in chats:
        row = (
            chat["id"],
            chat.get("title") or "",
            chat.get("model") or "",
            str(chat.get("updated_at", ""))[:19].replace("T", " "),
        )
        table.add_row(*(escape(str(v)) for v in row))  # titles are user text, not markup
    console.print(table)


def _show(chat: dict[str, Any], console: Console) -> None:
    console.rule(escape(chat.get("title") or chat["id"]))
    for message in chat.get("messages", []):
        status = message.get("status")
        label = message["role"] + ("" if status in (None, "complete") else f" · {status}")
        label += f" · {CUT_AT_LIMIT}" if message.get("finish_reason") == "length" else ""
        console.print(f"[bold]{escape(label)}[/]")
        console.print(Markdown(message_markdown(message)))
        if message.get("error"):
            console.print(f"[red]{escape(message['error'])}[/]")
        if message.get("usage"):
            console.print(f"[dim]{usage_line(message['usage'])}[/]")
        console.print()


def _export(chat: dict[str, Any], fmt: str, console: Console) -> None:
    if fmt == "json":
        console.file.write(json.dumps(chat, indent=2, ensure_ascii=False) + "\n")
        return
    lines = [f"# {chat.get('title') or chat['id']}", ""]
    for message in chat.get("messages", []):
        lines += [f"## {message['role']}", "", message_markdown(message), ""]
    console.file.write("\n".join(lines))
