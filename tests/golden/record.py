"""Record the golden output checksums of the demo config on real crops.

Run from the repository root with the project's venv::

    .venv/bin/python tests/golden/record.py [--full]

It runs the partial-annotation loop on three 128x160 crops of the bright-field demo images
(30 % of their points kept, seed 0) with the local executor and writes every stage output's
content sha256 into ``tests/golden/digests.json`` under this platform's key, and the run's
summary (counts and scores, compared on platforms without a record).
``--full`` uses the demo config unchanged (slow tier); without it the demo config with
small training budgets (fast tier). The test ``test_golden.py`` compares both executors
against these records.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true")
    args = ap.parse_args()
    import torch

    import conftest
    from golden_cases import case_config, digests_of, platform_key, run_case, run_summary

    torch.set_num_threads(1)
    crops = conftest.load_small_crops(conftest.BRIGHTFIELD)
    name = "full" if args.full else "fast"
    with tempfile.TemporaryDirectory() as tmp:
        cfg = case_config(name)
        layout, metrics = run_case(Path(tmp) / "run", cfg, crops)
        digests = digests_of(layout, cfg)
    path = HERE / "digests.json"
    rec = json.loads(path.read_text()) if path.exists() else {}
    rec.setdefault("records", {}).setdefault(platform_key(), {})[name] = digests
    rec.setdefault("summary", {})[name] = run_summary(metrics)
    path.write_text(json.dumps(rec, indent=1, sort_keys=True) + "\n")
    print(f"recorded {len(digests)} digests of case {name!r} in {path}")


if __name__ == "__main__":
    main()
