"""`python -m streamkeep.llm "prompt"`: stream one answer to the terminal.

The reply goes to stdout as it arrives (so it pipes cleanly); reasoning (dimmed),
usage and errors go to stderr. Exit code 1 on any error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import TextIO

from streamkeep.config import load_settings
from streamkeep.llm.errors import LLMError
from streamkeep.llm.events import Finish, ReasoningDelta, StreamError, TextDelta, UsageReport
from streamkeep.llm.registry import ModelRegistry
from streamkeep.llm.types import ChatRequest, Message, Usage

_DIM, _RESET = "\x1b[2m", "\x1b[0m"


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m streamkeep.llm", description="Stream one answer from a model."
    )
    parser.add_argument("prompt", help="the user message")
    parser.add_argument("--model", help="PROVIDER/MODEL (default: the configured default)")
    parser.add_argument("--system", help="a system message")
    parser.add_argument("--max-tokens", type=int, help="the most tokens to generate")
    parser.add_argument("--temperature", type=float)
    return parser.parse_args(argv)


def _request(args: argparse.Namespace) -> ChatRequest:
    messages = [Message("system", args.system)] if args.system else []
    messages.append(Message("user", args.prompt))
    return ChatRequest(
        messages=messages,  # the model: the registry sets the provider's own name
        max_tokens=args.max_tokens,
        temperature=args.temperature,
    )


def _write(stream: TextIO, text: str) -> None:
    stream.write(text)
    stream.flush()


async def _run(args: argparse.Namespace) -> int:
    settings = load_settings()
    registry = ModelRegistry(settings)
    model = args.model or settings.default_model()
    usage: Usage | None = None
    try:
        async for event in registry.stream(model, _request(args)):
            if isinstance(event, TextDelta):
                _write(sys.stdout, event.text)
            elif isinstance(event, ReasoningDelta):
                dim = sys.stderr.isatty()
                _write(sys.stderr, f"{_DIM}{event.text}{_RESET}" if dim else event.text)
            elif isinstance(event, UsageReport) and event.final:
                usage = event.usage
            elif isinstance(event, Finish):
                _write(sys.stdout, "\n")
                _report(model, event.reason, usage)
            elif isinstance(event, StreamError):
                _write(sys.stdout, "\n")
                print(f"error: {event.error.message}", file=sys.stderr)
                return 1
    except LLMError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await registry.aclose()
    return 0


def _report(model: str, reason: str, usage: Usage | None) -> None:
    counts = "usage unknown"
    if usage is not None:
        counts = f"{usage.input_tokens} in, {usage.output_tokens} out"
        counts += " (estimated)" if usage.estimated else ""
    print(f"[{model}: {reason}; {counts}]", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
