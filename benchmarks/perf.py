"""Speed and memory benchmarks; see ``pseudocell.bench.perf_report`` for what is measured.

    .venv/bin/python benchmarks/perf.py --quick --out runs/bench_perf_quick.json
    .venv/bin/python benchmarks/perf.py --out runs/bench_perf.json
"""
from __future__ import annotations

from pseudocell.bench.perf_report import main

if __name__ == "__main__":
    main()
