"""Which server `streamkeep chat` and `streamkeep chats` talk to, and as whom.

`--url` wins; else `STREAMKEEP_URL`; else the address `streamkeep serve` listens on
with the same environment (`STREAMKEEP_HOST`, `STREAMKEEP_PORT`), where a wildcard
address (0.0.0.0, ::) is reached on loopback; else http://127.0.0.1:8000.

The API key (a server with users wants one) is `--api-key`, else `STREAMKEEP_API_KEY`;
the environment is the better place (a flag shows in the process list).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = "8000"
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1", "": DEFAULT_HOST}

URL_HELP = (
    "the server's URL (default: $STREAMKEEP_URL, else http://$STREAMKEEP_HOST:$STREAMKEEP_PORT, "
    "else http://127.0.0.1:8000)"
)


def add_url_argument(parser: argparse.ArgumentParser) -> None:
    """`--url` and `--api-key`, left unset unless given: a subcommand's parser may add
    them again, and argparse would otherwise let the inner parser's default overwrite
    an outer value."""
    parser.add_argument("--url", default=argparse.SUPPRESS, help=URL_HELP)
    parser.add_argument(
        "--api-key",
        default=argparse.SUPPRESS,
        help="an API key of the server's (default: $STREAMKEEP_API_KEY; needed once the "
        "server has users: `streamkeep keys create --user NAME`)",
    )


def api_key(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    key: str | None = getattr(args, "api_key", None) or env.get("STREAMKEEP_API_KEY")
    return key or None


NEEDS_KEY = (
    "The server has users and wants an API key: set STREAMKEEP_API_KEY (or pass --api-key); "
    "make one with `streamkeep keys create --user NAME`."
)


def server_url(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> str:
    """The server URL for these parsed arguments (see the module docstring)."""
    env = os.environ if env is None else env
    url: str | None = getattr(args, "url", None) or env.get("STREAMKEEP_URL")
    if url:
        return url.rstrip("/")
    host = env.get("STREAMKEEP_HOST", DEFAULT_HOST).strip()
    host = _WILDCARDS.get(host, host).strip("[]")
    port = env.get("STREAMKEEP_PORT", "").strip() or DEFAULT_PORT
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"
