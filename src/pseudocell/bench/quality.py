"""The quality benchmark: the paper's protocol with every baseline, on any datasets.

For each dataset and seed: hide all but ``keep`` of the training images' ground-truth
points (seeded), then run

1. ``supervised_partial``: the detector trained on the partial points without a mask
   (missing cells are background);
2. ``masked_round0``: the masked loss only (round 0 of the loop);
3. ``log``: LoG blob detection, scale and polarity picked on the annotated points,
   threshold by Otsu on its peak responses;
4. ``pu_direct``: round-0 candidates (the loop's X_U: local maxima down to
   ``unlabeled_ratio`` x the threshold) classified by nnPU (Elkan-Noto prior), no
   re-training;
5. ``pseudocell``: the loop, ``cfg.rounds`` rounds;
6. ``full``: the detector trained on all ground-truth points (upper bound);
7. ``log_full``: LoG with polarity, scale and threshold tuned on the training images'
   FULL ground truth (the upper bound of the classical method);

and score each on the held-out images with one-to-one matching at the dataset radius.
Nothing is tuned on the held-out images.
"""
from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from pseudocell.bench.datasets import Dataset, DatasetSpec, load_dataset
from pseudocell.bench.methods import (detect_log, detect_supervised, pu_direct,
                                      tune_log_full, tune_log_on_points)
from pseudocell.config import Config
from pseudocell.core.metrics import match_points, pooled
from pseudocell.data.points import hide_points, points_by_image
from pseudocell.orchestrator.executors import LocalExecutor
from pseudocell.orchestrator.run import prepare_run, run_loop
from pseudocell.results.reader import RunResults
from pseudocell.storage import tables
from pseudocell.validation import RunInputs

__all__ = ["METHODS", "run_quality", "summarize", "markdown_report", "write_result",
           "QUICK_CONFIG"]

logger = logging.getLogger(__name__)

METHODS = ("supervised_partial", "masked_round0", "log", "pu_direct", "pseudocell", "full",
           "log_full")

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
    sc = run.scale_info()
    res["cell_diameter"] = sc.diameter
    res["scale"] = sc.scale
    score["masked_round0"] = _score(_peaks(run.detections(0, heldout=True), ds.test.ids),
                                    ds.test_gt, ds.test.ids, spec.radius)
    score["pseudocell"] = _score(_peaks(run.detections(cfg.rounds, heldout=True), ds.test.ids),
                                 ds.test_gt, ds.test.ids, spec.radius)
    res["rounds"] = rows

    if "supervised_partial" in methods:
        t0 = time.perf_counter()
        det = detect_supervised(ds.train, points, ds.test, cfg, seed, sc.scale)
        score["supervised_partial"] = _score(det, ds.test_gt, ds.test.ids, spec.radius)
        timings["supervised_partial"] = time.perf_counter() - t0
    if "full" in methods:
        t0 = time.perf_counter()
        det = detect_supervised(ds.train, ds.train_gt, ds.test, cfg, seed, sc.scale)
        score["full"] = _score(det, ds.test_gt, ds.test.ids, spec.radius)
        timings["full"] = time.perf_counter() - t0
    if "log" in methods:
        t0 = time.perf_counter()
        params = tune_log_on_points(ds.train, points, min_distance=cfg.peak_min_distance,
                                    scale=sc.scale)
        score["log"] = _score(detect_log(ds.test, params, cfg.peak_min_distance, sc.scale),
                              ds.test_gt, ds.test.ids, spec.radius)
        res["log_params"] = params
        timings["log"] = time.perf_counter() - t0
    if "log_full" in methods:
        t0 = time.perf_counter()
        params = tune_log_full(ds.train, ds.train_gt, radius=spec.radius, scale=sc.scale,
                               min_distance=cfg.peak_min_distance)
        score["log_full"] = _score(detect_log(ds.test, params, cfg.peak_min_distance,
                                              sc.scale), ds.test_gt, ds.test.ids, spec.radius)
        res["log_full_params"] = params
        timings["log_full"] = time.perf_counter() - t0
    if "pu_direct" in methods:
        t0 = time.perf_counter()
        cand = {pre: tables.read_table(layout.uri(
            run.manifest(0, "predict")["outputs"][f"{pre}candidates"]["uri"]))
            for pre in ("", "eval_")}
        det, prior = pu_direct(ds.train, points, _peaks(cand[""], ds.train.ids),
                               ds.test, _peaks(cand["eval_"], ds.test.ids), cfg, seed,
                               sc.scale)
        score["pu_direct"] = _score(det, ds.test_gt, ds.test.ids, spec.radius)
        res["pu_direct_prior"] = prior
        timings["pu_direct"] = time.perf_counter() - t0
    res["scores"] = score
    res["seconds"] = timings
    return res


def seed_key(ds: Dataset, cfg: Config, keep: float, **extra) -> dict:
    """What a finished seed's result depends on: config hash, keep, dataset spec and
    split sizes, plus ``extra`` (e.g. the methods)."""
    return {"config_hash": cfg.config_hash, "keep": keep, **extra,
            "spec": {k: (list(v) if isinstance(v, tuple) else v)
                     for k, v in ds.spec.__dict__.items()},
            "n_train": len(ds.train.ids), "n_test": len(ds.test.ids)}


def cached_seed(path: Path, key: dict, compute: Callable[[], dict], what: str) -> dict:
    """``compute()``, written to ``path`` (JSON ``{"key", "result"}``, atomically) as soon
    as it is done, and reused when ``path`` already holds a result with the same ``key``
    (a long benchmark that stops keeps every finished seed)."""
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = None
        if old is not None and old.get("key") == key:
            logger.info("%s: reusing %s", what, path)
            return old["result"]
    logger.info("%s", what)
    res = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "result": res}, indent=1, default=float))
    tmp.replace(path)
    return res


def _cached_seed(ds: Dataset, cfg: Config, seed: int, keep: float, out: Path,
                 methods: Sequence[str]) -> dict:
    """:func:`_one_seed` through :func:`cached_seed` (``out/result.json``)."""
    return cached_seed(out / "result.json", seed_key(ds, cfg, keep, methods=sorted(methods)),
                       lambda: _one_seed(ds, cfg, seed, keep, out, methods),
                       f"bench dataset={ds.spec.name} seed={seed}")


def run_quality(specs: Sequence[DatasetSpec], *, cfg: Config, seeds: Sequence[int] = (0, 1, 2),
                keep: float = 0.1, out_dir: str | Path, methods: Sequence[str] = METHODS,
                max_train: int | None = None, max_test: int | None = None) -> dict:
    """Run the protocol; returns every number (also the input of :func:`summarize`)."""
    out_dir = Path(out_dir)
    result: dict = {"config": cfg.to_dict(), "keep": keep, "seeds": list(seeds),
                    "methods": list(methods), "datasets": {}, "versions": _versions()}
    for spec in specs:
        ds = load_subset(spec, max_train, max_test)
        logger.info("bench dataset=%s train=%d test=%d", spec.name, len(ds.train.ids),
                    len(ds.test.ids))
        per_seed = {}
        for seed in seeds:
            per_seed[str(seed)] = _cached_seed(ds, cfg, seed, keep, out_dir / spec.name /
                                               f"seed{seed}", methods)
        result["datasets"][spec.name] = {"spec": {k: (list(v) if isinstance(v, tuple) else v)
                                                  for k, v in spec.__dict__.items()},
                                         "n_train": len(ds.train.ids),
                                         "n_test": len(ds.test.ids), "seeds": per_seed}
    result["summary"] = summarize(result)
    return result


def load_subset(spec: DatasetSpec, max_train: int | None = None,
                max_test: int | None = None) -> Dataset:
    """:func:`~pseudocell.bench.datasets.load_dataset`, cut to the first ``max_train``
    training and ``max_test`` test images when given (the ``--quick`` protocols)."""
    ds = load_dataset(spec)
    return _subset(ds, max_train, max_test) if max_train or max_test else ds


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


def method_stats(seeds: dict, methods: Sequence[str]) -> dict:
    """Mean and sd over the seeds' ``scores`` of P, R and F1 of every method that has
    any (``{method: {"f1": {"mean", "sd"}, ...}}``)."""
    rows = {}
    for m in methods:
        vals = [s["scores"][m] for s in seeds.values() if m in s["scores"]]
        if vals:
            rows[m] = {k: {"mean": float(np.mean([v[k] for v in vals])),
                           "sd": float(np.std([v[k] for v in vals], ddof=1)) if len(vals) > 1
                           else 0.0}
                       for k in ("precision", "recall", "f1")}
    return rows


def methods_table(summary: dict, methods: Sequence[str]) -> list[str]:
    """Markdown lines of the methods x datasets table (F1 mean ± sd, P, R)."""
    names = list(summary)
    lines = ["| method | " + " | ".join(f"{n} F1 (mean ± sd) | P | R" for n in names) + " |",
             "|---|" + "---:|---:|---:|" * len(names)]
    for m in methods:
        cells = []
        for n in names:
            r = summary[n].get(m)
            cells += ["-", "-", "-"] if r is None else [
                f"{r['f1']['mean']:.3f} ± {r['f1']['sd']:.3f}", f"{r['precision']['mean']:.3f}",
                f"{r['recall']['mean']:.3f}"]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def summarize(result: dict) -> dict:
    """Mean and sd over seeds of P, R, F1 per dataset and method; pseudocell/full ratio."""
    out = {}
    for name, d in result["datasets"].items():
        rows = method_stats(d["seeds"], result["methods"])
        if "pseudocell" in rows and "full" in rows and rows["full"]["f1"]["mean"] > 0:
            rows["ratio_pseudocell_over_full"] = (rows["pseudocell"]["f1"]["mean"]
                                                  / rows["full"]["f1"]["mean"])
        rows["targets"] = targets(d["seeds"])
        out[name] = rows
    return out


#: Methods pseudocell must beat on every seed (the upper bounds ``full`` and the
#: ground-truth-tuned ``log_full`` are reported, and ``log_full`` is to be beaten too).
BASELINES = ("supervised_partial", "masked_round0", "log", "pu_direct", "log_full")


def targets(seeds: dict) -> dict:
    """Issue 15's targets on one dataset from its per-seed results: mean F1 >= 0.95 x
    fully supervised, sd over seeds <= 0.02, above every baseline on every seed."""
    f = {m: [s["scores"][m]["f1"] for s in seeds.values() if m in s["scores"]]
         for m in ("pseudocell", "full", *BASELINES)}
    if not f["pseudocell"]:
        return {}
    out = {"pseudocell_f1_per_seed": f["pseudocell"],
           "cell_diameter_per_seed": [s.get("cell_diameter") for s in seeds.values()],
           "sd_ok": bool(len(f["pseudocell"]) < 2 or np.std(f["pseudocell"], ddof=1) <= 0.02)}
    if f["full"]:
        out["ratio_ok"] = bool(np.mean(f["pseudocell"]) >= 0.95 * np.mean(f["full"]))
    beaten = {m: bool(len(v) == len(f["pseudocell"]) and
                      all(p > b for p, b in zip(f["pseudocell"], v)))
              for m, v in f.items() if m in BASELINES and v}
    out["beats_every_baseline_on_every_seed"] = all(beaten.values()) if beaten else None
    out["not_beaten"] = sorted(m for m, ok in beaten.items() if not ok)
    return out


def markdown_report(result: dict) -> str:
    """The methods × datasets table, the ratio, and the per-round table of seed 0."""
    summ = result["summary"]
    lines = [f"Held-out images, one-to-one matching at each dataset's radius; "
             f"{len(result['seeds'])} seed(s), {result['keep']:.0%} of training points kept.",
             "", *methods_table(summ, result["methods"])]
    lines += ["", "Per dataset: cell diameter estimated at the clicks (px, per seed), F1 per "
                  "seed, and issue 15's targets.", "",
              "| dataset | diameter | pseudocell F1 per seed | full F1 per seed | "
              "ratio to full | sd <= 0.02 | beats every baseline, every seed |",
              "|---|---|---|---|---:|---|---|"]
    for n, d in result["datasets"].items():
        t = summ[n].get("targets") or {}
        diam = ", ".join(f"{v:.1f}" for v in t.get("cell_diameter_per_seed", []) if v)
        full = ", ".join(f"{s['scores']['full']['f1']:.3f}" for s in d["seeds"].values()
                         if "full" in s["scores"])
        ratio = summ[n].get("ratio_pseudocell_over_full")
        beats = t.get("beats_every_baseline_on_every_seed")
        lines.append(
            f"| {n} | {diam} | {', '.join(f'{v:.3f}' for v in t.get('pseudocell_f1_per_seed', []))}"
            f" | {full} | {'-' if ratio is None else f'{ratio:.3f}'}"
            f" | {'yes' if t.get('sd_ok') else 'no'}"
            f" | {'yes' if beats else 'no (' + ', '.join(t.get('not_beaten', [])) + ')'} |")
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

