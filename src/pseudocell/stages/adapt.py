"""Unsupervised domain adaptation (Cho et al., MedIA 2022): its stages and its modes.

A detector trained on fully annotated *source* images is adapted to unlabeled *target*
images, round by round:

1. ``train_detector``: the U-Net on every source image (loss on every pixel: the
   source is fully annotated) plus the target labels admitted so far (loss in discs
   around them, like the partial loop's pseudo-labels). Round 0 has no target labels:
   it is the source-only detector. ``source_training`` adds the baselines: intensity
   augmentation or a DANN domain classifier behind a gradient-reversal layer. With
   ``detector_warm_start`` round r's U-Net starts from round r - 1's weights (a DANN's
   domain classifier and its lambda schedule start afresh each round);
2. ``predict`` (the loop's): heatmaps and peaks of the target (and held-out) images;
3. ``uncertainty``: ``mc_passes`` stochastic heatmaps per target image (flips and
   rotations, or MC dropout) → a confidence per detected peak
   (:func:`pseudocell.core.select.peak_confidence`) and confidently empty places;
4. ``curriculum``: the most confident ``adapt_schedule[round]`` of the peaks become
   positive labels (a clean Gaussian is drawn at each: the *pseudo-cell-position
   heatmap*), empty places negative labels; they replace the previous round's;
5. ``adapt-ranker`` only: the admitted peaks are the positives P of the partial loop's
   PU learner and P-ranker over the other candidates, whose top ``alpha`` / bottom
   ``beta`` are added;
6. ``evaluate``: target F1 when ground truth is given, and the precision of the
   admitted labels.

Target ground truth reaches only ``evaluate``.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import replace

import numpy as np

from pseudocell.config import Config
from pseudocell.core.detector import DomainTask, heatmap_passes, load_unet
from pseudocell.core.metrics import match_points, near_any
from pseudocell.core.parallel import SINGLE, DataParallel
from pseudocell.core.select import admit, curriculum_fraction, empty_points, peak_confidence
from pseudocell.data.points import NEGATIVE_KINDS, POSITIVE_KINDS, points_by_image
from pseudocell.stages import loop
from pseudocell.stages.base import (TRAINING, Human, Input, Labels, Mode, Output, Prepared,
                                    ProgressFn, StageInputs, StageOutputs, StageSpec)
from pseudocell.stages.scale import read_scale, scale_images
from pseudocell.storage import arrays, fs, tables
from pseudocell.storage.layout import join
from pseudocell.validation import check_adapt_inputs

__all__ = ["prepare_domains", "train_adapt_detector", "uncertainty", "curriculum",
           "evaluate_adapt", "ADAPT", "ADAPT_RANKER"]

logger = logging.getLogger(__name__)

#: Radius of a negative label's loss disc on the target, as a fraction of
#: ``mask_radius``: small discs fit between the cells of a dense image, where a full
#: ``mask_radius`` disc (wider than a cell) finds almost no room.
NEG_RADIUS = 0.5


def _neg_radius(cfg: Config) -> float:
    return NEG_RADIUS * cfg.mask_radius


def _empty_labels() -> dict[str, np.ndarray]:
    return {"image_id": np.zeros(0, object), "y": np.zeros(0), "x": np.zeros(0),
            "kind": np.zeros(0, object), "round": np.zeros(0, np.int64),
            "score": np.zeros(0)}


def prepare_domains(inp: StageInputs, cfg: Config) -> StageOutputs:
    """The ``scale`` stage of the adapt modes: one cell size, measured at the source's
    points (:func:`~pseudocell.stages.scale.scale_images`), applied to the source, the
    target and the held-out images; plus round 0's target labels (``points``: none)."""
    out = scale_images(inp, cfg)
    uri = join(inp.out_dir, "points.parquet")
    tables.write_table(uri, _empty_labels())
    return StageOutputs({**out.uris, "points": uri}, out.metrics)


def _augments(cfg: Config, rnd: int) -> bool:
    """Whether round ``rnd``'s detector trains on intensity-jittered crops.

    >>> [_augments(Config(source_training=t), r) for t in ("augment", "augment-round0")
    ...  for r in (0, 1)]
    [True, True, True, False]
    """
    return cfg.source_training == "augment" or (cfg.source_training == "augment-round0"
                                                and rnd == 0)


def train_adapt_detector(inp: StageInputs, cfg: Config, *,
                         parallel: DataParallel = SINGLE,
                         progress: ProgressFn | None = None) -> StageOutputs:
    """The detector of a round: every source image with its points (loss on every
    pixel) and the target images with the labels admitted so far (loss in discs).

    Inputs: ``source_images``, ``images`` (target), ``scale``, ``source_points``,
    ``points`` (target labels), optional ``reviewed`` (tiles a person reviewed) and
    ``init`` (the previous round's model, with ``detector_warm_start``).
    ``cfg.source_training`` = ``augment`` jitters the input intensities
    (``augment-round0``: in round 0 only), ``dann`` adds the domain
    classifier (its accuracy per logging window is the ``domain_accuracy`` series: it
    should hover near 0.5). Outputs ``model``.
    """
    sc = read_scale(inp.uris["scale"])
    src = loop.detector_data(inp.uris["source_images"], sc,
                             tables.read_table(inp.uris["source_points"]), cfg, full_mask=True)
    tgt = loop.detector_data(inp.uris["images"], sc, tables.read_table(inp.uris["points"]),
                             cfg, neg_radius=_neg_radius(cfg),
                             reviewed=loop.reviewed_tiles(inp))
    data = tuple(a + b for a, b in zip(src[:3], tgt[:3]))
    domain = None
    if cfg.source_training == "dann":
        domain = DomainTask(tgt[0], level=cfg.grl_level, grl_lambda=cfg.grl_lambda)
    t0 = time.perf_counter()
    fitted = loop.fit_detector(inp, cfg, sc, data, parallel=parallel, progress=progress,
                               augment=_augments(cfg, inp.round), domain=domain,
                               dropout=cfg.detector_dropout)
    if fitted is None:
        return StageOutputs({}, {})
    path, res = fitted
    metrics = {**loop.loss_series(res, cfg), "n_source": src[3], "n_pos": tgt[3],
               "n_neg": tgt[4]}
    if res.domain_accuracy:
        metrics["domain_accuracy"] = res.domain_accuracy
        metrics["final_domain_accuracy"] = res.domain_accuracy[-1]
    logger.info("train_detector round=%d source points=%d target pos=%d neg=%d "
                "training=%s final_loss=%.5f%s seconds=%.1f", inp.round, src[3], tgt[3],
                tgt[4], cfg.source_training, res.losses[-1],
                f" domain_accuracy={res.domain_accuracy[-1]:.3f}" if res.domain_accuracy
                else "", time.perf_counter() - t0)
    return StageOutputs({"model": path}, metrics)


def uncertainty(inp: StageInputs, cfg: Config) -> StageOutputs:
    """Confidence of every target detection, and confidently empty target places.

    For each target image: ``cfg.mc_passes`` heatmaps (``cfg.uncertainty``: ``tta`` =
    flips/rotations, ``mc-dropout`` = dropout on; see
    :func:`~pseudocell.core.detector.heatmap_passes`), then per detected peak the
    score of :func:`~pseudocell.core.select.peak_confidence` (within
    ``peak_min_distance`` px). Empty places (:func:`~pseudocell.core.select.
    empty_points`, only with ``adapt_negatives > 0``): a grid whose step is a negative
    label's disc radius (:data:`NEG_RADIUS` x ``mask_radius``), where every pass stays
    below half the weakest candidate peak within that radius and no candidate lies
    within that radius plus ``mask_radius``.

    Inputs: ``images``, ``scale``, ``model``, ``peaks`` (detections), ``candidates``.
    Outputs ``scored`` (image_id, y, x, value, confidence, height, spread, freq) and
    ``empty`` (image_id, y, x, value), in original pixels.
    """
    ck = loop.load_model(inp.uris["model"])
    meta = ck["meta"]
    net = load_unet(ck["state_dict"], meta["widths"], cfg.device, meta.get("dropout", 0.0))
    images_uri = inp.uris["images"]
    ids = arrays.stack_ids(images_uri)
    sc = read_scale(inp.uris["scale"])
    peaks = tables.read_table(inp.uris["peaks"])
    cands = tables.read_table(inp.uris["candidates"])
    det, cand = points_by_image(peaks, ids), points_by_image(cands, ids)
    det_val = {i: np.asarray(peaks["value"])[peaks["image_id"].astype(str) == i] for i in ids}
    level = 0.5 * float(np.min(cands["value"])) if len(cands["value"]) else 0.05
    scored: dict[str, list] = {k: [] for k in ("image_id", "y", "x", "value", "confidence",
                                                "height", "spread", "freq")}
    empty: dict[str, list] = {"image_id": [], "y": [], "x": [], "value": []}
    for k, i in enumerate(ids):
        passes = heatmap_passes(net, arrays.read_stack_item(images_uri, k),
                                method=cfg.uncertainty, passes=cfg.mc_passes,
                                seed=inp.seed + k, precision=cfg.precision)
        pts = sc.to_scaled(i, det[i])
        conf = peak_confidence(passes, pts, radius=cfg.peak_min_distance,
                               min_distance=cfg.peak_min_distance)
        scored["image_id"] += [i] * len(pts)
        scored["y"] += det[i][:, 0].tolist()
        scored["x"] += det[i][:, 1].tolist()
        scored["value"] += det_val[i].tolist()
        for key in ("confidence", "height", "spread", "freq"):
            scored[key] += conf[key].tolist()
        if cfg.adapt_negatives <= 0:
            continue  # no negative labels wanted: no empty places to find
        e_pts, e_val = empty_points(passes, sc.to_scaled(i, cand[i]),
                                    spacing=_neg_radius(cfg),
                                    clearance=_neg_radius(cfg) + cfg.mask_radius, level=level)
        e_pts = sc.from_scaled(i, e_pts)
        empty["image_id"] += [i] * len(e_pts)
        empty["y"] += e_pts[:, 0].tolist()
        empty["x"] += e_pts[:, 1].tolist()
        empty["value"] += e_val.tolist()
    uris = {"scored": join(inp.out_dir, "scored.parquet"),
            "empty": join(inp.out_dir, "empty.parquet")}
    tables.write_table(uris["scored"], {
        "image_id": np.array(scored["image_id"], object),
        **{k: np.array(scored[k], np.float64) for k in list(scored)[1:]}})
    tables.write_table(uris["empty"], {"image_id": np.array(empty["image_id"], object),
                                       "y": np.array(empty["y"], np.float64),
                                       "x": np.array(empty["x"], np.float64),
                                       "value": np.array(empty["value"], np.float32)})
    c = np.array(scored["confidence"])
    metrics = {"n_scored": int(len(c)), "mean_confidence": float(c.mean()) if len(c) else 0.0,
               "n_empty": int(len(empty["y"]))}
    logger.info("uncertainty round=%d method=%s passes=%d peaks=%d mean confidence=%.3f "
                "empty places=%d", inp.round, cfg.uncertainty, cfg.mc_passes,
                metrics["n_scored"], metrics["mean_confidence"], metrics["n_empty"])
    return StageOutputs(uris, metrics)


def curriculum(inp: StageInputs, cfg: Config) -> StageOutputs:
    """This round's target labels: the most confident ``adapt_schedule[round]`` of each
    target image's scored peaks (at least ``adapt_min_confidence``) as ``pseudo_pos``
    (per image, so that an image whose cells all score low still gets labels), and per target
    image up to ``adapt_negatives`` x its admitted peaks of its emptiest places as
    ``pseudo_neg``, and the other peaks as ``uncertain`` (drawn into the heatmap target
    without a loss disc of their own, so that an admitted neighbour's disc does not
    teach "background" on them; round = this round, score = confidence or -value).
    They replace the previous round's labels: every round re-admits from its own
    detector.

    Inputs: ``images``, ``scored``, ``empty``. Output ``points`` (a labels table)."""
    ids = arrays.stack_ids(inp.uris["images"])
    scored = tables.read_table(inp.uris["scored"])
    empty = tables.read_table(inp.uris["empty"])
    q = curriculum_fraction(cfg.adapt_schedule, inp.round)
    s_ids = scored["image_id"].astype(str)
    idx = np.sort(np.concatenate([np.zeros(0, int)] + [
        rows[admit(scored["confidence"][rows], q, cfg.adapt_min_confidence)]
        for rows in (np.flatnonzero(s_ids == i) for i in ids)]))
    rest = np.setdiff1d(np.arange(len(scored["confidence"])), idx)
    pos, unsure = tables.take(scored, idx), tables.take(scored, rest)
    n_of = {i: int((pos["image_id"].astype(str) == i).sum()) for i in ids}
    e_ids = empty["image_id"].astype(str)
    neg_rows: list[int] = []
    for i in ids:
        rows = np.flatnonzero(e_ids == i)  # emptiest first (empty_points' order)
        neg_rows += rows[:int(round(cfg.adapt_negatives * n_of[i]))].tolist()
    neg = tables.take(empty, np.array(neg_rows, int))
    n_p, n_n, n_u = len(pos["y"]), len(neg["y"]), len(unsure["y"])
    parts = (pos, neg, unsure)
    labels = {
        "image_id": np.concatenate([t["image_id"] for t in parts]).astype(object),
        "y": np.concatenate([t["y"] for t in parts]).astype(np.float64),
        "x": np.concatenate([t["x"] for t in parts]).astype(np.float64),
        "kind": np.array(["pseudo_pos"] * n_p + ["pseudo_neg"] * n_n + ["uncertain"] * n_u,
                         object),
        "round": np.full(n_p + n_n + n_u, inp.round, np.int64),
        "score": np.concatenate([pos["confidence"], -np.asarray(neg["value"], np.float64),
                                 unsure["confidence"]]),
    }
    uri = join(inp.out_dir, "points.parquet")
    tables.write_table(uri, labels)
    n = len(scored["confidence"])
    metrics = {"schedule_fraction": q, "n_admitted": n_p,
               "admitted_fraction": n_p / n if n else 0.0,
               "mean_admitted_confidence": float(np.mean(pos["confidence"])) if n_p else 0.0,
               "n_pseudo_pos": n_p, "n_pseudo_neg": n_n}
    logger.info("curriculum round=%d admitted %d of %d peaks (schedule %.2f), %d empty places",
                inp.round, n_p, n, q, n_n)
    return StageOutputs({"points": uri}, metrics)


def evaluate_adapt(inp: StageInputs, cfg: Config) -> StageOutputs:
    """The loop's :func:`~pseudocell.stages.loop.evaluate` (target detections against
    ``gt``, held-out against ``eval_gt``) plus, with ``gt`` and this round's labels
    (``points``), the precision of the positive labels (one-to-one within ``radius``)
    and the share of negative labels with no cell within ``radius``."""
    out = loop.evaluate(inp, cfg)
    metrics = dict(out.metrics)
    if "gt" in inp.uris and "points" in inp.uris:
        ids = arrays.stack_ids(inp.uris["images"])
        gt = points_by_image(tables.read_table(inp.uris["gt"]), ids)
        labels = tables.read_table(inp.uris["points"])
        pos = points_by_image(labels, ids, POSITIVE_KINDS)
        neg = points_by_image(labels, ids, NEGATIVE_KINDS)
        tp = sum(match_points(pos[i], gt[i], cfg.radius).tp for i in ids)
        n_pos = sum(len(v) for v in pos.values())
        n_neg = sum(len(v) for v in neg.values())
        bg = sum(int((~near_any(neg[i], gt[i], cfg.radius)).sum()) for i in ids)
        metrics["pseudo_pos_precision"] = tp / n_pos if n_pos else float("nan")
        metrics["pseudo_neg_background_fraction"] = bg / n_neg if n_neg else float("nan")
        fs.write_bytes(out.uris["metrics"], json.dumps(metrics, indent=1,
                                                       sort_keys=True).encode())
    return StageOutputs(out.uris, metrics)


# -- the modes --------------------------------------------------------------------------

#: Config fields read only by ``uncertainty``, only by ``curriculum`` (``adapt_negatives``:
#: by both): the stages before them declare them ignored (see
#: :data:`pseudocell.stages.loop.RANK_FIELDS`), so an ``adapt`` sweep shares round 0.
UNCERTAINTY_FIELDS = frozenset({"uncertainty", "mc_passes"})
CURRICULUM_FIELDS = frozenset({"adapt_schedule", "adapt_min_confidence"})
_BEFORE_UNCERTAINTY = (loop.BEFORE_RANK_IGNORES | UNCERTAINTY_FIELDS | CURRICULUM_FIELDS
                       | {"adapt_negatives"})
#: ... and the arithmetic of prediction, for the stages before it that run none.
_NO_PREDICTION = _BEFORE_UNCERTAINTY | {"precision"}

_IMAGES = Prepared("scale", "images")
_SCALE = Prepared("scale", "scale")
_SCALE_STAGE = StageSpec(
    "scale", prepare_domains, "Predictor", uses_gpu=False,
    inputs={"images": Input("images"), "points": Input("source_points"),
            "source_images": Input("source_images"), "eval_images": Input("eval_images")},
    optional=frozenset({"eval_images"}),
    row={"cell_diameter": "cell_diameter", "scale": "scale"}, ignores=_NO_PREDICTION)
_TRAIN = StageSpec(
    "train_detector", train_adapt_detector, "DetectorTrainer", TRAINING,
    inputs={"images": _IMAGES, "scale": _SCALE, "points": Labels(),
            "source_images": Prepared("scale", "source_images"),
            "source_points": Input("source_points"), "reviewed": Human("tiles"),
            "init": loop.WARM_START},
    optional=frozenset({"reviewed", "init"}), gated={"init": "detector_warm_start"},
    series={"detector_loss": ("detector/loss", "detector_loss_steps"),
            "domain_accuracy": ("detector/domain_accuracy", "detector_loss_steps")},
    row={"n_pos": "labels_pos", "n_neg": "labels_neg",
         "final_domain_accuracy": "domain_accuracy"}, ignores=_NO_PREDICTION)
_UNCERTAINTY = StageSpec(
    "uncertainty", uncertainty, "Predictor",
    inputs={"images": _IMAGES, "scale": _SCALE, "model": Output("train_detector", "model"),
            "peaks": Output("predict", "peaks"),
            "candidates": Output("predict", "candidates")},
    row={"mean_confidence": "mean_confidence"},
    ignores=loop.BEFORE_RANK_IGNORES | CURRICULUM_FIELDS)
_CURRICULUM = StageSpec(
    "curriculum", curriculum, "LabelSelector", uses_gpu=False,
    inputs={"images": _IMAGES, "scored": Output("uncertainty", "scored"),
            "empty": Output("uncertainty", "empty")},
    row={"admitted_fraction": "admitted_fraction", "n_admitted": "n_admitted",
         "mean_admitted_confidence": "mean_admitted_confidence"},
    ignores=loop.BEFORE_RANK_IGNORES | UNCERTAINTY_FIELDS)
_ADMITTED = Output("curriculum", "points")
#: The loop's predict stage on the target, the held-out and the source images; its peak
#: threshold is calibrated on the source, at the source's points (the loop's rule where
#: every cell is known). Calibrated at the admitted target peaks instead, the threshold
#: followed the most confident cells up (0.57 → 0.72 on U2OS → NIH3T3, quick benchmark)
#: and recall fell with it; Otsu's split of the target's peaks alone rose to 0.81.
_PREDICT = replace(
    loop.PREDICT,
    inputs={**{k: v for k, v in loop.PREDICT.inputs.items() if k != "points"},
            "source_images": Prepared("scale", "source_images"),
            "source_points": Input("source_points")},
    optional=loop.PREDICT.optional - {"points"}, ignores=_BEFORE_UNCERTAINTY)

def _evaluate(labels: Output) -> StageSpec:
    """Evaluation of a round whose labels are ``labels``."""
    spec = {**loop.EVAL_SPEC,
            "ignores": loop.EVAL_SPEC["ignores"] | UNCERTAINTY_FIELDS | CURRICULUM_FIELDS
            | {"adapt_negatives"}}
    return StageSpec("evaluate", evaluate_adapt, **spec,
                     inputs={**loop.EVAL_INPUTS, "points": labels})


_FINAL = (_TRAIN, _PREDICT, StageSpec("evaluate", loop.evaluate, **loop.EVAL_SPEC,
                                          inputs=loop.EVAL_INPUTS))
_PRODUCTS = {"model": Output("train_detector", "model"),
             "detections": Output("predict", "peaks"),
             "heldout_detections": Output("predict", "eval_peaks"), "scale": _SCALE}

#: Source → target by pseudo-cell-position heatmaps, uncertainty and a curriculum.
ADAPT = Mode(
    name="adapt",
    before=(_SCALE_STAGE,),
    round_stages=(_TRAIN, _PREDICT, _UNCERTAINTY, _CURRICULUM, _evaluate(_ADMITTED)),
    final_stages=_FINAL,
    initial_labels=Prepared("scale", "points"),
    labels=_ADMITTED,
    products=_PRODUCTS,
    required_inputs=("images", "source_images", "source_points"),
    check_inputs=check_adapt_inputs,
)

#: :data:`ADAPT` whose admitted target peaks are also the positives of the partial
#: loop's PU learner and P-ranker, which add their top alpha / bottom beta of the other
#: target candidates.
ADAPT_RANKER = Mode(
    name="adapt-ranker",
    before=(_SCALE_STAGE,),
    round_stages=(_TRAIN, _PREDICT, _UNCERTAINTY, _CURRICULUM,
                  *loop.ranker_stages(_ADMITTED),
                  _evaluate(Output("update_labels", "points"))),
    final_stages=_FINAL,
    initial_labels=Prepared("scale", "points"),
    labels=Output("update_labels", "points"),
    products=_PRODUCTS,
    required_inputs=("images", "source_images", "source_points"),
    check_inputs=check_adapt_inputs,
)
