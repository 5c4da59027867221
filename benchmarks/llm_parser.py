"""How fast the OpenAI stream parser turns body bytes into events (not a test).

Builds large, realistic Chat Completions SSE bodies (gpt-4o-style chunks, every field a
real server sends), cuts them into network-sized reads of 1-4 KiB at arbitrary bytes,
and feeds them through `OpenAIChunkParser`, the path every token takes. Prints, per
variant, the chunks parsed, the best total of a few runs and microseconds per chunk.

    .venv/bin/python benchmarks/llm_parser.py [--chunks 100000] [--runs 5]

The target is under 15 us per content chunk on a 2-core machine.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from typing import Any

import orjson

from streamkeep.llm.events import Finish
from streamkeep.llm.openai import OpenAIChunkParser

_TEXT = (
    "The quick brown fox jumps over the lazy dog while streaming tokens one by one , "
    "naïve café Grüße 東京 👋 and then some more ordinary words follow ."
)
_WORDS = _TEXT.split()


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return (
        b"data: "
        + orjson.dumps(
            {
                "id": "chatcmpl-BXk2mQ7Yv1bench",
                "object": "chat.completion.chunk",
                "created": 1747222001,
                "model": "gpt-4o-mini-2024-07-18",
                "service_tier": "default",
                "system_fingerprint": "fp_0392822090",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
                "usage": None,
            }
        )
        + b"\n\n"
    )


def _ending(reason: str) -> list[bytes]:
    usage = {"prompt_tokens": 100, "completion_tokens": 100_000, "total_tokens": 100_100}
    last = {"id": "chatcmpl-BXk2mQ7Yv1bench", "choices": [], "usage": usage}
    return [_chunk({}, reason), b"data: " + orjson.dumps(last) + b"\n\n", b"data: [DONE]\n\n"]


def content_stream(n: int) -> tuple[bytes, int]:
    """n text chunks of one word each, as a chat answer streams."""
    pieces = [_chunk({"role": "assistant", "content": "", "refusal": None})]
    pieces += [_chunk({"content": " " + _WORDS[i % len(_WORDS)]}) for i in range(n)]
    return b"".join(pieces + _ending("stop")), n


def reasoning_stream(n: int) -> tuple[bytes, int]:
    """n/2 reasoning chunks (DeepSeek's field) then n/2 text chunks."""
    half = n // 2
    pieces = [_chunk({"reasoning_content": " " + _WORDS[i % len(_WORDS)]}) for i in range(half)]
    pieces += [_chunk({"content": " " + _WORDS[i % len(_WORDS)]}) for i in range(n - half)]
    return b"".join(pieces + _ending("stop")), n


def tool_stream(n: int) -> tuple[bytes, int]:
    """Parallel tool calls, two at a time interleaved, each ~100 argument pieces."""
    pieces: list[bytes] = []
    per_call = 100
    calls = max(2, n // per_call)
    for pair in range(0, calls, 2):
        for index in (0, 1):
            head: dict[str, Any] = {
                "index": index,
                "id": f"call_{pair + index:08d}",
                "type": "function",
                "function": {"name": "write_file", "arguments": ""},
            }
            pieces.append(_chunk({"tool_calls": [head]}))
        text = orjson.dumps({"path": "notes.txt", "body": " ".join(_WORDS * 6)}).decode()
        step = max(1, len(text) // (per_call - 1))
        parts = [text[i : i + step] for i in range(0, len(text), step)]
        for part in parts:
            for index in (0, 1):
                args = {"index": index, "function": {"arguments": part}}
                pieces.append(_chunk({"tool_calls": [args]}))
    count = len(pieces)
    return b"".join(pieces + _ending("tool_calls")), count


def reads(body: bytes, seed: int = 7) -> list[bytes]:
    """The body cut into network-sized reads, 1-4 KiB, at arbitrary byte positions."""
    rng = random.Random(seed)
    out, i = [], 0
    while i < len(body):
        size = rng.randint(1024, 4096)
        out.append(body[i : i + size])
        i += size
    return out


def run_once(pieces: list[bytes]) -> tuple[float, int]:
    parser = OpenAIChunkParser("bench")
    events = 0
    start = time.perf_counter()
    for piece in pieces:
        events += len(parser.feed(piece))
    tail = parser.close()
    elapsed = time.perf_counter() - start
    assert parser.done and parser.skipped_chunks == 0
    assert not tail  # [DONE] came through feed()
    return elapsed, events


def bench(name: str, build: Callable[[int], tuple[bytes, int]], n: int, runs: int) -> str:
    body, chunks = build(n)
    pieces = reads(body)
    best = float("inf")
    events = 0
    for _ in range(runs):
        elapsed, events = run_once(pieces)
        best = min(best, elapsed)
    mib = len(body) / 2**20
    return (
        f"{name:<10} {chunks:>9,} {events:>9,} {mib:>8.1f} {best:>9.3f} {best / chunks * 1e6:>8.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    # A sanity check that the benchmark measures a working parser.
    body, _ = content_stream(10)
    check = OpenAIChunkParser("bench")
    events = check.feed(body) + check.close()
    assert isinstance(events[-1], Finish) and events[-1].reason == "stop"

    print(f"{'variant':<10} {'chunks':>9} {'events':>9} {'MiB':>8} {'best s':>9} {'us/chunk':>8}")
    for name, build in (
        ("content", content_stream),
        ("reasoning", reasoning_stream),
        ("tools", tool_stream),
    ):
        print(bench(name, build, args.chunks, args.runs), flush=True)


if __name__ == "__main__":
    main()
