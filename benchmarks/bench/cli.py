"""`make bench`: every path under the same load, interleaved run by run, in one sitting.

Runs inside `unshare -n` (a network namespace of its own, loopback only) so nothing can
leave the machine; LiteLLM's venv is installed before entering it, since that needs the
network. See README.md's Benchmarks section for what each path and column means.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench import report
from bench.load import Run, Scenario, run
from bench.paths import Route, Shared, Skip, all_paths, install_litellm
from bench.procs import ROOT, start_upstream

IN_NETNS = "STREAMKEEP_BENCH_NETNS"
LITELLM_SKIP = "STREAMKEEP_BENCH_LITELLM_SKIP"  # why the install failed, across the exec


def scenarios(quick: bool, clients: int = 1) -> list[tuple[Scenario, str]]:
    """The scenarios; those of 100 streams and more split over `clients` processes."""
    requests = 50 if quick else 200
    by = f", {clients} client processes" if clients > 1 else ""
    return [
        (Scenario("1x500", 1, 500, 0.0), "1 stream x 500 tokens, unpaced"),
        (Scenario("20", 20, 50, 0.02), "20 concurrent streams x 50 tokens at 50 tokens/s"),
        (
            Scenario("100", 100, 50, 0.02, clients=clients),
            f"100 concurrent streams x 50 tokens at 50 tokens/s{by}",
        ),
        (
            Scenario("500", 500, 50, 0.02, clients=clients),
            f"500 concurrent streams x 50 tokens at 50 tokens/s{by}",
        ),
        (
            Scenario("1tok", 10, 1, 0.0, requests=requests),
            f"{requests} requests of 1 token, 10 at a time (per-request cost)",
        ),
    ]


def parse(argv: list[str]) -> argparse.Namespace:
    names = [p.name for p in all_paths()]
    paths = "\n".join(f"  {p.name:<16} {p.what}" for p in all_paths())
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        epilog=f"paths:\n{paths}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="1 repetition, 20 and 100 streams")
    parser.add_argument("--paths", default=",".join(names), help=f"of {','.join(names)}")
    parser.add_argument(
        "--scenarios", help="of 1x500,20,100,500,1tok (default all; --quick: 20,100)"
    )
    parser.add_argument("--repetitions", type=int, help="default 3 (--quick: 1)")
    parser.add_argument(
        "--clients",
        type=int,
        default=2,
        help="load client processes for 100 and 500 streams (default 2: one saturates)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--no-netns", action="store_true", help="run on the host's loopback")
    parser.add_argument(
        "--replot", type=Path, help="only print the table and draw the PNG of this JSON file"
    )
    parser.add_argument("--settle", type=float, default=0.5, help="s before counting writes")
    args = parser.parse_args(argv)
    args.paths = args.paths.split(",")
    unknown = set(args.paths) - set(names)
    if unknown:
        parser.error(f"unknown path(s) {','.join(sorted(unknown))}; known: {','.join(names)}")
    known = [s.name for s, _ in scenarios(args.quick)]
    args.scenarios = (args.scenarios or ("20,100" if args.quick else ",".join(known))).split(",")
    if set(args.scenarios) - set(known):
        parser.error(f"unknown scenario(s); known: {','.join(known)}")
    if args.repetitions is None:
        args.repetitions = 1 if args.quick else 3
    return args


def enter_netns(args: argparse.Namespace, argv: list[str]) -> None:
    """Re-run this command in a new network namespace with loopback up (no return), or
    print why not and go on here."""
    if os.environ.get(IN_NETNS) or args.no_netns:
        return
    env = dict(os.environ)
    if "litellm" in args.paths and (why := install_litellm()):
        env[LITELLM_SKIP] = why
    if (
        shutil.which("unshare") is None
        or subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode
    ):
        print(
            "note: cannot enter a network namespace (unshare -n needs root or user "
            "namespaces): running on the host's loopback",
            flush=True,
        )
        os.environ.update(env)
        return
    env[IN_NETNS] = "1"
    cmd = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"']
    cmd += [sys.executable, str(ROOT / "benchmarks" / "bench.py"), *argv]
    sys.stdout.flush()
    os.execvpe("unshare", cmd, env)


async def sitting(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()
    chosen = [
        (s, label) for s, label in scenarios(args.quick, args.clients) if s.name in args.scenarios
    ]
    paths = [p for p in all_paths() if p.name in args.paths]
    skipped: dict[str, str] = {}
    runs: dict[tuple[str, str], list[Run | None]] = {}
    # Spawned (not forked from this running loop), once: their imports are paid before.
    pool = ProcessPoolExecutor(args.clients, mp_context=multiprocessing.get_context("spawn"))
    list(pool.map(abs, range(args.clients)))
    with pool, tempfile.TemporaryDirectory(prefix="streamkeep-bench-") as tmp:
        os.chmod(tmp, 0o755)  # a private PostgreSQL runs as `postgres` beneath it
        upstream, upstream_url = start_upstream()
        shared = Shared(upstream_url, Path(tmp))
        live: list[Route] = []
        try:
            for path in paths:
                try:
                    if path.name == "litellm" and os.environ.get(LITELLM_SKIP):
                        raise Skip(os.environ[LITELLM_SKIP])
                    print(f"starting {path.name}...", flush=True)
                    path.start(shared)
                    await run(path, Scenario("warm-up", 2, 5, 0.0), upstream.pid, 0)
                    live.append(path)
                except Exception as e:  # whatever stops a path, it is skipped with why
                    skipped[path.name] = str(e) or type(e).__name__
                    print(f"skipping {path.name}: {skipped[path.name]}", flush=True)
                    path.stop()
            for rep in range(args.repetitions):
                # Direct first (the pairing baseline), the others in a turning order.
                others = [p for p in live if p.name != "direct"]
                turn = rep % max(len(others), 1)
                order = [p for p in live if p.name == "direct"] + others[turn:] + others[:turn]
                for scenario, _ in chosen:
                    for path in order:
                        started = time.perf_counter()
                        try:
                            result: Run | None = await run(
                                path, scenario, upstream.pid, args.settle, pool=pool
                            )
                        except Exception as e:  # a path failing under load is a finding
                            print(f"  {path.name} failed in {scenario.name}: {e!r}", flush=True)
                            result = None
                        runs.setdefault((scenario.name, path.name), []).append(result)
                        print(
                            f"rep {rep + 1}/{args.repetitions} {scenario.name:>5} "
                            f"{path.name:<16} {time.perf_counter() - started:6.1f} s",
                            flush=True,
                        )
        finally:
            for path in live:
                path.stop()
            upstream.stop()
            shared.stop()
    return summarize(args, chosen, paths, skipped, runs, load_before)


def summarize(
    args: argparse.Namespace,
    chosen: list[tuple[Scenario, str]],
    paths: list[Route],
    skipped: dict[str, str],
    runs: dict[tuple[str, str], list[Run | None]],
    load_before: tuple[float, float, float],
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for scenario, _ in chosen:
        direct = runs.get((scenario.name, "direct"))
        for path in paths:
            mine = runs.get((scenario.name, path.name))
            if not mine:
                continue
            figures = [
                report.metrics(r, direct[i] if direct else None, scenario, path.name == "direct")
                for i, r in enumerate(mine)
                if r is not None and not (direct and direct[i] is None)
            ]
            entry: dict[str, Any] = {"runs": figures, "failed_runs": mine.count(None)}
            entry["median"] = report.medians(figures) if figures else {}
            results.setdefault(scenario.name, {})[path.name] = entry
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": report.machine(load_before),
        "repetitions": args.repetitions,
        "quick": args.quick,
        "network_namespace": bool(os.environ.get(IN_NETNS)),
        "scenarios": [
            {
                "name": s.name,
                "label": label,
                "streams": s.streams,
                "tokens": s.tokens,
                "delay_s": s.delay,
                "requests": s.requests or s.streams,
            }
            for s, label in chosen
        ],
        "paths": {p.name: p.what for p in paths},
        "skipped": skipped,
        "results": results,
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.replot:
        result = json.loads(args.replot.read_text())
        print(report.table(result))
        why = report.plot(result, args.replot.with_suffix(".png"))
        print(f"plot not drawn: {why}" if why else f"wrote {args.replot.with_suffix('.png')}")
        return
    enter_netns(args, argv)
    # Stopped by SIGTERM or SIGINT (even when started in the background, which ignores
    # SIGINT), the run still stops every server it started (the `finally`s).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # 500 streams: ~1,500 sockets
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    result = asyncio.run(sitting(args))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "bench-" + time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    report.write_json(result, args.out / f"{stem}.json")
    print()
    print(report.table(result))
    print(f"\nwrote {args.out / f'{stem}.json'}")
    why = report.plot(result, args.out / f"{stem}.png")
    print(f"plot not drawn: {why}" if why else f"wrote {args.out / f'{stem}.png'}")
