"""`streamkeep users create|list|disable`: manage the users, on the database directly
(no server needed; migrations are applied first, as `streamkeep db upgrade` does).

The first user created becomes the owner of the chats made before there were users
(in single-user mode, by whoever runs the server).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from streamkeep.cli.database import add_database_argument, fail, run_on_store, when

if TYPE_CHECKING:
    from streamkeep.store import ChatStore


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "users",
        help="create, list and disable users (on the database directly)",
        description=__doc__,
    )
    add_database_argument(p)
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    create = sub.add_parser(
        "create",
        help="a new user; asks for their password twice",
        description="Create a user. The password is asked twice on the terminal, or read "
        "from the first line of stdin with --password-stdin. Prints the user's name, id "
        "and role, never the password.",
    )
    create.add_argument("name", help="1 to 64 characters, no control characters")
    create.add_argument("--admin", action="store_true", help="the user is an admin")
    create.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from stdin's first line (its newline is not part of it)",
    )
    add_database_argument(create)

    lst = sub.add_parser("list", help="every user, disabled ones too, oldest first")
    lst.add_argument("--format", choices=("table", "json"), default="table")
    add_database_argument(lst)

    disable = sub.add_parser(
        "disable", help="disable a user: their sign-in sessions and API keys are revoked"
    )
    disable.add_argument("name")
    add_database_argument(disable)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "create":
        return _create(args)
    if args.action == "list":
        return run_on_store(args, lambda store: _list(store, args.format))
    return run_on_store(args, lambda store: _disable(store, args.name))


class _NoPassword(Exception):
    pass


def _create(args: argparse.Namespace) -> int:
    from streamkeep.store import StoreError
    from streamkeep.store.accounts import checked_name

    try:
        checked_name(args.name)  # before asking for a password that would be refused
    except StoreError as exc:
        return fail(exc.message)
    try:
        password = _read_password(from_stdin=args.password_stdin)
    except _NoPassword as exc:
        return fail(str(exc))
    return run_on_store(args, lambda store: _store_user(store, args.name, password, args.admin))


def _read_password(*, from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    else:
        try:
            password = getpass.getpass("Password: ")
            if password and getpass.getpass("Password (again): ") != password:
                raise _NoPassword("the two passwords differ: nothing was created")
        except (EOFError, KeyboardInterrupt):
            raise _NoPassword("no password given: nothing was created") from None
    if not password:
        raise _NoPassword("the password is empty: nothing was created")
    return password


async def _store_user(store: ChatStore, name: str, password: str, admin: bool) -> int:
    user, adopted = await store.create_user_adopting(name, password, is_admin=admin)
    console = Console(soft_wrap=True, highlight=False)
    role = "admin" if user.is_admin else "not admin"
    console.print(f"created user {escape(user.name)} (id {user.id}, {role})")
    if adopted:
        chats = "chat now belongs" if adopted == 1 else "chats now belong"
        console.print(
            f"{adopted} existing {chats} to {escape(user.name)} "
            "(made before there were users, in single-user mode)"
        )
    return 0


async def _list(store: ChatStore, fmt: str) -> int:
    users = await store.list_users()
    console = Console()
    if fmt == "json":
        rows = [u.model_dump(mode="json") for u in users]
        console.file.write(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
        return 0
    # Nothing is cut off in an 80-column terminal: a long name folds.
    table = Table(
        Column("name", overflow="fold"),
        Column("id", no_wrap=True),
        Column("admin", no_wrap=True),
        Column("created", no_wrap=True),
        Column("disabled", no_wrap=True),
        caption="times in UTC",
    )
    for u in users:
        admin = "yes" if u.is_admin else ""
        table.add_row(
            escape(u.name),
            u.id,
            admin,
            when(u.created_at, table=True),
            when(u.disabled_at, table=True),
        )
    console.print(table)
    return 0


async def _disable(store: ChatStore, name: str) -> int:
    user = await store.get_user_by_name(name)
    done = await store.disable_user(user.id)
    console = Console(soft_wrap=True, highlight=False)
    if user.disabled_at is not None:
        console.print(f"user {escape(name)} was disabled already, at {when(done.disabled_at)}")
    else:
        console.print(f"disabled user {escape(name)}: their sessions and API keys are revoked")
    return 0
