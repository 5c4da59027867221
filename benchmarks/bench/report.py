"""From runs to figures: per-run metrics, medians over repetitions, table, JSON, plot."""

from __future__ import annotations

import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any

from bench.load import Run, Scenario

# Each column: (JSON key, header, format).
COLUMNS = [
    ("ttft_added_p50_ms", "TTFT+ p50 ms", "{:.2f}"),
    ("ttft_added_p99_ms", "TTFT+ p99 ms", "{:.2f}"),
    ("stream_median_s", "stream s", "{:.3f}"),
    ("stream_vs_direct", "x direct", "{:.2f}"),
    ("delivered", "delivered", "{:.0f}"),
    ("expected", "expected", "{:.0f}"),
    ("timed_out", "cut off", "{:.0f}"),
    ("cpu_us_per_chunk", "CPU µs/chunk", "{:.1f}"),
    ("upstream_cpu_us_per_chunk", "upstream µs", "{:.1f}"),
    ("client_cpu_us_per_chunk", "client µs", "{:.1f}"),
    ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
    ("db_writes_per_request", "writes/req", "{:.2f}"),
    ("db_commits_per_request", "commits/req", "{:.2f}"),
]


def quantile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def metrics(run: Run, direct: Run | None, scenario: Scenario, is_direct: bool) -> dict[str, Any]:
    """One run's figures; TTFT is paired request by request with direct's same run."""
    delivered = sum(s.chunks for s in run.streams)
    chunks = max(delivered, 1)
    out: dict[str, Any] = {
        "delivered": delivered,
        "expected": len(run.streams) * scenario.tokens,
        "timed_out": run.timed_out,
        "stream_median_s": statistics.median(s.total or 0.0 for s in run.streams),
        "ttft_p50_ms": statistics.median(s.ttft or 0.0 for s in run.streams) * 1e3,
        "wall_s": run.wall,
        "cpu_us_per_chunk": None if is_direct else run.cpu / chunks * 1e6,
        "upstream_cpu_us_per_chunk": run.upstream_cpu / chunks * 1e6,
        "client_cpu_us_per_chunk": run.client_cpu / chunks * 1e6,
        "peak_rss_mb": None if is_direct else run.peak_rss_mb,
        "db_writes_per_request": None
        if run.db_writes is None
        else run.db_writes / len(run.streams),
        "db_commits_per_request": None
        if run.db_commits is None
        else run.db_commits / len(run.streams),
        "ttft_added_p50_ms": None,
        "ttft_added_p99_ms": None,
        "stream_vs_direct": None,
    }
    if direct is not None and not is_direct:
        diffs = [
            ((s.ttft or 0.0) - (d.ttft or 0.0)) * 1e3
            for s, d in zip(run.streams, direct.streams, strict=True)
        ]
        out["ttft_added_p50_ms"] = quantile(diffs, 0.5)
        out["ttft_added_p99_ms"] = quantile(diffs, 0.99)
        out["stream_vs_direct"] = out["stream_median_s"] / statistics.median(
            s.total or 0.0 for s in direct.streams
        )
    return out


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in runs[0]:
        values = [r[key] for r in runs if r[key] is not None]
        out[key] = statistics.median(values) if values else None
    return out


def machine(load_before: tuple[float, float, float]) -> dict[str, Any]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
    }


def table(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"streamkeep bench {result['date']}: {m['cores']} cores ({m['cpu']}), load average "
        f"{m['load_average_before'][0]:.2f} before / {m['load_average_after'][0]:.2f} after "
        f"(1 min); medians of {result['repetitions']} repetition(s)",
    ]
    if max(m["load_average_before"][0], m["load_average_after"][0]) > 0.5 * m["cores"]:
        lines.append("  NOTE: the machine was busy with other work: figures are noisy")
    for name, reason in result["skipped"].items():
        lines.append(f"  skipped {name}: {reason}")
    headers = ["path"] + [h for _, h, _ in COLUMNS]
    for scenario in result["scenarios"]:
        rows = result["results"].get(scenario["name"], {})
        if not rows:
            continue
        lines.append("")
        lines.append(f"{scenario['name']}: {scenario['label']}")
        cells = [headers]
        for path, fig in rows.items():
            med = fig["median"]
            cells.append(
                [path]
                + ["-" if med.get(k) is None else fmt.format(med[k]) for k, _, fmt in COLUMNS]
            )
        widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
        for row in cells:
            lines.append(
                "  ".join(
                    c.rjust(w) if i else c.ljust(w)
                    for i, (c, w) in enumerate(zip(row, widths, strict=True))
                )
            )
    return "\n".join(lines)


def write_json(result: dict[str, Any], out: Path) -> None:
    out.write_text(json.dumps(result, indent=1) + "\n")


def plot(result: dict[str, Any], out: Path) -> str | None:
    """A PNG of CPU per chunk and added TTFT p50 per path and scenario; None or why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[test]')"
    scenarios = [s["name"] for s in result["scenarios"] if result["results"].get(s["name"])]
    paths = [p for p in result["paths"] if p != "direct" and p not in result["skipped"]]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    width = 0.8 / max(len(paths), 1)
    for ax, key, title in (
        (axes[0], "cpu_us_per_chunk", "path CPU per relayed chunk (µs, log)"),
        (axes[1], "ttft_added_p50_ms", "added time to first token, p50 (ms, symmetric log)"),
    ):
        for j, path in enumerate(paths):
            values = [
                (result["results"][s].get(path) or {}).get("median", {}).get(key) or 0
                for s in scenarios
            ]
            ax.bar([i + j * width for i in range(len(scenarios))], values, width, label=path)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(scenarios))], scenarios)
        # symlog: an added TTFT can be at or under zero (within the noise of direct's)
        ax.set_yscale("log" if key == "cpu_us_per_chunk" else "symlog")
        ax.set_title(title)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=6, fontsize=8)
    m = result["machine"]
    fig.suptitle(
        f"streamkeep bench {result['date']}, {m['cores']} cores ({m['cpu']}), load "
        f"{m['load_average_before'][0]:.1f}, medians of {result['repetitions']}",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return None
