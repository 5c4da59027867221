"""Side-by-side benchmark: the same paced streams from the same fake upstream through
direct, nginx, LiteLLM and streamkeep's paths; a table, a JSON file and a PNG plot.

    .venv/bin/python benchmarks/bench.py [--quick] [--paths direct,gateway] [--scenarios 20]

The code lives in the `bench` package beside this file (a directory wins over this
module on import); README.md's Benchmarks section explains the paths and columns.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]  # `bench`, and `tests.fakes`

from bench.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
