"""The quality benchmark: the paper's protocol with every baseline, on any datasets.

For each dataset and seed: hide all but ``keep`` of the training images' ground-truth
points (seeded), then run

1. ``supervised_partial``: the detector trained on the partial points without a mask
   (missing cells are background);
2. ``masked_round0``: the masked loss only (round 0 of the loop);
3. ``log``: LoG blob detection, scale and polarity picked on the annotated points,
   threshold by Otsu on its peak responses;
4. ``pu_direct``: round-0 detections classified by nnPU (Elkan-Noto prior), no re-training;
5. ``pseudocell``: the loop, ``cfg.rounds`` rounds;
6. ``full``: the detector trained on all ground-truth points (upper bound);

and score each on the held-out images with one-to-one matching at the dataset radius.
Nothing is tuned on the held-out images.
"""
from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pseudocell.bench.datasets import Dataset, DatasetSpec, load_dataset
from pseudocell.bench.methods import (detect_log, detect_supervised, pu_direct,
                                      tune_log_on_points)
from pseudocell.config import Config
from pseudocell.core.metrics import match_points, pooled
from pseudocell.data.points import hide_points, points_by_image
from pseudocell.orchestrator.executors import LocalExecutor
from pseudocell.orchestrator.run import prepare_run, run_loop
from pseudocell.results.reader import RunResults
from pseudocell.validation import RunInputs

__all__ = ["METHODS", "run_quality", "summarize", "markdown_report", "write_result",
           "QUICK_CONFIG"]

logger = logging.getLogger(__name__)

METHODS = ("supervised_partial", "masked_round0", "log", "pu_direct", "pseudocell", "full")

#: A few minutes on 2 cores: narrow budgets, one pseudo-label round.
QUICK_CONFIG = Config(rounds=1, detector_iters=150, pu_epochs=5)


def _score(pred: dict[str, np.ndarray], gt: dict, ids: list[str], radius: float) -> dict:
    g = points_by_image(gt, ids)
    return pooled([match_points(pred[i], g[i], radius) for i in ids])


def _peaks(table: dict[str, np.ndarray], ids: list[str]) -> dict[str, np.ndarray]:
    return points_by_image(table, ids)


def _one_seed(ds: Dataset, cfg: Config, seed: int, keep: float, out: Path,
              methods: Sequence[str]) -> dict:
    spec = ds.spec
    cfg = cfg.replace(seed=seed, radius=spec.radius)
    points = hide_points(ds.train_gt, keep, seed=seed)
    res: dict = {"n_points_kept": int(len(points["y"])), "n_points_total": int(len(ds.train_gt["y"]))}
    timings: dict = {}
    score = {}

    t0 = time.perf_counter()
    layout = prepare_run(out / "pseudocell", cfg,
                         RunInputs(ds.train, points, ds.train_gt, ds.test, ds.test_gt), force=True)
    metrics = run_loop(layout, cfg, LocalExecutor())
    timings["pseudocell"] = time.perf_counter() - t0
    rows = metrics["rounds"]
    run = RunResults(layout, cfg)
    score["masked_round0"] = _score(_peaks(run.detections(0, heldout=True), ds.test.ids),
                                    ds.test_gt, ds.test.ids, spec.radius)
    score["pseudocell"] = _score(_peaks(run.detections(cfg.rounds, heldout=True), ds.test.ids),
                                 ds.test_gt, ds.test.ids, spec.radius)
    res["rounds"] = rows

    if "supervised_partial" in methods:
        t0 = time.perf_counter()
        det = detect_supervised(ds.train, points, ds.test, cfg, seed)
        score["supervised_partial"] = _score(det, ds.test_gt, ds.test.ids, spec.radius)
        timings["supervised_partial"] = time.perf_counter() - t0
    if "full" in methods:
        t0 = time.perf_counter()
        det = detect_supervised(ds.train, ds.train_gt, ds.test, cfg, seed)
        score["full"] = _score(det, ds.test_gt, ds.test.ids, spec.radius)
        timings["full"] = time.perf_counter() - t0
    if "log" in methods:
        t0 = time.perf_counter()
        params = tune_log_on_points(ds.train, points)
        score["log"] = _score(detect_log(ds.test, params, cfg.peak_min_distance), ds.test_gt,
                              ds.test.ids, spec.radius)
        res["log_params"] = params
        timings["log"] = time.perf_counter() - t0
    if "pu_direct" in methods:
        t0 = time.perf_counter()
        det, prior = pu_direct(ds.train, points, _peaks(run.detections(0), ds.train.ids),
                               ds.test, _peaks(run.detections(0, heldout=True), ds.test.ids),
                               cfg, seed)
        score["pu_direct"] = _score(det, ds.test_gt, ds.test.ids, spec.radius)
        res["pu_direct_prior"] = prior
        timings["pu_direct"] = time.perf_counter() - t0
    res["scores"] = score
    res["seconds"] = timings
    return res


def run_quality(specs: Sequence[DatasetSpec], *, cfg: Config, seeds: Sequence[int] = (0, 1, 2),
                keep: float = 0.1, out_dir: str | Path, methods: Sequence[str] = METHODS,
                max_train: int | None = None, max_test: int | None = None) -> dict:
    """Run the protocol; returns every number (also the input of :func:`summarize`)."""
    out_dir = Path(out_dir)
    result: dict = {"config": cfg.to_dict(), "keep": keep, "seeds": list(seeds),
                    "methods": list(methods), "datasets": {}, "versions": _versions()}
    for spec in specs:
        ds = load_dataset(spec)
        if max_train or max_test:
            ds = _subset(ds, max_train, max_test)
        logger.info("bench dataset=%s train=%d test=%d", spec.name, len(ds.train.ids),
                    len(ds.test.ids))
        per_seed = {}
        for seed in seeds:
            logger.info("bench dataset=%s seed=%d", spec.name, seed)
            per_seed[str(seed)] = _one_seed(ds, cfg, seed, keep, out_dir / spec.name /
                                            f"seed{seed}", methods)
        result["datasets"][spec.name] = {"spec": {k: (list(v) if isinstance(v, tuple) else v)
                                                  for k, v in spec.__dict__.items()},
                                         "n_train": len(ds.train.ids),
                                         "n_test": len(ds.test.ids), "seeds": per_seed}
    result["summary"] = summarize(result)
    return result


def _subset(ds: Dataset, max_train: int | None, max_test: int | None) -> Dataset:
    from pseudocell.validation import ImageSet

    def cut(s: ImageSet, gt: dict, n: int | None):
        if n is None or n >= len(s.ids):
            return s, gt
        keep = set(s.ids[:n])
        m = np.isin(gt["image_id"].astype(str), list(keep))
        return ImageSet(s.ids[:n], s.images[:n], s.paths[:n]), {k: v[m] for k, v in gt.items()}

    train, train_gt = cut(ds.train, ds.train_gt, max_train)
    test, test_gt = cut(ds.test, ds.test_gt, max_test)
    return Dataset(ds.spec, train, train_gt, test, test_gt)


def _versions() -> dict:
    import numpy
    import torch

    from pseudocell import __version__

    return {"pseudocell": __version__, "python": platform.python_version(),
            "torch": torch.__version__, "numpy": numpy.__version__,
            "platform": platform.platform()}


def summarize(result: dict) -> dict:
    """Mean and sd over seeds of P, R, F1 per dataset and method; pseudocell/full ratio."""
    out = {}
    for name, d in result["datasets"].items():
        rows = {}
        for m in result["methods"]:
            vals = [s["scores"][m] for s in d["seeds"].values() if m in s["scores"]]
            if not vals:
                continue
            rows[m] = {k: {"mean": float(np.mean([v[k] for v in vals])),
                           "sd": float(np.std([v[k] for v in vals], ddof=1)) if len(vals) > 1
                           else 0.0}
                       for k in ("precision", "recall", "f1")}
        if "pseudocell" in rows and "full" in rows and rows["full"]["f1"]["mean"] > 0:
            rows["ratio_pseudocell_over_full"] = (rows["pseudocell"]["f1"]["mean"]
                                                  / rows["full"]["f1"]["mean"])
        out[name] = rows
    return out


def markdown_report(result: dict) -> str:
    """The methods × datasets table, the ratio, and the per-round table of seed 0."""
    summ = result["summary"]
    names = list(summ)
    lines = [f"Held-out images, one-to-one matching at each dataset's radius; "
             f"{len(result['seeds'])} seed(s), {result['keep']:.0%} of training points kept.",
             "", "| method | " + " | ".join(f"{n} F1 (mean ± sd) | P | R" for n in names) + " |",
             "|---|" + "---:|---:|---:|" * len(names)]
    for m in result["methods"]:
        cells = []
        for n in names:
            r = summ[n].get(m)
            if r is None:
                cells += ["-", "-", "-"]
            else:
                cells += [f"{r['f1']['mean']:.3f} ± {r['f1']['sd']:.3f}",
                          f"{r['precision']['mean']:.3f}", f"{r['recall']['mean']:.3f}"]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    for n in names:
        if "ratio_pseudocell_over_full" in summ[n]:
            lines.append(f"\n{n}: pseudocell F1 / fully supervised F1 = "
                         f"{summ[n]['ratio_pseudocell_over_full']:.3f}")
    from pseudocell.results.report import round_table_markdown

    for n, d in result["datasets"].items():
        first = next(iter(d["seeds"]))
        lines += ["", f"Per round on {n} (seed {first}; training images against full ground "
                      "truth, and held-out images):", "",
                  round_table_markdown({"rounds": d["seeds"][first]["rounds"]})]
    return "\n".join(lines)


def write_result(result: dict, path: str | Path) -> None:
    """The JSON file with every number, the config and the versions."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=1, default=float))

