"""The side-by-side benchmark behind `make bench` (run as `benchmarks/bench.py`)."""
