"""Default vs tuned config on held-out bright-field test images (train 001-030,
validation 031-040, test 041-050).

    .venv/bin/python benchmarks/tune.py --out runs/bench_tune --samples 6
    .venv/bin/python benchmarks/tune.py --quick
"""
from __future__ import annotations

from pseudocell.bench.tune_bench import main

if __name__ == "__main__":
    raise SystemExit(main())
