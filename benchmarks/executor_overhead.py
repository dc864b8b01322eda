"""Ray executor vs local executor: wall time and peak RSS of one round on the shared data.

    .venv/bin/python benchmarks/executor_overhead.py --out runs/bench_executor.json
    .venv/bin/python benchmarks/executor_overhead.py --quick
"""
from __future__ import annotations

from pseudocell.bench.executor_overhead import main

if __name__ == "__main__":
    raise SystemExit(main())
