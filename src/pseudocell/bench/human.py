"""The human-in-the-loop benchmark: held-out F1 against the clicks a person spends.

For each dataset and seed (the quality benchmark's seeded splits):

1. ``reference``: the plain partial mode with ``ref_keep`` (10 %) of the training cells
   clicked at random: its held-out F1 is the target, its clicks the yardstick;
2. ``suggest``: the partial mode from ``start_keep`` of the cells clicked at random, then
   ``steps`` review cycles: ``pseudocell suggest`` (``budget`` tiles of ``tile_cells``
   cell diameters) → the simulated annotator (:mod:`pseudocell.bench.annotator`) answers
   from the ground truth → ``ingest`` → one more round;
3. ``random_tiles``: the same cycles with every tile drawn at random (``audit = 1``);
4. ``partial_random``: the plain partial mode with as many random clicks as the
   ``suggest`` curve spent at each step.

Clicks: one per clicked cell; in a review one per added cell, one per rejected detection
and one per tile. Every training run has the same budget (the config's).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pseudocell.bench.annotator import annotate_review
from pseudocell.bench.datasets import Dataset, DatasetSpec
from pseudocell.bench.quality import _score, _versions, cached_seed, load_subset, seed_key
from pseudocell.config import Config, dump_toml
from pseudocell.data.points import hide_points, points_by_image
from pseudocell.human.ingest import ingest
from pseudocell.human.suggest import SuggestOptions, suggest
from pseudocell.orchestrator.executors import LocalExecutor
from pseudocell.orchestrator.run import prepare_run, run_loop
from pseudocell.results.reader import RunResults
from pseudocell.validation import RunInputs

__all__ = ["STRATEGIES", "run_human", "summarize", "markdown_report"]

logger = logging.getLogger(__name__)

STRATEGIES = ("suggest", "random_tiles", "partial_random")


def _heldout_f1(run: RunResults, rnd: int, ds: Dataset) -> float:
    ids = ds.test.ids
    return _score(points_by_image(run.detections(rnd, heldout=True), ids), ds.test_gt, ids,
                  ds.spec.radius)["f1"]


def _partial(ds: Dataset, cfg: Config, n_clicks: int, seed: int, out: Path) -> tuple[float, int]:
    """The plain partial mode with ``n_clicks`` random clicks → (held-out F1, clicks)."""
    keep = min(1.0, n_clicks / max(1, len(ds.train_gt["y"])))
    pts = hide_points(ds.train_gt, keep, seed=seed)
    layout = prepare_run(out, cfg, RunInputs(ds.train, pts, ds.train_gt, ds.test, ds.test_gt),
                         force=True)
    run_loop(layout, cfg, LocalExecutor())
    return _heldout_f1(RunResults(layout, cfg), cfg.rounds, ds), int(len(pts["y"]))


def _cycles(ds: Dataset, cfg: Config, seed: int, start_keep: float, steps: int, budget: int,
            tile_cells: float, audit: float, out: Path) -> list[dict]:
    """A partial run from ``start_keep`` clicks, then ``steps`` review cycles; one curve
    point per state: clicks spent so far, held-out F1, what the annotator did."""
    pts = hide_points(ds.train_gt, start_keep, seed=seed)
    layout = prepare_run(out, cfg, RunInputs(ds.train, pts, ds.train_gt, ds.test, ds.test_gt),
                         force=True)
    run_loop(layout, cfg, LocalExecutor())
    run = RunResults(layout, cfg)
    tile = int(max(32, round(tile_cells * run.scale_info().diameter / 16) * 16))
    clicks = int(len(pts["y"]))
    curve = [{"step": 0, "clicks": clicks, "f1": _heldout_f1(run, cfg.rounds, ds),
              "tile": tile}]
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        folder, _ = suggest(layout.root, SuggestOptions(budget=budget, tile=tile, per_image=1,
                                                        audit=audit), force=True)
        answers = annotate_review(folder, ds.train_gt, ds.spec.radius)
        ingest(layout.root, folder)
        cfg = cfg.replace(rounds=cfg.rounds + 1)
        Path(layout.config).write_text(dump_toml(cfg))
        run_loop(layout, cfg, LocalExecutor())
        run = RunResults(layout, cfg)
        clicks += answers["clicks"]
        curve.append({"step": step, "clicks": clicks, "f1": _heldout_f1(run, cfg.rounds, ds),
                      **{k: answers[k] for k in ("added", "rejected", "confirmed", "tiles")},
                      **{k: run.round_row(cfg.rounds).get(k) for k in ("audit_f1", "audit_points")},
                      "seconds": time.perf_counter() - t0})
        logger.info("human bench %s step %d: clicks=%d F1=%.3f", out.name, step, clicks,
                    curve[-1]["f1"])
    return curve


def _one_seed(ds: Dataset, cfg: Config, seed: int, out: Path, *, ref_keep: float,
              start_keep: float, steps: int, budget: int, tile_cells: float) -> dict:
    cfg = cfg.replace(seed=seed, radius=ds.spec.radius)
    t0 = time.perf_counter()
    f1, n = _partial(ds, cfg, int(round(ref_keep * len(ds.train_gt["y"]))), seed,
                     out / "reference")
    res: dict = {"reference": {"f1": f1, "clicks": n}, "n_cells": int(len(ds.train_gt["y"]))}
    res["suggest"] = _cycles(ds, cfg, seed, start_keep, steps, budget, tile_cells, 0.1,
                             out / "suggest")
    res["random_tiles"] = _cycles(ds, cfg, seed, start_keep, steps, budget, tile_cells, 1.0,
                                  out / "random_tiles")
    res["partial_random"] = []
    for p in res["suggest"][1:]:
        f1, n = _partial(ds, cfg, p["clicks"], seed, out / f"partial_{p['clicks']}")
        res["partial_random"].append({"clicks": n, "f1": f1})
    res["seconds"] = time.perf_counter() - t0
    return res


def run_human(specs: Sequence[DatasetSpec], *, cfg: Config, seeds: Sequence[int] = (0, 1, 2),
              out_dir: str | Path, ref_keep: float = 0.1, start_keep: float = 0.025,
              steps: int = 3, budget: int = 8, tile_cells: float = 6.0,
              max_train: int | None = None, max_test: int | None = None) -> dict:
    """Run the protocol (each finished dataset x seed is cached); every number."""
    out_dir = Path(out_dir)
    params = {"ref_keep": ref_keep, "start_keep": start_keep, "steps": steps,
              "budget": budget, "tile_cells": tile_cells}
    result: dict = {"config": cfg.to_dict(), "seeds": list(seeds), "params": params,
                    "datasets": {}, "versions": _versions()}
    for spec in specs:
        ds = load_subset(spec, max_train, max_test)
        per_seed = {}
        for seed in seeds:
            d = out_dir / spec.name / f"seed{seed}"
            key = seed_key(ds, cfg, ref_keep, protocol="human", rounds=cfg.rounds, **params)
            per_seed[str(seed)] = cached_seed(
                d / "result.json", key,
                lambda: _one_seed(ds, cfg, seed, d, **params),
                f"human bench dataset={spec.name} seed={seed}")
        result["datasets"][spec.name] = {"n_train": len(ds.train.ids),
                                         "n_test": len(ds.test.ids), "seeds": per_seed}
    result["summary"] = summarize(result)
    return result


def _clicks_to_reach(curve: list[dict], target: float) -> int | None:
    """The fewest clicks at which a curve's F1 reaches ``target`` (None: never)."""
    hits = [p["clicks"] for p in curve if p["f1"] >= target]
    return min(hits) if hits else None


def _half_clicks_gap(seed: dict) -> dict:
    """By how much ``suggest`` misses (or beats) the reference within the target's
    budget: its best held-out F1 among the curve points that spent at most half the
    reference's clicks, minus the reference F1 (``gap`` None and ``points`` 0 when the
    curve has no such point: its first review already spends more)."""
    half = 0.5 * seed["reference"]["clicks"]
    f1s = [p["f1"] for p in seed["suggest"] if p["clicks"] <= half]
    return {"gap": max(f1s) - seed["reference"]["f1"] if f1s else None, "points": len(f1s)}


def summarize(result: dict) -> dict:
    """Per dataset: the curves' mean over seeds per step, and the target: the clicks the
    suggestion strategy needs to reach the 10 %-click F1, as a share of those clicks
    (<= 0.5 wanted)."""
    out = {}
    for name, d in result["datasets"].items():
        seeds = list(d["seeds"].values())
        row: dict = {"reference_f1": float(np.mean([s["reference"]["f1"] for s in seeds])),
                     "reference_clicks": float(np.mean([s["reference"]["clicks"]
                                                        for s in seeds]))}
        for strat in ("suggest", "random_tiles", "partial_random"):
            n = min(len(s[strat]) for s in seeds)
            row[strat] = [{"clicks": float(np.mean([s[strat][k]["clicks"] for s in seeds])),
                           "f1": float(np.mean([s[strat][k]["f1"] for s in seeds])),
                           "f1_sd": float(np.std([s[strat][k]["f1"] for s in seeds]))}
                          for k in range(n)]
        ratios = []
        for s in seeds:
            c = _clicks_to_reach(s["suggest"], s["reference"]["f1"])
            ratios.append(None if c is None else c / s["reference"]["clicks"])
        row["suggest_clicks_ratio"] = ratios
        row["target_met"] = all(r is not None and r <= 0.5 for r in ratios)
        row["half_clicks_gap"] = [_half_clicks_gap(s) for s in seeds]
        out[name] = row
    return out


def markdown_report(result: dict) -> str:
    """Curves (clicks, F1) per dataset and strategy, and the target."""
    lines = [f"Held-out F1 against clicks; {len(result['seeds'])} seed(s); "
             f"parameters {result['params']}.", ""]
    for name, row in result["summary"].items():
        lines += [f"### {name}", "",
                  f"reference (plain partial, {row['reference_clicks']:.0f} random clicks): "
                  f"F1 {row['reference_f1']:.3f}", "",
                  "| strategy | clicks → F1 (mean over seeds) |", "|---|---|"]
        for strat in ("suggest", "random_tiles", "partial_random"):
            pts = ", ".join(f"{p['clicks']:.0f} → {p['f1']:.3f}" for p in row[strat])
            lines.append(f"| {strat} | {pts} |")
        r = ", ".join("never" if x is None else f"{x:.2f}" for x in row["suggest_clicks_ratio"])
        lines += ["", f"clicks of `suggest` to reach the reference F1 / reference clicks "
                      f"(per seed): {r}; target (<= 0.5 on every seed) "
                      f"{'met' if row['target_met'] else 'NOT met'}"]
        g = ", ".join("no point" if x["gap"] is None else
                      f"{x['gap']:+.3f} ({x['points']} point{'s' * (x['points'] != 1)})"
                      for x in row["half_clicks_gap"])
        lines += [f"best F1 of `suggest` within half the reference's clicks minus the "
                  f"reference F1 (per seed): {g}", ""]
    return "\n".join(lines)
