"""Quality benchmark (the paper's protocol with every baseline); see `pseudocell bench --help`.

    .venv/bin/python benchmarks/quality.py --quick            # a few minutes
    .venv/bin/python benchmarks/quality.py --datasets d.toml  # your data
"""
from __future__ import annotations

import sys

from pseudocell.cli import app

if __name__ == "__main__":
    sys.exit(app(["bench", *sys.argv[1:]]))
