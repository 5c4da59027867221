"""`streamkeep keys create|list|revoke`: manage API keys, on the database directly (no
server needed; migrations are applied first, as `streamkeep db upgrade` does).

A key is shown once, when it is created: the store keeps only its hash, and its
visible prefix (`sk-keep-` and 8 more characters), which lists show and `revoke` takes.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from streamkeep.cli.database import add_database_argument, run_on_store, when

if TYPE_CHECKING:
    from streamkeep.store import ApiKeyRecord, ChatStore

_CREATE_HELP = (
    "Create an API key for a user. The key is printed on stdout as its only line, and "
    "only this once: KEY=$(streamkeep keys create --user NAME) keeps it. Its prefix and "
    "details go to stderr."
)


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "keys",
        help="create, list and revoke API keys (on the database directly)",
        description=__doc__,
    )
    add_database_argument(p)
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    create = sub.add_parser(
        "create", help="a new key, printed once (alone on stdout)", description=_CREATE_HELP
    )
    create.add_argument("--user", required=True, help="the name of the key's owner")
    create.add_argument("--name", help="a label for the key (where it is used, say)")
    create.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="MODEL",
        help="a model the key may use (repeat for more; none given: every model)",
    )
    add_database_argument(create)

    lst = sub.add_parser("list", help="keys, revoked ones too, oldest first")
    lst.add_argument("--user", help="only this user's keys (default: every user's)")
    lst.add_argument("--format", choices=("table", "json"), default="table")
    add_database_argument(lst)

    revoke = sub.add_parser("revoke", help="revoke a key, by the prefix lists show")
    revoke.add_argument("prefix", help="the key's prefix: sk-keep- and 8 more characters")
    add_database_argument(revoke)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "create":
        return run_on_store(args, lambda store: _create(store, args.user, args.name, args.models))
    if args.action == "list":
        return run_on_store(args, lambda store: _list(store, args.user, args.format))
    return run_on_store(args, lambda store: _revoke(store, args.prefix))


def _models(record: ApiKeyRecord, between: str = ", ") -> str:
    return "all" if record.allowed_models is None else between.join(record.allowed_models)


async def _create(
    store: ChatStore, user_name: str, label: str | None, models: list[str] | None
) -> int:
    user = await store.get_user_by_name(user_name)
    record, key = await store.create_api_key(user.id, name=label, allowed_models=models)
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    named = f", name {escape(record.name)}" if record.name else ""
    err.print(
        f"created API key {record.prefix} for {escape(user.name)} "
        f"(models: {escape(_models(record))}{named})"
    )
    # Alone on stdout, so that a script's $(...) gets the key and nothing else.
    sys.stdout.write(key + "\n")
    sys.stdout.flush()
    err.print("[yellow]Keep the key now: it will not be shown again.[/]")
    return 0


async def _list(store: ChatStore, user_name: str | None, fmt: str) -> int:
    names = {u.id: u.name for u in await store.list_users()}
    if user_name is not None:
        keys = await store.list_api_keys((await store.get_user_by_name(user_name)).id)
    else:
        keys = await store.list_all_api_keys()
    console = Console()
    if fmt == "json":
        rows = [{**k.model_dump(mode="json"), "user": names.get(k.user_id)} for k in keys]
        console.file.write(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
        return 0
    # Nothing is cut off in an 80-column terminal: the text columns fold, and the
    # compact box leaves room for all seven.
    table = Table(
        Column("prefix", no_wrap=True),
        Column("user", overflow="fold"),
        Column("name", overflow="fold"),
        Column("models", overflow="fold"),
        Column("created", no_wrap=True),
        Column("last used", no_wrap=True),
        Column("revoked", no_wrap=True),
        caption="times in UTC",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    for k in keys:
        table.add_row(
            k.prefix,
            escape(names.get(k.user_id, k.user_id)),
            escape(k.name or ""),
            escape(_models(k, "\n")),
            when(k.created_at, table=True),
            when(k.last_used_at, "never", table=True),
            when(k.revoked_at, table=True),
        )
    console.print(table)
    return 0


async def _revoke(store: ChatStore, prefix: str) -> int:
    before = datetime.now(UTC)
    record = await store.revoke_api_key_by_prefix(prefix)
    owner = await store.get_user(record.user_id)
    console = Console(soft_wrap=True, highlight=False)
    key = f"key {record.prefix} of {escape(owner.name)}"
    # The store keeps a key's first revocation: one older than this run was already there.
    if record.revoked_at is not None and record.revoked_at < before:
        console.print(f"{key} was revoked already, at {when(record.revoked_at)}")
    else:
        console.print(f"revoked {key}: it no longer works")
    return 0
