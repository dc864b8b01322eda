"""``pseudocell suggest``: the tiles where a person's clicks help the detector most.

For round ``r``'s detector (default: the run's last), on every training image:

1. ``T`` stochastic heatmaps (``cfg.uncertainty``: 8 test-time flips/rotations, or MC
   dropout with ``cfg.mc_passes`` passes for a detector trained with dropout);
2. per candidate peak (the ``predict`` stage's candidates, down to the peak floor) the
   disagreement of the passes about "cell or not" at the detection threshold,
   ``4 q (1 - q)`` (:func:`pseudocell.core.review.decision_disagreement`);
3. per tile (a grid of ``tile`` px) ``score = Σ disagreement + ranker_weight x (the
   candidates the latest P-ranker left between its positive and negative cut-offs)``;
4. the ``budget`` best tiles, at most ``per_image`` per image, never a tile that
   overlaps an already reviewed one by half or more, of which ``audit`` (a share) are
   drawn at random instead: the audit set, whose answers estimate the detector's F1
   without the selection's bias.

The review folder (:mod:`pseudocell.human.files`) holds each tile's pixels and the
detector's detections in it, for napari and QuPath.
"""
from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from pseudocell.core.detector import heatmap_passes, load_unet
from pseudocell.core.review import (choose_tiles, decision_disagreement, in_box,
                                    overlap_fraction, tile_grid, tile_scores)
from pseudocell.data.points import points_by_image
from pseudocell.errors import InvalidInputError, RunDirectoryError
from pseudocell.human.files import (Tile, sha256_file, tile_id, write_manifest_csv,
                                    write_tile_png, write_tile_points)
from pseudocell.results.reader import RunResults
from pseudocell.stages.base import Output, Prepared
from pseudocell.stages.loop import load_model
from pseudocell.stages.plan import human_round
from pseudocell.storage import arrays, tables
from pseudocell.storage.layout import join
from pseudocell.storage.manifest import read_manifest

__all__ = ["SuggestOptions", "suggest", "run_id", "model_id", "reviewed_boxes"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SuggestOptions:
    """How ``suggest`` chooses (see the module docstring)."""

    budget: int = 10
    tile: int = 256
    per_image: int = 2
    audit: float = 0.1
    ranker_weight: float = 0.1
    round: int | None = None

    def __post_init__(self) -> None:
        checks = ((self.budget >= 1, "budget", "an integer >= 1"),
                  (self.tile >= 16, "tile", "an integer >= 16 (px)"),
                  (self.per_image >= 1, "per_image", "an integer >= 1"),
                  (0.0 <= self.audit <= 1.0, "audit", "a share in [0, 1]"),
                  (self.ranker_weight >= 0, "ranker_weight", "a number >= 0"))
        for ok, name, want in checks:
            if not ok:
                raise InvalidInputError(f"--{name.replace('_', '-')}={getattr(self, name)!r}: "
                                        f"use {want}")


def run_id(res: RunResults) -> str:
    """Which run a review belongs to: its inputs and every config field that a stage
    reads (16 hex digits)."""
    import hashlib

    m = read_manifest(res.layout.inputs_manifest) or {}
    key = f"{m.get('fingerprint', '')}:{res.cfg.stage_hash}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def model_id(res: RunResults, rnd: int) -> str:
    """Which detector made a review's detections: its weights' sha256 (16 hex digits)."""
    m = res.manifest(rnd, res.mode.products["model"].stage) or {}
    sha = ((m.get("outputs") or {}).get(res.mode.products["model"].name) or {}).get("sha256")
    return (sha or "")[:16]


def reviewed_boxes(res: RunResults, before: int | None = None) -> dict:
    """Tiles a person already reviewed (table image_id, y0, x0, h, w): those of the
    latest merged store (every review so far)."""
    after = human_round(res.layout, float("inf") if before is None else before)
    empty = {"image_id": np.zeros(0, object), **{c: np.zeros(0, np.int64)
                                                  for c in ("y0", "x0", "h", "w")}}
    if after is None:
        return empty
    m = read_manifest(join(res.layout.human_store(after), "_manifest.json"))
    t = tables.read_table(res.layout.uri(m["outputs"]["tiles"]["uri"]))
    rev = np.asarray(t["reviewed"], bool)
    return {k: np.asarray(t[k])[rev] for k in empty}


def _latest_model_round(res: RunResults) -> int:
    for r in range(res.rounds, -1, -1):
        if res.model_uri(r) is not None:
            return r
    raise RunDirectoryError(f"{res.layout.root!r} has no trained detector yet; run or "
                            "resume it first (`pseudocell resume RUN`)")


def _unresolved(res: RunResults, rnd: int) -> dict:
    """Candidates the latest P-ranker (round <= ``rnd``) neither admitted nor rejected:
    (image_id, y, x); empty for modes without a ranker."""
    for r in range(rnd, -1, -1):
        t_uri = res.store_uri(r, Output("extract_patches", "table"))
        s_uri = res.store_uri(r, Output("select", "selected"))
        if t_uri and s_uri:
            t, s = tables.read_table(t_uri), tables.read_table(s_uri)
            u = (np.asarray(t["set"]).astype(str) == "U") & \
                ~np.isin(np.asarray(t["patch_id"]), np.asarray(s["patch_id"]))
            return {k: np.asarray(t[k])[u] for k in ("image_id", "y", "x")}
    return {"image_id": np.zeros(0, object), "y": np.zeros(0), "x": np.zeros(0)}


def suggest(run_dir: str | Path, opts: SuggestOptions, *, out: str | Path | None = None,
            force: bool = False,
            progress: Callable[[int, int], None] | None = None) -> tuple[Path, list[Tile]]:
    """Write the review folder of round ``opts.round`` (default: the latest detector) and
    return it with the chosen tiles.

    The folder is ``RUN/review/round_NNN`` unless ``out`` is given (required for a run
    in an object store). An existing folder is refused unless ``force``.
    """
    res = RunResults.open(run_dir)
    cfg = res.cfg
    rnd = _latest_model_round(res) if opts.round is None else opts.round
    if res.model_uri(rnd) is None:
        raise InvalidInputError(f"--round {rnd}: that round has no trained detector in "
                                f"{res.layout.root!r}; use a round from 0 to "
                                f"{_latest_model_round(res)}")
    if out is None:
        if not res.layout.is_local:
            raise InvalidInputError("the run is in an object store: give --out DIR, a local "
                                    "folder for the review")
        out = res.layout.review_dir(rnd)
    folder = Path(out)
    if folder.exists() and any(folder.iterdir()):
        if not force:
            raise InvalidInputError(
                f"{str(folder)!r} already holds a review; ingest it (`pseudocell ingest`), "
                "then continue the run (`pseudocell resume RUN --rounds +1`) and suggest "
                "from the new round, or pass --force to replace it")
        shutil.rmtree(folder)
    sc = res.scale_info()
    images_uri = res.store_uri(0, Prepared("scale", "images"))
    originals = res.layout.images
    ids = res.image_ids
    pred = res.manifest(rnd, "predict") or {}
    threshold = float((pred.get("metrics") or {}).get("peak_threshold", 0.5))
    cands = points_by_image(tables.read_table(res.store_uri(rnd, Output("predict", "candidates"))),
                            ids)
    dets = points_by_image(res.detections(rnd), ids)
    unresolved = points_by_image(_unresolved(res, rnd), ids)
    done = reviewed_boxes(res)
    ck = load_model(res.model_uri(rnd))
    meta = ck["meta"]
    method = cfg.uncertainty
    if method == "mc-dropout" and not meta.get("dropout"):
        logger.warning("uncertainty='mc-dropout' but round %d's detector has no dropout: "
                       "using test-time flips/rotations", rnd)
        method = "tta"
    passes = min(cfg.mc_passes, 8) if method == "tta" else cfg.mc_passes
    net = load_unet(ck["state_dict"], meta["widths"], cfg.device, meta.get("dropout", 0.0))
    all_tiles, scores, det_part, owner = [], [], [], []
    shapes = arrays.stack_shapes(originals)
    for k, i in enumerate(ids):
        p = heatmap_passes(net, arrays.read_stack_item(images_uri, k), method=method,
                           passes=passes, seed=cfg.seed + k, precision=cfg.precision)
        dis = decision_disagreement(p, sc.to_scaled(i, cands[i]), threshold=threshold,
                                    radius=cfg.peak_min_distance)
        grid = tile_grid(shapes[k], opts.tile)
        s, d = tile_scores(grid, cands[i], dis, unresolved[i],
                           ranker_weight=opts.ranker_weight)
        all_tiles.append(grid), scores.append(s), det_part.append(d)
        owner.append(np.full(len(grid), k))
        if progress is not None:
            progress(k + 1, len(ids))
    grid = np.concatenate(all_tiles)
    score, det, img_of = np.concatenate(scores), np.concatenate(det_part), np.concatenate(owner)
    done_ids = np.asarray(done["image_id"]).astype(str)
    done_box = np.stack([done[c] for c in ("y0", "x0", "h", "w")], axis=1)
    eligible = np.array([not (overlap_fraction(b, done_box[done_ids == ids[j]]) >= 0.5).any()
                         for b, j in zip(grid, img_of)], bool)
    if not eligible.any():
        raise InvalidInputError("every tile of the run's images has been reviewed already; "
                                "nothing to suggest (try a smaller --tile)")
    chosen, audit = choose_tiles(score, img_of, eligible, budget=opts.budget,
                                 per_image=opts.per_image, audit_fraction=opts.audit,
                                 rng=np.random.default_rng([cfg.seed, rnd, 7]))
    mid = model_id(res, rnd)
    (folder / "tiles").mkdir(parents=True, exist_ok=True)
    (folder / "points").mkdir(exist_ok=True)
    tiles = []
    for c, is_audit in zip(chosen, audit):
        k = int(img_of[c])
        y0, x0, h, w = (int(v) for v in grid[c])
        reason = "audit" if is_audit else (
            "uncertain" if det[c] >= score[c] - det[c] else "ranker")
        t = Tile(tile_id(ids[k], y0, x0), ids[k], y0, x0, h, w, float(score[c]), reason, mid)
        tiles.append(t)
        im = arrays.read_stack_item(originals, k)
        write_tile_png(folder / "tiles" / f"{t.tile_id}.png", im[y0:y0 + h, x0:x0 + w])
        d = dets[ids[k]]
        inside = d[in_box(d, t.box)]
        write_tile_points(folder / "points", t, inside,
                          np.array(["proposed"] * len(inside), object))
    write_manifest_csv(folder / "manifest.csv", tiles)
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    record = {"run_id": run_id(res), "round": rnd, "model_run_id": mid, "tile": opts.tile,
              "budget": opts.budget, "audit": opts.audit, "uncertainty": method,
              "passes": passes, "threshold": threshold,
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "files": {f: sha256_file(folder / f) for f in files}}
    (folder / "review.json").write_text(json.dumps(record, indent=1, sort_keys=True))
    logger.info("suggest round=%d tiles=%d (audit %d) folder=%s", rnd, len(tiles),
                int(audit.sum()), folder)
    return folder, tiles
