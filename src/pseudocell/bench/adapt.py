"""The domain-adaptation benchmark: a detector trained on one image set (source, every
cell annotated) detects cells of another (target, no label).

For each pair (source dataset → target dataset, optionally with a harder shift applied
to the target) and seed, on the target's held-out test images:

1. ``source_only``: round 0 of the ``adapt`` run (the detector of the source alone);
2. ``augment``: the source detector trained with intensity augmentation;
3. ``dann``: the source detector with a DANN domain classifier (gradient reversal);
4. ``pseudo_heatmap``: the ``adapt`` run's final detector (pseudo-cell-position
   heatmaps, uncertainty, curriculum);
5. ``pseudo_heatmap_ranker``: the ``adapt-ranker`` run's final detector (the same,
   plus the PU learner and P-ranker on the target);
6. ``pseudo_heatmap_augment``: the ``adapt`` run with every detector (round 0 and the
   curriculum rounds) trained with the intensity augmentation of ``augment``;
7. ``pseudo_heatmap_augment_round0``: the ``adapt`` run whose round 0 (the source-only
   detector) is ``augment``'s and whose curriculum rounds train on plain crops;
8. ``target_full``: the detector trained on every target training cell (upper bound).

The splits come from the datasets' specs (seeded); the seed varies every training.
Target ground truth is used for scoring only (and for ``target_full``). Every method
of a seed is cached as soon as it is done, so a stopped benchmark continues.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pseudocell.bench.datasets import Dataset, DatasetSpec, load_dataset
from pseudocell.bench.methods import detect_supervised
from pseudocell.bench.quality import _score, _versions, cached_seed, method_stats, methods_table
from pseudocell.config import Config
from pseudocell.core.scale import estimate_diameter, scale_factor
from pseudocell.data.points import points_by_image
from pseudocell.errors import InvalidInputError
from pseudocell.orchestrator.executors import LocalExecutor
from pseudocell.orchestrator.run import prepare_run, run_loop
from pseudocell.results.reader import RunResults
from pseudocell.validation import ImageSet, RunInputs

__all__ = ["METHODS", "SHIFTS", "Pair", "parse_pair", "half_magnification", "run_adapt",
           "summarize", "markdown_report"]

logger = logging.getLogger(__name__)

METHODS = ("source_only", "augment", "dann", "pseudo_heatmap", "pseudo_heatmap_ranker",
           "pseudo_heatmap_augment", "pseudo_heatmap_augment_round0", "target_full")
#: The adapted methods whose targets are reported (beat the baselines, close the gap).
ADAPTED = ("pseudo_heatmap", "pseudo_heatmap_ranker", "pseudo_heatmap_augment",
           "pseudo_heatmap_augment_round0")
#: The adapt-mode methods that differ only in ``source_training`` (and their run folder).
_AUGMENTED = {"pseudo_heatmap_augment": "augment",
              "pseudo_heatmap_augment_round0": "augment-round0"}
#: The baselines the pseudo-heatmap method must beat (mean over seeds).
BASELINES = ("source_only", "augment", "dann")


def _half(images: ImageSet, gt: dict) -> tuple[ImageSet, dict]:
    ims = []
    for im in images.images:
        h, w = im.shape[0] // 2 * 2, im.shape[1] // 2 * 2
        a = im[:h, :w].astype(np.float64).reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
        sd = a.std()
        ims.append(((a - a.mean()) / (sd if sd > 0 else 1.0)).astype(np.float32))
    g = dict(gt)
    g["y"] = (np.asarray(gt["y"]) + 0.5) / 2 - 0.5
    g["x"] = (np.asarray(gt["x"]) + 0.5) / 2 - 0.5
    return replace(images, images=ims), g


def half_magnification(ds: Dataset) -> Dataset:
    """The dataset imaged at half the magnification: every image 2 x 2 mean-binned (and
    normalised again), points mapped by ``p / 2`` on pixel centres (``(p + 0.5) / 2 -
    0.5``), matching radius halved.

    >>> from pseudocell.bench.datasets import DatasetSpec
    >>> spec = DatasetSpec(name="t", images=".", gt="x.csv", radius=10.0)
    >>> s = ImageSet(["a"], [np.arange(16, dtype=np.float32).reshape(4, 4)], ["a.png"])
    >>> gt = {"image_id": np.array(["a"], object), "y": np.array([1.5]), "x": np.array([0.5])}
    >>> h = half_magnification(Dataset(spec, s, gt, s, gt))
    >>> h.train.images[0].shape, float(h.train_gt["y"][0]), float(h.train_gt["x"][0]), h.spec.radius
    ((2, 2), 0.5, 0.0, 5.0)
    """
    train, train_gt = _half(ds.train, ds.train_gt)
    test, test_gt = _half(ds.test, ds.test_gt)
    return Dataset(replace(ds.spec, name=f"{ds.spec.name}@half", radius=ds.spec.radius / 2),
                   train, train_gt, test, test_gt)


#: Harder shifts a pair may apply to its target (issue 17: when source-only is already
#: close to target-supervised).
SHIFTS: dict[str, Callable[[Dataset], Dataset]] = {"half-magnification": half_magnification}


@dataclass(frozen=True)
class Pair:
    """Source dataset → target dataset, with an optional ``shift`` of :data:`SHIFTS`
    applied to the target."""

    source: str
    target: str
    shift: str | None = None

    @property
    def name(self) -> str:
        return f"{self.source}->{self.target}" + (f"@{self.shift}" if self.shift else "")


def parse_pair(text: str, known: Sequence[str]) -> Pair:
    """``SOURCE:TARGET`` or ``SOURCE:TARGET@SHIFT`` with dataset names from ``known``.

    >>> parse_pair("a:b@half-magnification", ["a", "b"])
    Pair(source='a', target='b', shift='half-magnification')
    """
    body, _, shift = text.partition("@")
    src, sep, tgt = body.partition(":")
    if not sep or not src or not tgt:
        raise InvalidInputError(f"--pair {text!r}: write SOURCE:TARGET or "
                                "SOURCE:TARGET@SHIFT, e.g. u2os:nih3t3")
    bad = [n for n in (src, tgt) if n not in known]
    if bad:
        raise InvalidInputError(f"--pair {text!r}: dataset(s) {bad} are not among "
                                f"{sorted(known)} (the --datasets file's names)")
    if src == tgt and not shift:
        raise InvalidInputError(f"--pair {text!r}: source and target are the same set; "
                                "give two datasets or a shift (@half-magnification)")
    if shift and shift not in SHIFTS:
        raise InvalidInputError(f"--pair {text!r}: unknown shift {shift!r}; use one of "
                                f"{sorted(SHIFTS)}")
    return Pair(src, tgt, shift or None)


def _diameter(images: ImageSet, gt: dict) -> float:
    pts = points_by_image(gt, images.ids)
    return estimate_diameter(list(images.images), [pts[i] for i in images.ids])["diameter"]


def _adapt_run(src: Dataset, tgt: Dataset, cfg: Config, out: Path) -> tuple[dict, RunResults]:
    layout = prepare_run(out, cfg, RunInputs(tgt.train, None, tgt.train_gt, tgt.test,
                                             tgt.test_gt, src.train, src.train_gt), force=True)
    metrics = run_loop(layout, cfg, LocalExecutor())
    return metrics, RunResults(layout, cfg)


def _heldout(run: RunResults, rnd: int, tgt: Dataset) -> dict:
    ids = tgt.test.ids
    return _score(points_by_image(run.detections(rnd, heldout=True), ids), tgt.test_gt, ids,
                  tgt.spec.radius)


def _method(m: str, src: Dataset, tgt: Dataset, cfg: Config, seed: int, out: Path) -> dict:
    """One method on one seed → ``{"scores": {method: P/R/F}, "seconds", ...}``."""
    t0 = time.perf_counter()
    res: dict = {}
    if m == "pseudo_heatmap":  # also gives source_only: its round 0
        metrics, run = _adapt_run(src, tgt, cfg.replace(mode="adapt"), out / "adapt")
        res["scores"] = {"source_only": _heldout(run, 0, tgt),
                         "pseudo_heatmap": _heldout(run, cfg.rounds, tgt)}
        res["rounds"] = metrics["rounds"]
    elif m == "pseudo_heatmap_ranker":
        metrics, run = _adapt_run(src, tgt, cfg.replace(mode="adapt-ranker"),
                                  out / "adapt-ranker")
        res["scores"] = {m: _heldout(run, cfg.rounds, tgt)}
        res["rounds"] = metrics["rounds"]
    elif m in _AUGMENTED:
        training = _AUGMENTED[m]
        metrics, run = _adapt_run(src, tgt, cfg.replace(mode="adapt", source_training=training),
                                  out / f"adapt-{training}")
        res["scores"] = {m: _heldout(run, cfg.rounds, tgt)}
        res["rounds"] = metrics["rounds"]
    elif m in ("augment", "dann"):
        metrics, run = _adapt_run(src, tgt, cfg.replace(mode="adapt", rounds=0,
                                                        source_training=m), out / m)
        res["scores"] = {m: _heldout(run, 0, tgt)}
        res["rounds"] = metrics["rounds"]
    elif m == "target_full":
        s = scale_factor(_diameter(tgt.train, tgt.train_gt))
        det = detect_supervised(tgt.train, tgt.train_gt, tgt.test,
                                cfg.replace(mode="partial"), seed, s)
        res["scores"] = {m: _score(det, tgt.test_gt, tgt.test.ids, tgt.spec.radius)}
    else:
        raise InvalidInputError(f"unknown adapt benchmark method {m!r}; use {METHODS}")
    res["seconds"] = time.perf_counter() - t0
    return res


def run_adapt(specs: Sequence[DatasetSpec], pairs: Sequence[Pair], *, cfg: Config,
              seeds: Sequence[int] = (0, 1, 2), out_dir: str | Path,
              methods: Sequence[str] = METHODS, max_train: int | None = None,
              max_test: int | None = None) -> dict:
    """Run the protocol; returns every number (the input of :func:`summarize`)."""
    from pseudocell.bench.quality import _subset

    out_dir = Path(out_dir)
    by_name = {s.name: s for s in specs}
    loaded: dict[str, Dataset] = {}

    def dataset(name: str) -> Dataset:
        if name not in loaded:
            ds = load_dataset(by_name[name])
            loaded[name] = _subset(ds, max_train, max_test) if max_train or max_test else ds
        return loaded[name]

    # the work methods: pseudo_heatmap's run also gives source_only
    work = [m for m in methods if m != "source_only"]
    if "source_only" in methods and "pseudo_heatmap" not in work:
        work.insert(0, "pseudo_heatmap")
    result: dict = {"config": cfg.to_dict(), "seeds": list(seeds), "methods": list(methods),
                    "pairs": {}, "versions": _versions()}
    for pair in pairs:
        src = dataset(pair.source)
        tgt = dataset(pair.target)
        if pair.shift:
            tgt = SHIFTS[pair.shift](tgt)
        logger.info("adapt bench %s: source train %d, target train %d, target test %d",
                    pair.name, len(src.train.ids), len(tgt.train.ids), len(tgt.test.ids))
        per_seed = {}
        for seed in seeds:
            c = cfg.replace(seed=seed, radius=tgt.spec.radius)
            merged: dict = {"scores": {}, "seconds": {}, "rounds": {}}
            for m in work:
                # the adapt mode's hash: it covers the adapt settings too
                key = {"config_hash": c.replace(mode="adapt").config_hash,
                       "pair": pair.name, "method": m,
                       "n_source": len(src.train.ids), "n_target": len(tgt.train.ids),
                       "n_test": len(tgt.test.ids), "radius": tgt.spec.radius}
                d = out_dir / pair.name / f"seed{seed}"
                r = cached_seed(d / f"{m}.json", key,
                                lambda: _method(m, src, tgt, c, seed, d),
                                f"adapt bench pair={pair.name} seed={seed} method={m}")
                merged["scores"].update(r["scores"])
                merged["seconds"][m] = r["seconds"]
                if "rounds" in r:
                    merged["rounds"][m] = r["rounds"]
            per_seed[str(seed)] = merged
        result["pairs"][pair.name] = {"n_source": len(src.train.ids),
                                      "n_target": len(tgt.train.ids),
                                      "n_test": len(tgt.test.ids), "radius": tgt.spec.radius,
                                      "seeds": per_seed}
    result["summary"] = summarize(result)
    return result


def summarize(result: dict) -> dict:
    """Mean and sd of P, R, F1 per pair and method, and the targets: the pseudo-heatmap
    method above source-only and both baselines (mean F1), and the share of the gap
    between source-only and target-supervised it closes (>= 0.5 wanted)."""
    out = {}
    for name, d in result["pairs"].items():
        rows = method_stats(d["seeds"], METHODS)
        f = {m: r["f1"]["mean"] for m, r in rows.items()}
        t: dict = {}
        if "source_only" in f and "target_full" in f:
            t["gap"] = f["target_full"] - f["source_only"]
        for m in ADAPTED:
            if m not in f:
                continue
            t[m] = {"beats": {b: f[m] > f[b] for b in BASELINES if b in f}}
            if t.get("gap"):
                t[m]["gap_closed"] = (f[m] - f["source_only"]) / t["gap"]
        rows["targets"] = t
        out[name] = rows
    return out


def markdown_report(result: dict) -> str:
    """Methods x pairs F1 table (mean ± sd over seeds) and the targets."""
    summ = result["summary"]
    lines = [f"Target held-out images, one-to-one matching at the target's radius; "
             f"{len(result['seeds'])} seed(s); target labels used only by target_full and "
             "for scoring.", "", *methods_table(summ, METHODS), "",
             "| pair | gap (full - source-only) | method | beats source-only / augment / "
             "dann | gap closed |", "|---|---:|---|---|---:|"]
    for n in result["pairs"]:
        t = summ[n].get("targets") or {}
        for m in ADAPTED:
            if m not in t:
                continue
            beats = " / ".join("yes" if t[m]["beats"].get(b) else "no" for b in BASELINES)
            gc = t[m].get("gap_closed")
            lines.append(f"| {n} | {t.get('gap', float('nan')):.3f} | {m} | {beats} | "
                         f"{'-' if gc is None else f'{gc:.2f}'} |")
    return "\n".join(lines)
