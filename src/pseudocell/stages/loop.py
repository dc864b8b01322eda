"""The stages of one round of the partial-annotation pseudo-label loop.

Every function has the signature ``(StageInputs, Config) -> StageOutputs``; it reads its
inputs through :mod:`pseudocell.storage` and writes only inside ``inp.out_dir``.
"""
from __future__ import annotations

import json
import logging
import time

import numpy as np
import torch

from pseudocell.config import Config
from pseudocell.core.detector import load_unet, predict_heatmap, train_detector as _train_det
from pseudocell.core.metrics import match_points, near_any, pooled
from pseudocell.core.patches import crop_patches
from pseudocell.core.peaks import find_peaks
from pseudocell.core.pu import pu_features, train_pu as _train_pu
from pseudocell.core.select import choose, rank_unlabeled
from pseudocell.core.targets import make_target
from pseudocell.stages.base import StageInputs, StageOutputs
from pseudocell.storage import arrays, tables
from pseudocell.storage.layout import join

__all__ = ["train_detector", "predict", "extract_patches", "train_pu", "rank", "select",
           "update_labels", "evaluate", "STAGE_FUNCTIONS", "points_by_image"]

logger = logging.getLogger(__name__)


def points_by_image(table: dict[str, np.ndarray], ids: list[str],
                    kinds: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Split a points table into ``{image_id: (n, 2) float64 (y, x)}`` (every id present)."""
    keep = np.ones(len(table["y"]), bool)
    if kinds is not None and "kind" in table:
        keep &= np.isin(table["kind"].astype(str), kinds)
    img = table["image_id"].astype(str)
    out = {}
    for i in ids:
        m = keep & (img == i)
        out[i] = np.stack([table["y"][m], table["x"][m]], axis=1).astype(np.float64).reshape(-1, 2)
    return out


def _log_every(every: int, stage: str, rnd: int, total: int):
    """Progress callback ``(step, loss)`` that logs every ``every`` steps at INFO."""
    def report(step: int, loss: float) -> None:
        if step % every == 0 or step == total:
            logger.info("%s round=%d step=%d/%d loss=%.5f", stage, rnd, step, total, loss)
    return report


def _save_model(path: str, state: dict, meta: dict) -> None:
    torch.save({"state_dict": state, "meta": meta}, path)


def _load_model(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def train_detector(inp: StageInputs, cfg: Config) -> StageOutputs:
    """Masked-MSE detector on the current labels.

    Inputs: ``images`` (stack), ``points`` (labels table: annotated / pseudo_pos are
    positives, pseudo_neg are negatives). Outputs: ``model`` (model.pt).
    """
    images_uri = inp.uris["images"]
    ids = arrays.stack_ids(images_uri)
    labels = tables.read_table(inp.uris["points"])
    pos = points_by_image(labels, ids, ("annotated", "pseudo_pos"))
    neg = points_by_image(labels, ids, ("pseudo_neg",))
    imgs, tgts, msks = [], [], []
    for k, i in enumerate(ids):
        im = arrays.read_stack_item(images_uri, k)
        t, m = make_target(im.shape, pos[i], neg[i], cfg.sigma, cfg.mask_radius)
        imgs.append(im), tgts.append(t), msks.append(m)
    t0 = time.perf_counter()
    res = _train_det(imgs, tgts, msks, widths=cfg.unet_widths, iters=cfg.detector_iters,
                     batch=cfg.detector_batch, crop=cfg.detector_crop, lr=cfg.detector_lr,
                     seed=inp.seed, device=cfg.device,
                     progress=_log_every(100, "train_detector", inp.round, cfg.detector_iters))
    path = join(inp.out_dir, "model.pt")
    _save_model(path, res.state_dict, {"widths": list(cfg.unet_widths), "sigma": cfg.sigma})
    n_pos = sum(len(v) for v in pos.values())
    n_neg = sum(len(v) for v in neg.values())
    logger.info("train_detector round=%d n_pos=%d n_neg=%d final_loss=%.5f seconds=%.1f",
                inp.round, n_pos, n_neg, res.losses[-1], time.perf_counter() - t0)
    return StageOutputs({"model": path}, {"detector_loss": res.losses, "n_pos": n_pos,
                                          "n_neg": n_neg})


def _predict_stack(model_uri: str, images_uri: str, out_dir: str, cfg: Config,
                   prefix: str = "") -> dict[str, str]:
    """Heatmaps (float16 stack) and peaks table of every image of a stack."""
    ck = _load_model(model_uri)
    net = load_unet(ck["state_dict"], ck["meta"]["widths"], cfg.device)
    ids = arrays.stack_ids(images_uri)
    shapes = arrays.stack_shapes(images_uri)
    hm_uri = join(out_dir, f"{prefix}heatmaps.zarr")
    arrays.create_stack(hm_uri, ids, shapes, dtype="float16")
    cols: dict[str, list] = {"image_id": [], "y": [], "x": [], "value": []}
    for k, i in enumerate(ids):
        h = predict_heatmap(net, arrays.read_stack_item(images_uri, k))
        arrays.write_stack_item(hm_uri, k, h.astype(np.float16))
        pts, vals = find_peaks(h, threshold=cfg.peak_threshold,
                               min_distance=cfg.peak_min_distance, mode=cfg.peak_mode)
        cols["image_id"] += [i] * len(pts)
        cols["y"] += pts[:, 0].tolist()
        cols["x"] += pts[:, 1].tolist()
        cols["value"] += vals.tolist()
    peaks_uri = join(out_dir, f"{prefix}peaks.parquet")
    tables.write_table(peaks_uri, {"image_id": np.array(cols["image_id"], object),
                                   "y": np.array(cols["y"], np.float64),
                                   "x": np.array(cols["x"], np.float64),
                                   "value": np.array(cols["value"], np.float32)})
    return {f"{prefix}heatmaps": hm_uri, f"{prefix}peaks": peaks_uri}


def predict(inp: StageInputs, cfg: Config) -> StageOutputs:
    """Heatmaps and peaks (detections) of the training images; of held-out images too
    when ``eval_images`` is given (those never feed back into the labels)."""
    uris = _predict_stack(inp.uris["model"], inp.uris["images"], inp.out_dir, cfg)
    if "eval_images" in inp.uris:
        uris.update(_predict_stack(inp.uris["model"], inp.uris["eval_images"], inp.out_dir,
                                   cfg, prefix="eval_"))
    n = len(tables.read_table(uris["peaks"])["y"])
    return StageOutputs(uris, {"n_detections": n})


def extract_patches(inp: StageInputs, cfg: Config) -> StageOutputs:
    """Patches at known positives (X_P) and at detections that are no known label (X_U).

    A detection within ``mask_radius`` of a labeled point (positive or negative) is that
    point and is not unlabeled. Outputs ``patches`` (N, 1, S, S) float32 and ``table``
    (patch_id, image_id, y, x, set ∈ {P, U}, peak).
    """
    images_uri = inp.uris["images"]
    ids = arrays.stack_ids(images_uri)
    labels = tables.read_table(inp.uris["points"])
    pos = points_by_image(labels, ids, ("annotated", "pseudo_pos"))
    known = points_by_image(labels, ids)
    peaks = tables.read_table(inp.uris["peaks"])
    det = points_by_image(peaks, ids)
    det_val = {i: peaks["value"][peaks["image_id"].astype(str) == i] for i in ids}
    rows: dict[str, list] = {"image_id": [], "y": [], "x": [], "set": [], "peak": []}
    chunks = []
    for k, i in enumerate(ids):
        im = arrays.read_stack_item(images_uri, k)
        unl = ~near_any(det[i], known[i], cfg.mask_radius)
        pts = np.concatenate([pos[i], det[i][unl]])
        sets = ["P"] * len(pos[i]) + ["U"] * int(unl.sum())
        vals = np.concatenate([np.full(len(pos[i]), np.nan), det_val[i][unl]])
        if len(pts):
            chunks.append(crop_patches(im, pts, cfg.patch_size))
        rows["image_id"] += [i] * len(pts)
        rows["y"] += pts[:, 0].tolist()
        rows["x"] += pts[:, 1].tolist()
        rows["set"] += sets
        rows["peak"] += vals.tolist()
    patches = np.concatenate(chunks) if chunks else np.zeros((0, 1, cfg.patch_size,
                                                              cfg.patch_size), np.float32)
    p_uri = join(inp.out_dir, "patches.zarr")
    t_uri = join(inp.out_dir, "patches.parquet")
    arrays.write_array(p_uri, patches)
    sets = np.array(rows["set"], object)
    tables.write_table(t_uri, {"patch_id": np.arange(len(sets), dtype=np.int64),
                               "image_id": np.array(rows["image_id"], object),
                               "y": np.array(rows["y"]), "x": np.array(rows["x"]),
                               "set": sets, "peak": np.array(rows["peak"])})
    n_p, n_u = int((sets == "P").sum()), int((sets == "U").sum())
    logger.info("extract_patches round=%d n_P=%d n_U=%d", inp.round, n_p, n_u)
    return StageOutputs({"patches": p_uri, "table": t_uri}, {"n_P": n_p, "n_U": n_u})


#: Below this many unlabeled detections a round selects no pseudo-labels.
MIN_UNLABELED = 10


def train_pu(inp: StageInputs, cfg: Config) -> StageOutputs:
    """nnPU CNN on X_P vs X_U; writes the model and penultimate features of all patches.

    With fewer than :data:`MIN_UNLABELED` unlabeled patches (or no positive) there is
    nothing to learn: no model is written, the features are zeros, and the following
    stages select nothing this round.
    """
    table = tables.read_table(inp.uris["table"])
    patches = arrays.read_array(inp.uris["patches"])
    is_p = table["set"].astype(str) == "P"
    n_p, n_u = int(is_p.sum()), int((~is_p).sum())
    f_uri = join(inp.out_dir, "features.zarr")
    s_uri = join(inp.out_dir, "pu_scores.parquet")
    if n_p == 0 or n_u < MIN_UNLABELED:
        logger.warning("train_pu round=%d: n_P=%d n_U=%d is too few to learn from; this round "
                       "adds no pseudo-labels", inp.round, n_p, n_u)
        arrays.write_array(f_uri, np.zeros((len(patches), cfg.pu_feature_dim), np.float32))
        tables.write_table(s_uri, {"patch_id": table["patch_id"],
                                   "pu_score": np.zeros(len(patches), np.float32)})
        return StageOutputs({"features": f_uri, "pu_scores": s_uri}, {"pu_skipped": True})
    res = _train_pu(patches[is_p], patches[~is_p], prior=cfg.pu_prior, epochs=cfg.pu_epochs,
                    lr=cfg.pu_lr, weight_decay=cfg.pu_weight_decay, batch=cfg.pu_batch,
                    feature_dim=cfg.pu_feature_dim, seed=inp.seed, device=cfg.device,
                    progress=_log_every(5, "train_pu", inp.round, cfg.pu_epochs))
    feats, scores = pu_features(res.state_dict, patches, feature_dim=cfg.pu_feature_dim,
                                device=cfg.device)
    m_uri = join(inp.out_dir, "model.pt")
    _save_model(m_uri, res.state_dict, {"feature_dim": cfg.pu_feature_dim, "prior": res.prior})
    arrays.write_array(f_uri, feats)
    tables.write_table(s_uri, {"patch_id": table["patch_id"], "pu_score": scores})
    logger.info("train_pu round=%d prior=%.3f final_risk=%.4f corrected_steps=%d",
                inp.round, res.prior, res.risks[-1], sum(res.corrections))
    return StageOutputs({"model": m_uri, "features": f_uri, "pu_scores": s_uri},
                        {"pu_risk": res.risks, "pu_prior": res.prior,
                         "pu_corrected_steps": int(sum(res.corrections)), "pu_skipped": False})


def rank(inp: StageInputs, cfg: Config) -> StageOutputs:
    """P-ranker score (P vs U) and flipped-ranker score (see ``neg_ranker``) of every
    U patch."""
    table = tables.read_table(inp.uris["table"])
    feats = arrays.read_array(inp.uris["features"])
    is_p = table["set"].astype(str) == "P"
    fp, fu = feats[is_p], feats[~is_p]
    uri = join(inp.out_dir, "scores.parquet")
    if len(fp) == 0 or len(fu) < MIN_UNLABELED:  # see train_pu: nothing to rank
        tables.write_table(uri, {"patch_id": table["patch_id"][:0], "pos_score": np.zeros(0),
                                 "neg_score": np.zeros(0), "peak": np.zeros(0)})
        return StageOutputs({"scores": uri}, {"n_scored": 0})
    s_pos, s_neg = rank_unlabeled(fp, fu, p=cfg.p, lam=cfg.lam, neg_ranker=cfg.neg_ranker,
                                  provisional_top=cfg.provisional_top)
    tables.write_table(uri, {"patch_id": table["patch_id"][~is_p], "pos_score": s_pos,
                             "neg_score": s_neg, "peak": np.asarray(table["peak"])[~is_p]})
    return StageOutputs({"scores": uri}, {"n_scored": int(len(fu))})


def select(inp: StageInputs, cfg: Config) -> StageOutputs:
    """Top ``alpha`` of U by P-score → pos, top ``beta`` by N-score → neg; drop overlaps.

    Negatives are taken only among detections whose peak value is at most the
    ``neg_peak_quantile`` quantile of U's peak values: a confident detection is never
    declared background."""
    s = tables.read_table(inp.uris["scores"])
    peak = s["peak"]
    eligible = peak <= np.quantile(peak, cfg.neg_peak_quantile) if len(peak) else None
    pos, neg = choose(s["pos_score"], s["neg_score"], alpha=cfg.alpha, beta=cfg.beta,
                      neg_eligible=eligible)
    uri = join(inp.out_dir, "selected.parquet")
    tables.write_table(uri, {
        "patch_id": np.concatenate([s["patch_id"][pos], s["patch_id"][neg]]).astype(np.int64),
        "kind": np.array(["pos"] * len(pos) + ["neg"] * len(neg), object),
        "score": np.concatenate([s["pos_score"][pos], s["neg_score"][neg]]),
    })
    logger.info("select round=%d n_pos=%d n_neg=%d", inp.round, len(pos), len(neg))
    return StageOutputs({"selected": uri}, {"n_pseudo_pos": int(len(pos)),
                                            "n_pseudo_neg": int(len(neg))})


def _rows_of(table: dict[str, np.ndarray], patch_ids: np.ndarray) -> np.ndarray:
    """Row indices in a patches ``table`` of the given ``patch_ids`` (int array)."""
    row = {int(pid): k for k, pid in enumerate(table["patch_id"])}
    return np.array([row[int(p)] for p in patch_ids], dtype=int)


def update_labels(inp: StageInputs, cfg: Config) -> StageOutputs:
    """Previous labels plus this round's selections (pseudo-labels accumulate)."""
    labels = tables.read_table(inp.uris["points"])
    sel = tables.read_table(inp.uris["selected"])
    table = tables.read_table(inp.uris["table"])
    idx = _rows_of(table, sel["patch_id"])
    kind = np.where(sel["kind"].astype(str) == "pos", "pseudo_pos", "pseudo_neg").astype(object)
    new = {"image_id": table["image_id"][idx] if len(idx) else np.zeros(0, object),
           "y": table["y"][idx] if len(idx) else np.zeros(0),
           "x": table["x"][idx] if len(idx) else np.zeros(0),
           "kind": kind, "round": np.full(len(idx), inp.round, np.int64),
           "score": np.asarray(sel["score"], np.float64)}
    out = tables.concat_tables({k: labels[k] for k in tables.POINT_COLUMNS}, new)
    uri = join(inp.out_dir, "points.parquet")
    tables.write_table(uri, out)
    counts = {k: int((out["kind"].astype(str) == k).sum())
              for k in ("annotated", "pseudo_pos", "pseudo_neg")}
    return StageOutputs({"points": uri}, {f"total_{k}": v for k, v in counts.items()})


def _score(pred: dict[str, np.ndarray], gt: dict[str, np.ndarray], radius: float) -> dict:
    return pooled([match_points(pred[i], gt[i], radius) for i in gt])


def evaluate(inp: StageInputs, cfg: Config) -> StageOutputs:
    """Detection P/R/F against full ground truth, and the quality of this round's
    pseudo-labels. Needs ``gt`` (training images) and/or ``eval_gt`` (held-out images);
    evaluates at ``cfg.radius`` and at every radius in ``cfg.extra_radii``."""
    radii = [cfg.radius, *cfg.extra_radii]
    metrics: dict = {"round": inp.round}
    ids = arrays.stack_ids(inp.uris["images"])
    if "gt" in inp.uris:
        gt = points_by_image(tables.read_table(inp.uris["gt"]), ids)
        det = points_by_image(tables.read_table(inp.uris["peaks"]), ids)
        for r in radii:
            metrics[f"train@{r:g}"] = _score(det, gt, r)
        if "selected" in inp.uris:
            metrics.update(_pseudo_label_quality(inp, ids, gt, cfg))
    if "eval_gt" in inp.uris and "eval_peaks" in inp.uris:
        eids = arrays.stack_ids(inp.uris["eval_images"])
        egt = points_by_image(tables.read_table(inp.uris["eval_gt"]), eids)
        edet = points_by_image(tables.read_table(inp.uris["eval_peaks"]), eids)
        for r in radii:
            metrics[f"heldout@{r:g}"] = _score(edet, egt, r)
    uri = join(inp.out_dir, "metrics.json")
    with open(uri, "w") as f:
        json.dump(metrics, f, indent=1, sort_keys=True)
    return StageOutputs({"metrics": uri}, metrics)


def _pseudo_label_quality(inp: StageInputs, ids: list[str], gt: dict[str, np.ndarray],
                          cfg: Config) -> dict:
    """Precision of positive pseudo-labels (one-to-one against GT cells not labeled
    before) and the fraction of negative pseudo-labels with no GT cell within radius."""
    sel = tables.read_table(inp.uris["selected"])
    table = tables.read_table(inp.uris["table"])
    prior = points_by_image(tables.read_table(inp.uris["points"]), ids, ("annotated",
                                                                          "pseudo_pos"))
    idx = _rows_of(table, sel["patch_id"])
    sub = tables.take(table, idx) if len(idx) else {k: v[:0] for k, v in table.items()}
    kinds = sel["kind"].astype(str)
    pos = points_by_image({**sub, "kind": kinds}, ids, ("pos",))
    neg = points_by_image({**sub, "kind": kinds}, ids, ("neg",))
    tp = n_pos = n_bg = n_neg = 0
    for i in ids:
        # GT cells that already carry a positive label are not available to new labels
        free = gt[i][~near_any(gt[i], prior[i], cfg.radius)] if len(prior[i]) else gt[i]
        m = match_points(pos[i], free, cfg.radius)
        tp += m.tp
        n_pos += len(pos[i])
        n_neg += len(neg[i])
        n_bg += int((~near_any(neg[i], gt[i], cfg.radius)).sum())
    return {"pseudo_pos_precision": tp / n_pos if n_pos else float("nan"),
            "pseudo_neg_background_fraction": n_bg / n_neg if n_neg else float("nan"),
            "n_pseudo_pos": n_pos, "n_pseudo_neg": n_neg}


#: name → function, in loop order.
STAGE_FUNCTIONS = {
    "train_detector": train_detector, "predict": predict, "extract_patches": extract_patches,
    "train_pu": train_pu, "rank": rank, "select": select, "update_labels": update_labels,
    "evaluate": evaluate,
}
