"""The stage that puts a person's review into a round's labels (human in the loop).

``pseudocell suggest`` writes tiles to review, a person corrects them, ``pseudocell
ingest`` stores the answers under ``<run>/human/after_NNN`` (every review of rounds <=
NNN). Every later round then starts with :data:`HUMAN_LABELS`, whatever the mode: the
labels it would have used, with the person's answers in force
(:func:`pseudocell.core.review.merge_human`); the detector's loss also covers the whole
of each reviewed tile (:func:`pseudocell.stages.loop.detector_data`).
"""
from __future__ import annotations

import logging

import numpy as np

from pseudocell.config import Config
from pseudocell.core.metrics import prf
from pseudocell.core.review import merge_human
from pseudocell.stages.base import (HUMAN_STAGE, Human, Labels, Prepared, StageInputs,
                                    StageOutputs, StageSpec)
from pseudocell.stages.scale import read_scale
from pseudocell.storage import tables
from pseudocell.storage.layout import join

__all__ = ["HUMAN_LABELS", "human_labels", "review_metrics"]

logger = logging.getLogger(__name__)


def review_metrics(tiles: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict:
    """What the reviews say, for the round's record: the human labels by kind, the
    reviewed tiles, and the detector's F1 on the latest review's audit tiles (drawn at
    random: an unbiased estimate) and on all its reviewed tiles (chosen where the
    detector was unsure: a pessimistic one). ``<set>_points`` counts the points the
    person judged there (confirmed + rejected + added = tp + fp + fn); the F1 is left
    out where that is 0 (tiles without a cell or a detection say nothing of it: a small
    audit tile often holds none).

    ``tiles``: the human store's tile table (``reviewed``, ``audit``, ``round``, ``tp``,
    ``fp``, ``fn`` per tile); ``labels``: its labels table.
    """
    kinds = np.asarray(labels["kind"]).astype(str)
    out: dict = {f"n_{k}": int((kinds == k).sum())
                 for k in ("human_added", "human_confirmed", "human_rejected")}
    rev = np.asarray(tiles["reviewed"], bool)
    out["n_reviewed_tiles"] = int(rev.sum())
    if not rev.any():
        return out
    last = int(np.asarray(tiles["round"])[rev].max())
    latest = rev & (np.asarray(tiles["round"]) == last)
    out["review_round"] = last
    for name, sel in (("audit", latest & np.asarray(tiles["audit"], bool)),
                      ("reviewed", latest)):
        tp, fp, fn = (int(np.asarray(tiles[c])[sel].sum()) for c in ("tp", "fp", "fn"))
        out[f"{name}_tiles"] = int(sel.sum())
        out[f"{name}_points"] = tp + fp + fn
        if tp + fp + fn:
            out[f"{name}_f1"] = prf(tp, fp, fn)[2]
    return out


def human_labels(inp: StageInputs, cfg: Config) -> StageOutputs:
    """The round's labels with the person's review in force.

    Inputs: ``points`` (the labels the round would use without the review), ``human``
    (the person's points: kinds ``human_added``, ``human_confirmed``, ``human_rejected``),
    ``reviewed`` (the tiles they saw), ``scale``. A machine label inside a reviewed tile
    or within ``mask_radius`` (canonical px, in original px here) of a person's point is
    dropped; clicked cells stay. Outputs ``points`` (same columns as every labels table).
    """
    sc = read_scale(inp.uris["scale"])
    labels = tables.read_table(inp.uris["points"])
    human = tables.read_table(inp.uris["human"])
    tiles = tables.read_table(inp.uris["reviewed"])
    rev = np.asarray(tiles["reviewed"], bool)
    boxes = np.stack([np.asarray(tiles[c])[rev] for c in ("y0", "x0", "h", "w")], axis=1)
    merged = merge_human({k: labels[k] for k in tables.POINT_COLUMNS},
                         {k: human[k] for k in tables.POINT_COLUMNS}, boxes,
                         np.asarray(tiles["image_id"])[rev],
                         radius=sc.length(cfg.mask_radius))
    uri = join(inp.out_dir, "points.parquet")
    tables.write_table(uri, merged)
    metrics = review_metrics(tiles, human)
    metrics["n_labels_replaced"] = int(len(labels["y"]) + len(human["y"]) - len(merged["y"]))
    logger.info("human_labels round=%d %s", inp.round,
                " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in metrics.items()))
    return StageOutputs({"points": uri}, metrics)


#: First stage of every round that a person's review applies to (see
#: :func:`pseudocell.stages.plan.round_stages`).
HUMAN_LABELS = StageSpec(
    HUMAN_STAGE, human_labels, "LabelSelector", uses_gpu=False,
    inputs={"points": Labels(reviewed=False), "human": Human("labels"),
            "reviewed": Human("tiles"), "scale": Prepared("scale", "scale")},
    row={"n_human_added": "human_added", "n_human_confirmed": "human_confirmed",
         "n_human_rejected": "human_rejected", "n_reviewed_tiles": "reviewed_tiles",
         "audit_f1": "audit_f1", "audit_points": "audit_points"})
