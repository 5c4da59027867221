"""`streamkeep usage`: the tokens the stored replies used, per user, model, UTC day or
API key, with the total. It reads the database directly (no server needed, every
user's replies), as `GET /api/usage` answers an admin; `--format json` prints that
answer's shape."""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    from rich.table import Table

    from streamkeep.server.schemas import UsageReport
    from streamkeep.store import UsageTotals

GROUPS = ("user", "model", "day", "key")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "usage", help="tokens used by the stored replies", description=__doc__
    )
    p.add_argument("--group-by", choices=GROUPS, default="user", help="(default: user)")
    p.add_argument(
        "--from",
        dest="start",
        type=_when,
        metavar="WHEN",
        help="from this ISO date or time on (UTC unless it names a zone)",
    )
    p.add_argument(
        "--to", dest="end", type=_when, metavar="WHEN", help="before this ISO date or time"
    )
    p.add_argument("--user", metavar="NAME", help="only this user's replies")
    p.add_argument("--format", choices=("table", "json"), default="table", help="(default: table)")
    p.add_argument(
        "--database-url", help="SQLAlchemy URL (default: STREAMKEEP_DATABASE_URL or SQLite)"
    )
    p.set_defaults(func=run)


# Imports inside the functions keep `streamkeep --help` fast.


def _when(text: str) -> datetime:
    from streamkeep.server.schemas import utc_when

    try:
        when = utc_when(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    assert isinstance(when, datetime)
    return when


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console
    from sqlalchemy.exc import DBAPIError

    from streamkeep.config import load_settings
    from streamkeep.store import NotFound

    err = Console(stderr=True)
    if args.start is not None and args.end is not None and args.start > args.end:
        err.print("[red]--from is after --to[/]")
        return 2
    url = load_settings(database_url=args.database_url).resolved_database_url
    parsed = make_url(url)
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        err.print(f"[red]No database at {shown}[/] (nothing stored yet?)")
        return 1
    try:
        report = asyncio.run(_report(url, args))
    except NotFound:
        err.print(f"[red]No user named {args.user!r}[/]")
        return 1
    except DBAPIError as exc:
        err.print(f"[red]Cannot read {shown}:[/] {exc.orig}")
        err.print("Is it reachable, and up to date (`streamkeep db upgrade`)?")
        return 1
    if args.format == "json":
        print(report.model_dump_json(by_alias=True, indent=2))
    else:
        Console().print(_table(report))
    return 0


async def _report(url: str, args: argparse.Namespace) -> UsageReport:
    from streamkeep.server.schemas import UsageReport
    from streamkeep.store import ChatStore, Database

    db = Database.from_url(url)
    try:
        store = ChatStore(db)
        user_id = None if args.user is None else (await store.get_user_by_name(args.user)).id
        rows = await store.usage(args.group_by, start=args.start, end=args.end, user_id=user_id)
    finally:
        await db.dispose()
    return UsageReport.of(args.group_by, args.start, args.end, rows)


def _table(report: UsageReport) -> Table:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    period = " ".join(
        f"{word} {when.isoformat().replace('+00:00', 'Z')}"
        for word, when in (("from", report.start), ("to", report.end))
        if when is not None
    )
    # Few lines, short headers: seven columns fit 80 characters with a model's name.
    table = Table(
        title=f"Usage by {report.group_by} {period}".strip(),
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_footer=True,
    )
    total = report.total
    columns = ("replies", "input", "output", "reasoning", "cached", "estimated")
    table.add_column(report.group_by, footer="total", no_wrap=True)  # a key prefix is whole
    for name, value in zip(columns, _numbers(total), strict=True):
        table.add_column(name, footer=value, justify="right")
    for row in report.items:
        table.add_row(escape(row.group), *_numbers(row))  # names are user text, not markup
    return table


def _numbers(totals: UsageTotals) -> list[str]:
    estimated = f"{totals.estimated_messages}" if totals.estimated else ""
    counts = (
        totals.messages,
        totals.input_tokens,
        totals.output_tokens,
        totals.reasoning_tokens,
        totals.cached_input_tokens,
    )
    return [f"{n:,}" for n in counts] + [estimated]
