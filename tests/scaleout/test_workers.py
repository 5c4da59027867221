"""`streamkeep serve --workers N`: which settings can run several workers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from streamkeep.config import Settings
from streamkeep.scaleout.workers import check_workers


def test_one_worker_needs_nothing_more(data_dir: Path) -> None:
    assert check_workers(Settings(data_dir=data_dir), 1) is None


def test_several_workers_without_redis_are_refused_with_the_reason(data_dir: Path) -> None:
    problem = check_workers(Settings(data_dir=data_dir), 4)
    assert problem is not None
    assert "--workers 4 needs Redis" in problem and "SQLite" in problem
    assert "STREAMKEEP_REDIS_URL" in problem


def test_several_workers_with_redis_are_allowed(data_dir: Path) -> None:
    settings = Settings(
        data_dir=data_dir,
        database_url="postgresql://db/streamkeep",
        redis_url="redis://127.0.0.1:6379/0",
    )
    assert check_workers(settings, 4) is None
    assert check_workers(settings, 0) == "--workers must be at least 1"


def test_serve_refuses_several_workers_on_sqlite_without_redis(data_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streamkeep", "serve", "--workers", "2", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--workers 2 needs Redis" in result.stderr
