"""The `streamkeep` command. Each subcommand lives in its own module and registers
itself through `add_parser(subparsers)`; this module only dispatches."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from streamkeep.config import SettingsError

# module name -> registered in this order in `streamkeep --help`
_SUBCOMMAND_MODULES = ("serve", "doctor", "db", "chat", "chats", "users", "keys", "usage")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamkeep",
        description="Stream an LLM's answer token by token and keep every message.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(f"streamkeep.cli.{name}")
        except ModuleNotFoundError as exc:  # a subcommand not built yet
            if exc.name != f"streamkeep.cli.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
    except SettingsError as exc:  # said plainly, not as a traceback
        print(f"streamkeep: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
