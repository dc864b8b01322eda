"""Classical LoG baseline on the shared bright-field set.

Tunes (polarity, sigma, threshold) by grid search for the best pooled F1 at 15 px on the
training images 001-040 against their FULL ground truth (a generous baseline: the loop
only sees 10 % of those points), then reports P/R/F on the held-out images 041-050.

    .venv/bin/python benchmarks/log_baseline.py --out runs/log_baseline.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from pseudocell.core.classical import log_detect
from pseudocell.core.metrics import match_points, pooled
from pseudocell.data.fetch import locate_brightfield
from pseudocell.data.points import points_by_image
from pseudocell.demo import load_brightfield


def _score(images, gt, radius, **kw):
    g = points_by_image(gt, images.ids)
    return pooled([match_points(log_detect(im, **kw), g[i], radius)
                   for i, im in zip(images.ids, images.images)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("runs/log_baseline.json"))
    args = ap.parse_args()
    folder = args.data_dir or locate_brightfield()
    t0 = time.perf_counter()
    train, train_gt = load_brightfield(folder, range(1, 41))
    test, test_gt = load_brightfield(folder, range(41, 51))
    grid = list(itertools.product(("dark", "bright"), (3.0, 4.0, 5.0, 6.0, 7.0),
                                  np.round(np.r_[0.0025, 0.005, 0.01, 0.015,
                                                 np.arange(0.02, 0.42, 0.02)], 4)))
    best = None
    for pol, sig, thr in grid:
        s = _score(train, train_gt, 15.0, sigma=sig, threshold=float(thr), polarity=pol)
        if best is None or s["f1"] > best[0]["f1"]:
            best = (s, dict(polarity=pol, sigma=sig, threshold=float(thr)))
    params = best[1]
    result = {"params": params, "train@15": best[0],
              "heldout@15": _score(test, test_gt, 15.0, **params),
              "heldout@8": _score(test, test_gt, 8.0, **params),
              "grid_size": len(grid), "seconds": time.perf_counter() - t0}
    print(f"LoG tuned on training images (full GT): {params}")
    print("| split | P | R | F |\n|---|---:|---:|---:|")
    for k in ("train@15", "heldout@15", "heldout@8"):
        r = result[k]
        print(f"| {k} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
