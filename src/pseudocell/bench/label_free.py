"""The label-free benchmark: cells found with no click, against references with clicks.

For each dataset and seed, with no label used except to score (held-out images,
one-to-one matching at the dataset's radius):

1. ``classical``: Otsu threshold of the grayscale image (polarity chosen on the training
   images as the label-free mode does), small objects and holes cleaned, peaks of the
   distance transform (:func:`classical_label_free`);
2. ``psm_points``: the PSM points of the label-free mode (activation network trained
   on the training images, applied to the held-out ones), every point kept;
3. ``psm_loop``: the label-free mode's final detector (``cfg.rounds`` rounds from the
   most confident PSM points);

and, with clicks, for reference (from the quality benchmark, :mod:`pseudocell.bench.
quality`, at the same config, split and seed):

4. ``partial_loop``: the partial mode from ``keep`` of the training points;
5. ``full``: the detector trained on every training point (the upper bound).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from skimage.filters import threshold_otsu

from pseudocell.bench.datasets import Dataset, DatasetSpec
from pseudocell.bench.quality import (_cached_seed, _score, _versions, cached_seed, load_subset,
                                      method_stats, methods_table, seed_key)
from pseudocell.config import Config
from pseudocell.core import psm
from pseudocell.data.points import points_by_image
from pseudocell.orchestrator.executors import LocalExecutor
from pseudocell.orchestrator.run import prepare_run, run_loop
from pseudocell.results.reader import RunResults
from pseudocell.validation import RunInputs

__all__ = ["METHODS", "classical_label_free", "run_label_free", "summarize", "markdown_report"]

logger = logging.getLogger(__name__)

METHODS = ("classical", "psm_points", "psm_loop", "partial_loop", "full")

#: The seed paper's own MoNuSeg figure as public benchmark indexes list it (Chen et al.
#: 2023, unsupervised PSM, MoNuSeg test set): object AJI, a segmentation metric, not a
#: detection F1; quoted next to the table for context, not comparable to its rows.
PAPER_MONUSEG = {"PSM (paper) AJI, MoNuSeg": 0.542}


def classical_label_free(images: Sequence[np.ndarray], polarity: str) -> dict[int, np.ndarray]:
    """Otsu threshold + clean-up + distance-transform peaks on every image, with no
    label: the cell size is measured as the label-free mode does (each image's object
    size for a first pass of points, then the scale of the strongest blob response at
    them), so that the comparison isolates what PSM adds (activation map, K-means
    levels, confidences) and what the loop adds.

    Parameters
    ----------
    images : sequence of ndarray (H, W) float32, normalised
    polarity : {"bright", "dark"}

    Returns
    -------
    dict image index → (N, 2) float64 points (y, x)
    """
    from pseudocell.core.scale import estimate_diameter

    masks = []
    for im in images:
        raw = np.clip(im, 0.0, 1.0)
        if polarity == "dark":
            raw = 1.0 - raw
        masks.append(raw > threshold_otsu(raw) if raw.max() > raw.min()
                     else np.zeros(raw.shape, bool))
    first = []
    for m in masks:  # the confident half of a first pass, as the label-free mode does
        d0 = psm.component_diameter(m)
        p, conf = (np.zeros((0, 2)), np.zeros(0)) if d0 is None else \
            psm.seed_points(psm.clean_mask(m, d0), d0)
        first.append(p[conf >= np.median(conf)] if len(p) else p)
    if not any(len(p) for p in first):
        return {k: np.zeros((0, 2)) for k in range(len(images))}
    d = estimate_diameter(list(images), first)["diameter"]
    return {k: psm.seed_points(psm.clean_mask(m, d), d)[0] for k, m in enumerate(masks)}


def _one_seed(ds: Dataset, cfg: Config, seed: int, keep: float, out: Path,
              reference: Path | None, reference_methods: Sequence[str]) -> dict:
    spec = ds.spec
    ids = ds.test.ids
    lf = cfg.replace(mode="label-free", seed=seed, radius=spec.radius)
    score, timings, res = {}, {}, {}

    t0 = time.perf_counter()
    polarity = lf.polarity if lf.polarity != "auto" else psm.stain_polarity(ds.train.images)
    det = classical_label_free(ds.test.images, polarity)
    score["classical"] = _score({i: det[k] for k, i in enumerate(ids)}, ds.test_gt, ids,
                                spec.radius)
    timings["classical"] = time.perf_counter() - t0
    res["polarity"] = polarity

    t0 = time.perf_counter()
    layout = prepare_run(out / "label-free", lf,
                         RunInputs(ds.train, None, ds.train_gt, ds.test, ds.test_gt), force=True)
    metrics = run_loop(layout, lf, LocalExecutor())
    timings["psm_loop"] = time.perf_counter() - t0
    run = RunResults(layout, lf)
    seeds = run._table(run.store_uri(0, run.mode.products["heldout_seeds"]))
    score["psm_points"] = _score(points_by_image(seeds, ids), ds.test_gt, ids, spec.radius)
    score["psm_loop"] = _score(points_by_image(run.detections(lf.rounds, heldout=True), ids),
                               ds.test_gt, ids, spec.radius)
    res["rounds"] = metrics["rounds"]
    sc = run.scale_info()
    res["cell_diameter"], res["scale"] = sc.diameter, sc.scale

    if reference is not None:
        # the base config, as the quality benchmark keys its cache (it sets the seed)
        ref = _cached_seed(ds, cfg, seed, keep, reference / spec.name / f"seed{seed}",
                           reference_methods)
        score["partial_loop"] = ref["scores"]["pseudocell"]
        if "full" in ref["scores"]:
            score["full"] = ref["scores"]["full"]
        timings["partial_loop"] = ref["seconds"].get("pseudocell")
    res["scores"] = score
    res["seconds"] = timings
    return res


def run_label_free(specs: Sequence[DatasetSpec], *, cfg: Config, seeds: Sequence[int] = (0, 1, 2),
                   keep: float = 0.1, out_dir: str | Path, reference_dir: str | Path | None = None,
                   reference_methods: Sequence[str] = ("full",),
                   max_train: int | None = None, max_test: int | None = None) -> dict:
    """Run the protocol; returns every number. ``reference_dir`` holds (or receives) the
    quality benchmark's per-seed results with ``reference_methods`` (its cache is reused
    when the config, split and methods match); None leaves the reference rows out."""
    out_dir = Path(out_dir)
    if cfg.mode != "partial":
        cfg = cfg.replace(mode="partial")  # the reference runs' config; label-free is derived
    result: dict = {"config": cfg.to_dict(), "keep": keep, "seeds": list(seeds),
                    "methods": list(METHODS), "datasets": {}, "versions": _versions()}
    for spec in specs:
        ds = load_subset(spec, max_train, max_test)
        per_seed = {}
        for seed in seeds:
            key = seed_key(ds, cfg.replace(mode="label-free"), keep,
                           reference=reference_dir is not None)
            per_seed[str(seed)] = cached_seed(
                out_dir / spec.name / f"seed{seed}" / "result.json", key,
                lambda: _one_seed(ds, cfg, seed, keep, out_dir / spec.name / f"seed{seed}",
                                  None if reference_dir is None else Path(reference_dir),
                                  reference_methods),
                f"label-free bench dataset={spec.name} seed={seed}")
        result["datasets"][spec.name] = {"n_train": len(ds.train.ids),
                                         "n_test": len(ds.test.ids), "radius": spec.radius,
                                         "seeds": per_seed}
    result["summary"] = summarize(result)
    return result


def summarize(result: dict) -> dict:
    """Mean and sd of P, R, F1 per dataset and method, and the targets: psm_loop above
    classical and psm_points, and its ratio to full."""
    out = {}
    for name, d in result["datasets"].items():
        rows = method_stats(d["seeds"], METHODS)
        f = {m: r["f1"]["mean"] for m, r in rows.items()}
        if "psm_loop" in f:
            rows["targets"] = {
                "beats_classical": f["psm_loop"] > f.get("classical", np.inf),
                "beats_psm_points": f["psm_loop"] > f.get("psm_points", np.inf),
                "ratio_to_full": f["psm_loop"] / f["full"] if f.get("full") else None}
        out[name] = rows
    return out


def markdown_report(result: dict) -> str:
    """Methods x datasets F1 table (mean ± sd over seeds) and the targets."""
    summ = result["summary"]
    lines = [f"Held-out images, one-to-one matching at each dataset's radius; "
             f"{len(result['seeds'])} seed(s); no label used except for scoring (rows 1-3).",
             "", *methods_table(summ, METHODS)]
    lines += ["", "| dataset | psm_loop > classical | psm_loop > psm_points | "
                  "psm_loop / full | polarity | diameter (px) |", "|---|---|---|---:|---|---|"]
    for n, d in result["datasets"].items():
        t = summ[n].get("targets") or {}
        s0 = next(iter(d["seeds"].values()))
        ratio = t.get("ratio_to_full")
        lines.append(f"| {n} | {'yes' if t.get('beats_classical') else 'no'} | "
                     f"{'yes' if t.get('beats_psm_points') else 'no'} | "
                     f"{'-' if ratio is None else f'{ratio:.3f}'} | {s0.get('polarity')} | "
                     + ", ".join(f"{s['cell_diameter']:.1f}" for s in d["seeds"].values())
                     + " |")
    if "monuseg" in result["datasets"]:
        lines += ["", "The seed paper on MoNuSeg (segmentation, not comparable with detection "
                      "F1): " + ", ".join(f"{k} {v:.3f}" for k, v in PAPER_MONUSEG.items())]
    return "\n".join(lines)
