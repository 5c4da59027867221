"""`streamkeep doctor`: what this installation is and whether its parts answer, as
plain text to paste into a bug report (`--json` for programs).

It prints the version, the configuration in effect (secrets shown as `***`), where the
data lives, the database's and Redis's reachability with their latency, each remote
provider's reachability and models, and the embedded model's state. The probes run
side by side, each within `--timeout` seconds (`cli.checks`). Exit status 1 when a
configured part did not answer, else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamkeep.cli.checks import Probe, Report

_WIDTH = 16  # the label column


def add_parser(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "doctor",
        help="check the configuration and every part it names (for bug reports)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--timeout",
        type=float,
        default=3.0,
        help="seconds each part gets to answer (3; they are asked in parallel)",
    )
    p.add_argument("--database-url", help="SQLAlchemy URL (STREAMKEEP_DATABASE_URL)")
    p.add_argument("--redis-url", help="Redis URL (STREAMKEEP_REDIS_URL)")
    p.add_argument("--data-dir", help="local state directory (STREAMKEEP_DATA_DIR)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from streamkeep.cli.checks import diagnose
    from streamkeep.config import load_settings

    if args.timeout <= 0:
        raise SystemExit("streamkeep doctor: --timeout must be more than 0")
    settings = load_settings(
        database_url=args.database_url, redis_url=args.redis_url, data_dir=args.data_dir
    )
    report = asyncio.run(diagnose(settings, args.timeout))
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(render(report))
    return 1 if report.failed else 0


def render(report: Report) -> str:
    """The report as aligned plain text (`cli.checks.Report`)."""
    v, cfg, data = report.version, report.config_file, report.data
    lines = [
        _row("streamkeep", v["streamkeep"]),
        _row("python", f"{v['python']} ({v['platform']}) {v['executable']}"),
        _row("config file", f"{cfg['path']} ({'read' if cfg['exists'] else 'absent'})"),
        _row("data dir", f"{data['data_dir']} ({'exists' if data['exists'] else 'absent'})"),
    ]
    if "sqlite_file" in data:
        size = data["sqlite_bytes"]
        lines.append(_row("sqlite file", f"{data['sqlite_file']} ({_size(size)})"))
    lines.append("")
    for probe in (report.database, report.redis, *report.providers):
        lines.append(_row(probe.name, _status(probe)))
        if probe.target:
            lines.append(_row("", probe.target))
        if probe.models:
            lines.append(_row("", "models: " + ", ".join(probe.models)))
    if report.embedded is not None:
        lines += ["", *_embedded(report.embedded)]
    lines += ["", "settings in effect (secrets as ***):"]
    lines += [f"  {key} = {json.dumps(value)}" for key, value in report.settings.items()]
    if report.failed:
        lines += ["", "unreachable: " + ", ".join(p.name for p in report.failed)]
    return "\n".join(lines)


def _row(label: str, text: str) -> str:
    return f"{label:<{_WIDTH}} {text}".rstrip()


def _status(probe: Probe) -> str:
    if probe.ok is None:
        return probe.detail
    head = "ok" if probe.ok else "UNREACHABLE"
    if probe.latency_ms is not None:
        head += f" ({probe.latency_ms:.1f} ms)"
    return f"{head}: {probe.detail}" if probe.detail else head


def _embedded(info: dict[str, Any]) -> list[str]:
    lines = [_row("embedded model", f"{info['model']}: {info['state']}")]
    lines.append(_row("", f"runtime: {info['runtime']}"))
    wheel = info["cached_wheel"] or "none yet"
    lines.append(_row("", f"wheel cache: {info['wheel_cache']} ({wheel})"))
    if info["build_log"]:
        lines.append(_row("", f"build log: {info['build_log']}"))
        lines.append(_row("", f"  last line: {info['build_log_last_line']}"))
    lines.append(_row("", f"model package: {info['model_package']}"))
    gguf = info["gguf"]
    lines.append(
        _row("", f"gguf: {gguf} ({_size(info['gguf_bytes'])})" if gguf else "gguf: absent")
    )
    return lines


def _size(n: int | None) -> str:
    if n is None:
        return "not created yet"
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n} bytes"
