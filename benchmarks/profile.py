"""Where a streamkeep path spends its CPU under load: py-spy samples of its server.

    .venv/bin/python benchmarks/profile.py gateway 100 [--rounds 5] [--out DIR]

Starts the fake upstream and the path as `bench.py` does, warms it up, then samples the
server's process with py-spy (`record --format raw`) while it runs the scenario
`--rounds` times, so start-up (imports, migrations) stays out of the profile. Prints
the functions with the most samples (own time, and time with what they call) and each
module's share, and writes the raw (folded) stacks to `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]  # `bench`, and `tests.fakes`

from bench.cli import scenarios  # noqa: E402
from bench.load import Scenario, run  # noqa: E402
from bench.paths import Shared, Streamkeep, all_paths  # noqa: E402
from bench.procs import start_upstream  # noqa: E402

_LINE = re.compile(r":\d+\)$")
_FILE = re.compile(r"\((.*)\)")


def where(frame: str) -> str:
    """A frame's module, short: the package for libraries, the file for streamkeep's."""
    match = _FILE.search(frame)
    if match is None:
        return "?"
    path = re.sub(r".*site-packages/", "", match.group(1))
    if "streamkeep/" in path:
        return "streamkeep/" + path.split("streamkeep/", 1)[1]
    return path.split("/")[0].removesuffix(".py")


def summarize(raw: Path, top: int) -> str:
    """The profile as text: own samples, samples with callees, module shares."""
    own: Counter[str] = Counter()
    within: Counter[str] = Counter()
    modules: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [_LINE.sub(")", f) for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            within[frame] += n
        for module in {where(f) for f in frames}:
            modules[module] += n
    if not total:
        return "no samples"
    out = [f"{total} samples"]
    for title, counter in (("own", own), ("with callees", within), ("module", modules)):
        out.append(f"\n{title}:")
        out += [f"  {c * 100 / total:5.1f}%  {name[:140]}" for name, c in counter.most_common(top)]
    return "\n".join(out)


async def profile(args: argparse.Namespace) -> None:
    path = next(p for p in all_paths() if p.name == args.path)
    if not isinstance(path, Streamkeep):
        sys.exit(f"{args.path}: only streamkeep's paths are profiled")
    scenario = next(s for s, _ in scenarios(False) if s.name == args.scenario)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    args.out.mkdir(parents=True, exist_ok=True)
    raw = args.out / f"profile-{args.path}-{args.scenario}.txt"
    with tempfile.TemporaryDirectory(prefix="streamkeep-profile-") as tmp:
        upstream, url = start_upstream()
        shared = Shared(url, Path(tmp))
        try:
            path.start(shared)
            await run(path, Scenario("warm-up", 10, 5, 0.0), upstream.pid, 0)
            pids = [p for p in path.pids() if p != path.procs[0].pid] or path.pids()
            cmd = [spy, "record", "--format", "raw", "-r", str(args.rate), "-o", str(raw)]
            spying = await asyncio.create_subprocess_exec(
                *cmd, "--nonblocking", "-p", str(pids[0]), stdout=subprocess.DEVNULL
            )
            await asyncio.sleep(1.0)  # py-spy attaches
            for i in range(args.rounds):
                result = await run(path, scenario, upstream.pid, 0)
                chunks = sum(s.chunks for s in result.streams)
                print(f"round {i + 1}/{args.rounds}: {chunks} chunks", flush=True)
            spying.send_signal(signal.SIGINT)  # py-spy writes what it has, then exits
            await asyncio.wait_for(spying.wait(), 60)
        finally:
            path.stop()
            upstream.stop()
            shared.stop()
    if not raw.is_file():
        sys.exit("py-spy wrote nothing (is it installed, and may it attach? root or ptrace)")
    print(summarize(raw, args.top))
    print(f"\nwrote {raw} (folded stacks: speedscope.app and flamegraph.pl read them)")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("path", help="a streamkeep path of bench.py (gateway, chat-sqlite, ...)")
    parser.add_argument("scenario", help="a scenario of bench.py (1x500, 20, 100, 500, 1tok)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    asyncio.run(profile(parser.parse_args()))


if __name__ == "__main__":
    main()
