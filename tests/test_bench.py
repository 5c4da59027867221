"""`benchmarks/bench.py` (behind `make bench`) runs for real and reports what it says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
KEYS = {
    "ttft_added_p50_ms",
    "ttft_added_p99_ms",
    "stream_median_s",
    "stream_vs_direct",
    "delivered",
    "expected",
    "cpu_us_per_chunk",
    "upstream_cpu_us_per_chunk",
    "client_cpu_us_per_chunk",
    "peak_rss_mb",
    "db_writes_per_request",
    "db_commits_per_request",
}


def bench(out: Path, *args: str, env: dict[str, str] | None = None) -> tuple[str, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--out", str(out), *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (found,) = out.glob("bench-*.json")
    result: dict[str, Any] = json.loads(found.read_text())
    return done.stdout, result


@pytest.mark.slow  # starts the fake upstream and a server, streams for real (~15 s)
def test_a_quick_run_delivers_every_chunk_and_reports_each_figure(tmp_path: Path) -> None:
    stdout, result = bench(tmp_path, "--quick", "--paths", "direct,gateway", "--scenarios", "20")
    assert result["machine"]["cores"] == os.cpu_count()
    assert len(result["machine"]["load_average_before"]) == 3
    assert result["repetitions"] == 1 and result["skipped"] == {}
    rows = result["results"]["20"]
    assert set(rows) == {"direct", "gateway"}
    for row in rows.values():
        assert set(row["median"]) >= KEYS
        assert row["failed_runs"] == 0
        assert row["median"]["delivered"] == row["median"]["expected"] == 20 * 50
    gateway = rows["gateway"]["median"]
    # Figures a relay has that the baseline has not: paired against direct's same run.
    assert gateway["ttft_added_p50_ms"] is not None
    assert gateway["ttft_added_p99_ms"] >= gateway["ttft_added_p50_ms"]
    assert gateway["cpu_us_per_chunk"] > 0 and gateway["peak_rss_mb"] > 10
    assert gateway["db_writes_per_request"] > 0  # storing is on
    assert rows["direct"]["median"]["cpu_us_per_chunk"] is None
    assert "CPU µs/chunk" in stdout and "gateway" in stdout


@pytest.mark.slow  # 100 streams of a one-second answer, twice (~10 s)
def test_streams_split_over_client_processes_are_all_counted(tmp_path: Path) -> None:
    # Two client processes each drive every other request; the run pairs them back by
    # request number, so every chunk and both processes' CPU are counted.
    common = ("--no-netns", "--paths", "direct", "--scenarios", "100", "--repetitions", "1")
    _, split = bench(tmp_path / "split", *common, "--clients", "2")
    _, single = bench(tmp_path / "single", *common, "--clients", "1")
    (scenario,) = split["scenarios"]
    assert scenario["label"].endswith("2 client processes")
    assert single["scenarios"][0]["label"].endswith("at 50 tokens/s")
    for result in (split, single):
        direct = result["results"]["100"]["direct"]["median"]
        assert direct["delivered"] == direct["expected"] == 100 * 50
        assert direct["client_cpu_us_per_chunk"] > 0


@pytest.mark.slow
def test_a_path_that_cannot_run_is_skipped_with_its_reason(tmp_path: Path) -> None:
    # No LiteLLM venv under this HOME, and outside the namespace nothing is installed.
    home = tmp_path / "home"
    home.mkdir()
    stdout, result = bench(
        tmp_path / "out",
        *("--no-netns", "--quick", "--paths", "direct,litellm", "--scenarios", "1x500"),
        env={"HOME": str(home)},
    )
    assert "not installed" in result["skipped"]["litellm"]
    assert "skipped litellm: LiteLLM is not installed" in stdout
    assert set(result["results"]["1x500"]) == {"direct"}


def test_an_unknown_path_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    script = str(ROOT / "benchmarks" / "bench.py")
    done = subprocess.run(
        [sys.executable, script, "--paths", "direct,ngnix", "--out", str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "unknown path(s) ngnix" in done.stderr and "nginx" in done.stderr
    assert not (tmp_path / "out").exists()  # nothing ran, nothing written
