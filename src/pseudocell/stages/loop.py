"""The partial-annotation pseudo-label loop (Fujii et al. 2021): its stages and its mode.

Every function has the signature ``(StageInputs, Config) -> StageOutputs``; it reads its
inputs through :mod:`pseudocell.storage` and writes only inside ``inp.out_dir``.
:data:`PARTIAL` declares the pipeline (see :mod:`pseudocell.stages.base`).
"""
from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pseudocell.config import Config
from pseudocell.core.detector import LOSS_WINDOW, load_unet, predict_heatmap
from pseudocell.core.detector import train_detector as _train_det
from pseudocell.core.metrics import match_points, near_any, pooled
from pseudocell.core.parallel import SINGLE, DataParallel
from pseudocell.core.patches import crop_patches
from pseudocell.core.peaks import PEAK_FLOOR, calibrate_threshold, find_peaks, values_at
from pseudocell.core.pu import estimate_prior_elkan_noto, iter_pu_features
from pseudocell.core.pu import train_pu as _train_pu
from pseudocell.core.select import background_estimate, blend_ranks, choose, rank_unlabeled
from pseudocell.core.targets import make_target
from pseudocell.data.points import (DECIDED_KINDS, LABEL_KINDS, NEGATIVE_KINDS, POSITIVE_KINDS,
                                     points_by_image)
from pseudocell.runtime import mapped_from
from pseudocell.stages.base import (SHARDED, TRAINING, Human, Input, Labels, Mode, Output, Prepared,
                                    ProgressFn, ShardedStage, StageInputs, StageOutputs,
                                    StageSpec)
from pseudocell.stages.background import add_background
from pseudocell.stages.lazy import Field, LazyItems, RowFile
from pseudocell.stages.scale import ScaleInfo, read_scale, scale_images
from pseudocell.storage import arrays, fs, tables
from pseudocell.storage.layout import join

__all__ = ["train_detector", "predict", "extract_patches", "train_pu", "rank", "select",
           "update_labels", "evaluate", "scale_stage", "ranker_stages", "detector_data",
           "fit_detector", "loss_series", "save_model", "load_model", "PREDICT",
           "EVAL_INPUTS", "EVAL_SPEC", "BACKGROUND", "PARTIAL", "RANK_FIELDS", "SELECT_FIELDS",
           "EVAL_FIELDS", "BEFORE_RANK_IGNORES"]

logger = logging.getLogger(__name__)


def _log_every(every: int, stage: str, rnd: int, total: int,
               progress: ProgressFn | None = None):
    """Progress callback ``(step, loss)`` that logs every ``every`` steps at INFO and
    forwards every call to ``progress(step, total, loss)``."""
    def report(step: int, loss: float) -> None:
        if step % every == 0 or step == total:
            logger.info("%s round=%d step=%d/%d loss=%.5f", stage, rnd, step, total, loss)
        if progress is not None:
            progress(step, total, loss)
    return report


def save_model(uri: str, state: dict, meta: dict) -> None:
    with fs.open_uri(uri, "wb") as f:
        torch.save({"state_dict": state, "meta": meta}, f)


def load_model(uri: str) -> dict:
    with fs.open_uri(uri, "rb") as f:
        return torch.load(f, map_location="cpu", weights_only=True)


def _open_tiles(mask: np.ndarray, sc: ScaleInfo, image_id: str, boxes: np.ndarray) -> None:
    """Set ``mask`` (canonical scale) on every tile ``boxes`` (m, 4: y0, x0, h, w in
    original pixels) of image ``image_id``."""
    for y0, x0, h, w in np.asarray(boxes, np.float64).reshape(-1, 4):
        (a, b), (c, d) = sc.to_scaled(image_id, np.array([[y0, x0], [y0 + h, x0 + w]]))
        mask[max(int(np.floor(a)), 0):max(int(np.ceil(c)), 0),
             max(int(np.floor(b)), 0):max(int(np.ceil(d)), 0)] = True


def detector_data(images_uri: str, sc: ScaleInfo, labels: dict[str, np.ndarray],
                  cfg: Config, *, full_mask: bool = False,
                  neg_radius: float | None = None, reviewed: dict | None = None):
    """Training images, heatmap targets and loss masks of one image stack and its
    ``labels`` (annotated / seed / pseudo_pos / human positives are positives,
    pseudo_neg and human_rejected negatives, uncertain ones drawn without a disc: see
    :func:`~pseudocell.core.targets.make_target`).

    ``full_mask``: the loss covers every pixel (images with every cell labelled, where
    the absence of a label means background); otherwise only discs of ``mask_radius``
    around the labels (``neg_radius`` around negatives, default ``mask_radius``) and
    the tiles a person reviewed (``reviewed``: table image_id, y0, x0, h, w in original
    pixels; every cell there is labelled, so the rest of the tile is background).

    Returns ``(images, targets, masks, n_pos, n_neg)``: the three are sequences of
    (H_i, W_i) arrays (float32, float32, bool) read from the stack and computed on
    demand, the most recently used kept up to a fixed budget
    (:class:`~pseudocell.stages.lazy.LazyItems`), so memory does not grow with the
    number of images.
    """
    reader = arrays.StackReader(images_uri)
    ids = reader.ids
    pos = points_by_image(labels, ids, POSITIVE_KINDS)
    neg = points_by_image(labels, ids, NEGATIVE_KINDS)
    ctx = points_by_image(labels, ids, ("uncertain",))
    boxes = None
    if reviewed is not None and not full_mask:
        rid = np.asarray(reviewed["image_id"]).astype(str)
        cols = np.stack([np.asarray(reviewed[c], np.float64) for c in ("y0", "x0", "h", "w")],
                        axis=1).reshape(-1, 4)
        boxes = {i: cols[rid == i] for i in ids}

    def supervision(k: int) -> tuple[np.ndarray, np.ndarray]:
        i = ids[k]
        t, m = make_target(tuple(reader.shapes[k]), sc.to_scaled(i, pos[i]),
                           sc.to_scaled(i, neg[i]), cfg.sigma, cfg.mask_radius, neg_radius,
                           sc.to_scaled(i, ctx[i]))
        if full_mask:
            m = np.ones_like(m)
        elif boxes is not None:
            _open_tiles(m, sc, i, boxes[i])
        return t, m

    imgs = LazyItems(len(ids), reader.read)
    sup = LazyItems(len(ids), supervision)
    return (imgs, Field(sup, 0), Field(sup, 1), sum(len(v) for v in pos.values()),
            sum(len(v) for v in neg.values()))


def fit_detector(inp: StageInputs, cfg: Config, sc: ScaleInfo, data: tuple, *,
                 parallel: DataParallel = SINGLE, progress: ProgressFn | None = None,
                 stage: str = "train_detector", **train_kw) -> tuple[str, object] | None:
    """Train the detector on ``data`` = (images, targets, masks) and save ``model.pt``
    (its meta holds the widths, sigma, scale and dropout); with input ``init`` (a
    previous model, :attr:`~pseudocell.config.Config.detector_warm_start`) training
    starts from its weights. ``train_kw`` go to
    :func:`pseudocell.core.detector.train_detector` (``augment``, ``domain``,
    ``dropout``). Returns ``(model URI, DetectorTrainResult)``, or None on a
    data-parallel worker that is not the main one."""
    imgs, tgts, msks = data[:3]
    if "init" in inp.uris:  # detector_warm_start: the previous round's weights
        train_kw["init_state"] = load_model(inp.uris["init"])["state_dict"]
    res = _train_det(imgs, tgts, msks, widths=cfg.unet_widths, iters=cfg.detector_iters,
                     batch=cfg.detector_batch, crop=cfg.detector_crop, lr=cfg.detector_lr,
                     seed=inp.seed, device=parallel.device or cfg.device, parallel=parallel,
                     head_init=cfg.detector_head_init or "default",
                     progress=_log_every(100, stage, inp.round, cfg.detector_iters,
                                         progress), **train_kw)
    if not parallel.is_main:
        return None
    path = join(inp.out_dir, "model.pt")
    meta = {"widths": list(cfg.unet_widths), "sigma": cfg.sigma, "scale": sc.scale,
            "cell_diameter": sc.diameter}
    if train_kw.get("dropout"):
        meta["dropout"] = float(train_kw["dropout"])
    save_model(path, res.state_dict, meta)
    return path, res


def loss_series(res, cfg: Config) -> dict:
    """The detector's loss per logging window and the step each window ends at."""
    steps = [min((k + 1) * LOSS_WINDOW, cfg.detector_iters) for k in range(len(res.losses))]
    return {"detector_loss": res.losses, "detector_loss_steps": steps}


def reviewed_tiles(inp: StageInputs) -> dict | None:
    """The tiles a person reviewed (input ``reviewed``, present when a review applies to
    the round), or None."""
    uri = inp.uris.get("reviewed")
    if uri is None:
        return None
    t = tables.read_table(uri)
    return {k: v[np.asarray(t["reviewed"], bool)] for k, v in t.items()}


def train_detector(inp: StageInputs, cfg: Config, *, parallel: DataParallel = SINGLE,
                   progress: ProgressFn | None = None) -> StageOutputs:
    """Masked-MSE detector on the current labels.

    Inputs: ``images`` (stack at the canonical scale), ``scale`` (scale.json), ``points``
    (labels table in original pixels: annotated / seed / pseudo_pos are positives, pseudo_neg
    are negatives), optional ``reviewed`` (tiles a person reviewed) and ``init`` (the
    previous round's model, with ``detector_warm_start``). Outputs: ``model`` (model.pt;
    its meta holds the scale).

    ``progress(step, iters, loss)`` is called every :data:`~pseudocell.core.detector.
    LOSS_WINDOW` steps (on every data-parallel worker).

    Under data-parallel training (``parallel``, set by the Ray executor's Ray Train
    path) every worker runs this function; only the main worker writes outputs, the
    others return empty outputs.
    """
    sc = read_scale(inp.uris["scale"])
    data = detector_data(inp.uris["images"], sc, tables.read_table(inp.uris["points"]), cfg,
                         reviewed=reviewed_tiles(inp))
    t0 = time.perf_counter()
    fitted = fit_detector(inp, cfg, sc, data, parallel=parallel, progress=progress)
    if fitted is None:
        return StageOutputs({}, {})
    path, res = fitted
    n_pos, n_neg = data[3], data[4]
    logger.info("train_detector round=%d n_pos=%d n_neg=%d final_loss=%.5f seconds=%.1f",
                inp.round, n_pos, n_neg, res.losses[-1], time.perf_counter() - t0)
    return StageOutputs({"model": path}, {**loss_series(res, cfg), "n_pos": n_pos,
                                          "n_neg": n_neg})


def _split(n: int, parts: int) -> list[list[int]]:
    """``range(n)`` cut into at most ``parts`` contiguous, non-empty pieces."""
    return [a.tolist() for a in np.array_split(np.arange(n), max(1, min(parts, n))) if len(a)]


def _part_uri(out_dir: str, name: str, shard: int) -> str:
    return join(out_dir, "_parts", f"{name}-{shard:05d}.parquet")


def _concat_parts(parts: list[str], empty: dict) -> dict[str, np.ndarray]:
    """The shard tables ``parts`` concatenated in the given order (``empty`` if none has
    rows)."""
    tabs = [tables.read_table(u) for u in parts]
    tabs = [t for t in tabs if len(next(iter(t.values())))]
    return tables.concat_tables(*tabs) if tabs else empty


_EMPTY_PEAKS = {"image_id": np.zeros(0, object), "y": np.zeros(0), "x": np.zeros(0),
                "value": np.zeros(0, np.float32)}


def predict_plan(inp: StageInputs, cfg: Config, n_shards: int) -> list[dict]:
    """Create the pre-sized heatmap stacks; return the work items (image index lists).

    Each work item covers whole chunks (one chunk per image), so items can run in any
    order, in parallel, without two writers touching one chunk.
    """
    items = []
    for prefix, key in (("", "images"), ("eval_", "eval_images"), ("source_", "source_images")):
        if key not in inp.uris:
            continue
        uri = inp.uris[key]
        ids, shapes = arrays.stack_ids(uri), arrays.stack_shapes(uri)
        arrays.create_stack(join(inp.out_dir, f"{prefix}heatmaps.zarr"), ids, shapes,
                            dtype="float16")
        items += [{"prefix": prefix, "images": key, "indices": idx}
                  for idx in _split(len(ids), n_shards)]
    for k, item in enumerate(items):
        item["shard"] = k
    return items


def predict_shard(inp: StageInputs, cfg: Config, item: dict, *,
                  device: str | None = None) -> dict:
    """Heatmaps of the images of one work item (written into their chunks), their
    candidate peaks (written as a part table, in original-image pixels) and, on training
    images, the heatmap maxima at the known positives (for the calibrated threshold).
    Returns ``{"part": uri, "prefix": str, "shard": int, "pos_values": [float]}``."""
    ck = load_model(inp.uris["model"])
    net = load_unet(ck["state_dict"], ck["meta"]["widths"], device or cfg.device)
    images_uri = inp.uris[item["images"]]
    ids = arrays.stack_ids(images_uri)
    sc = read_scale(inp.uris["scale"])
    pos = {}
    known = {"": "points", "source_": "source_points"}.get(item["prefix"])
    if known in inp.uris:
        pos = points_by_image(tables.read_table(inp.uris[known]), ids, POSITIVE_KINDS)
    threshold = PEAK_FLOOR if cfg.peak_threshold is None else \
        cfg.unlabeled_ratio * cfg.peak_threshold
    hm_uri = join(inp.out_dir, f"{item['prefix']}heatmaps.zarr")
    cols: dict[str, list] = {"image_id": [], "y": [], "x": [], "value": []}
    pos_values: list[float] = []
    for k in item["indices"]:
        h = predict_heatmap(net, arrays.read_stack_item(images_uri, k),
                            precision=cfg.precision)
        arrays.write_stack_item(hm_uri, k, h.astype(np.float16))
        pts, vals = find_peaks(h, threshold=threshold,
                               min_distance=cfg.peak_min_distance, mode=cfg.peak_mode)
        if ids[k] in pos:
            pos_values += values_at(h, sc.to_scaled(ids[k], pos[ids[k]]),
                                    cfg.peak_min_distance).tolist()
        pts = sc.from_scaled(ids[k], pts)
        cols["image_id"] += [ids[k]] * len(pts)
        cols["y"] += pts[:, 0].tolist()
        cols["x"] += pts[:, 1].tolist()
        cols["value"] += vals.tolist()
    part = _part_uri(inp.out_dir, f"{item['prefix']}peaks", item["shard"])
    tables.write_table(part, {"image_id": np.array(cols["image_id"], object),
                              "y": np.array(cols["y"], np.float64),
                              "x": np.array(cols["x"], np.float64),
                              "value": np.array(cols["value"], np.float32)})
    return {"part": part, "prefix": item["prefix"], "shard": item["shard"],
            "pos_values": pos_values}


def predict_merge(inp: StageInputs, cfg: Config, results: list[dict]) -> StageOutputs:
    """Peaks tables from the parts (in image order); outputs of :func:`predict`:
    ``peaks`` (the detections: local maxima >= the peak threshold) and ``candidates``
    (>= ``unlabeled_ratio`` x the threshold: the unlabeled set X_U comes from them, so
    that it holds the doubtful band just below the threshold where background
    detections live), both in original pixels, and ``eval_`` versions of both.

    With ``peak_threshold=None`` the threshold is calibrated on the training images only
    (:func:`~pseudocell.core.peaks.calibrate_threshold`: candidate peak values and the
    heatmap maxima at the labels' positives) and applied to held-out images as well.
    With ``source_images`` (the adapt modes) it is calibrated on them instead, at their
    ``source_points``: the one set whose every cell is known."""
    uris = {}
    results = sorted(results, key=lambda r: r["shard"])  # shards may finish in any order
    merged = {}
    for prefix in dict.fromkeys(r["prefix"] for r in results):
        parts = [r["part"] for r in results if r["prefix"] == prefix]
        uris[f"{prefix}heatmaps"] = join(inp.out_dir, f"{prefix}heatmaps.zarr")
        merged[prefix] = _concat_parts(parts, _EMPTY_PEAKS)
    fs.remove(join(inp.out_dir, "_parts"))
    metrics: dict = {}
    threshold = cfg.peak_threshold
    if threshold is None and cfg.peak_mode == "absolute":
        on = "source_" if "source_" in merged else ""
        pos_values = np.array([v for r in results if r["prefix"] == on
                               for v in r.get("pos_values", [])])
        threshold = calibrate_threshold(merged[on]["value"], pos_values, recall=cfg.peak_recall)
        logger.info("predict round=%d calibrated peak threshold %.3f (%d candidates, %d "
                    "known positives, %s images)", inp.round, threshold, len(merged[on]["value"]),
                    len(pos_values), "source" if on else "training")
        metrics["peak_threshold"] = threshold
    for prefix, table in merged.items():
        cands, det = table, table
        if threshold is not None:
            cands = tables.take(table, np.flatnonzero(
                table["value"] >= cfg.unlabeled_ratio * threshold))
            det = tables.take(table, np.flatnonzero(table["value"] >= threshold))
        for name, t in (("peaks", det), ("candidates", cands)):
            uris[f"{prefix}{name}"] = join(inp.out_dir, f"{prefix}{name}.parquet")
            tables.write_table(uris[f"{prefix}{name}"], t)
        if prefix == "":
            metrics["n_detections"] = len(det["y"])
            metrics["n_candidates"] = len(cands["y"])
    return StageOutputs(uris, metrics)


def predict(inp: StageInputs, cfg: Config) -> StageOutputs:
    """Heatmaps and peaks (detections) of the training images; of held-out images too
    when ``eval_images`` is given (those never feed back into the labels).

    Runs :func:`predict_plan`, every :func:`predict_shard`, :func:`predict_merge`; the
    Ray executor runs the shards in parallel and gets the same bytes."""
    items = predict_plan(inp, cfg, 1)
    return predict_merge(inp, cfg, [predict_shard(inp, cfg, it) for it in items])


#: Rows of one chunk of the patches array (and the unit of parallel work).
PATCH_CHUNK = 1024


def extract_patches_plan(inp: StageInputs, cfg: Config, n_shards: int) -> list[dict]:
    """Decide every patch position (tables only, no pixels), write the patch table and a
    pre-sized ``(N, 1, S, S)`` patches array; return work items of whole chunks.

    A detection within ``mask_radius`` of a labeled point (positive or negative) is that
    point and is not unlabeled.
    """
    ids = arrays.stack_ids(inp.uris["images"])
    near = read_scale(inp.uris["scale"]).length(cfg.mask_radius)  # original px
    labels = tables.read_table(inp.uris["points"])
    pos = points_by_image(labels, ids, POSITIVE_KINDS)
    known = points_by_image(labels, ids, DECIDED_KINDS)
    peaks = tables.read_table(inp.uris["peaks"])
    det = points_by_image(peaks, ids)
    det_val = {i: peaks["value"][peaks["image_id"].astype(str) == i] for i in ids}
    rows: dict[str, list] = {"image_id": [], "y": [], "x": [], "set": [], "peak": []}
    for i in ids:
        unl = ~near_any(det[i], known[i], near)
        pts = np.concatenate([pos[i], det[i][unl]])
        vals = np.concatenate([np.full(len(pos[i]), np.nan), det_val[i][unl]])
        rows["image_id"] += [i] * len(pts)
        rows["y"] += pts[:, 0].tolist()
        rows["x"] += pts[:, 1].tolist()
        rows["set"] += ["P"] * len(pos[i]) + ["U"] * int(unl.sum())
        rows["peak"] += vals.tolist()
    sets = np.array(rows["set"], object)
    n = len(sets)
    tables.write_table(join(inp.out_dir, "patches.parquet"), {
        "patch_id": np.arange(n, dtype=np.int64), "image_id": np.array(rows["image_id"], object),
        "y": np.array(rows["y"]), "x": np.array(rows["x"]), "set": sets,
        "peak": np.array(rows["peak"])})
    chunk = max(1, min(PATCH_CHUNK, n))
    arrays.create_array(join(inp.out_dir, "patches.zarr"),
                        (n, 1, cfg.patch_size, cfg.patch_size), chunk, "float32")
    n_chunks = -(-n // chunk)
    return [{"shard": k, "rows": [c[0] * chunk, min(n, (c[-1] + 1) * chunk)]}
            for k, c in enumerate(_split(n_chunks, n_shards))]


def extract_patches_shard(inp: StageInputs, cfg: Config, item: dict, *,
                          device: str | None = None) -> dict:
    """Crop the patches of rows ``item["rows"]`` = [start, stop) (whole chunks), one
    chunk at a time (memory: one chunk and one image, whatever the item's size)."""
    start, stop = item["rows"]
    table = tables.read_table(join(inp.out_dir, "patches.parquet"))
    reader = arrays.StackReader(inp.uris["images"])
    images = LazyItems(len(reader), reader.read, budget=0)  # rows are grouped by image
    sc = read_scale(inp.uris["scale"])
    index = {i: k for k, i in enumerate(reader.ids)}
    out_uri = join(inp.out_dir, "patches.zarr")
    chunk = arrays.array_info(out_uri)["chunk_rows"]
    for a in range(start, stop, chunk):
        b = min(a + chunk, stop)
        img = table["image_id"][a:b].astype(str)
        pts = np.stack([table["y"][a:b], table["x"][a:b]], axis=1)
        block = np.zeros((b - a, 1, cfg.patch_size, cfg.patch_size), np.float32)
        for i in dict.fromkeys(img):
            m = img == i
            block[m] = crop_patches(images[index[i]], sc.to_scaled(i, pts[m]), cfg.patch_size)
        arrays.write_rows(out_uri, a, block)
    return {"rows": [start, stop]}


def extract_patches_merge(inp: StageInputs, cfg: Config, results: list[dict]) -> StageOutputs:
    """Outputs of :func:`extract_patches` once every chunk is written."""
    t_uri = join(inp.out_dir, "patches.parquet")
    sets = tables.read_table(t_uri)["set"].astype(str)
    covered = sum(r["rows"][1] - r["rows"][0] for r in results)
    if covered != len(sets):
        raise RuntimeError(f"extract_patches: shards wrote {covered} of {len(sets)} rows")
    n_p, n_u = int((sets == "P").sum()), int((sets == "U").sum())
    logger.info("extract_patches round=%d n_P=%d n_U=%d", inp.round, n_p, n_u)
    return StageOutputs({"patches": join(inp.out_dir, "patches.zarr"), "table": t_uri},
                        {"n_P": n_p, "n_U": n_u})


def extract_patches(inp: StageInputs, cfg: Config) -> StageOutputs:
    """Patches at known positives (X_P) and at detections that are no known label (X_U).

    Outputs ``patches`` (N, 1, S, S) float32 and ``table`` (patch_id, image_id, y, x,
    set ∈ {P, U}, peak). Runs plan, shards and merge in this process (see
    :func:`predict`)."""
    items = extract_patches_plan(inp, cfg, 1)
    return extract_patches_merge(inp, cfg, [extract_patches_shard(inp, cfg, it)
                                            for it in items])


#: Below this many unlabeled detections a round selects no pseudo-labels.
MIN_UNLABELED = 10


def train_pu(inp: StageInputs, cfg: Config, *, parallel: DataParallel = SINGLE,
             progress: ProgressFn | None = None) -> StageOutputs:
    """nnPU CNN on X_P vs X_U; writes the model and penultimate features of all patches.

    Data-parallel workers (``parallel``) each train on their slice of every batch; only
    the main worker computes features and writes outputs. ``progress(epoch, epochs,
    risk)`` is called after every epoch.

    With fewer than :data:`MIN_UNLABELED` unlabeled patches (or no positive) there is
    nothing to learn: no model is written, the features are zeros, and the following
    stages select nothing this round.
    """
    table = tables.read_table(inp.uris["table"])
    is_p = table["set"].astype(str) == "P"
    n_p, n_u = int(is_p.sum()), int((~is_p).sum())
    f_uri = join(inp.out_dir, "features.zarr")
    s_uri = join(inp.out_dir, "pu_scores.parquet")
    if (n_p == 0 or n_u < MIN_UNLABELED) and not parallel.is_main:
        return StageOutputs({}, {})
    if n_p == 0 or n_u < MIN_UNLABELED:
        logger.warning("train_pu round=%d: n_P=%d n_U=%d is too few to learn from; this round "
                       "adds no pseudo-labels", inp.round, n_p, n_u)
        arrays.write_array(f_uri, np.zeros((len(is_p), cfg.pu_feature_dim), np.float32))
        tables.write_table(s_uri, {"patch_id": table["patch_id"],
                                   "pu_score": np.zeros(len(is_p), np.float32)})
        return StageOutputs({"features": f_uri, "pu_scores": s_uri}, {"pu_skipped": True})
    # the patches are copied once into a local row file and read batch by batch, and
    # per-batch tensors are mapped on their own (runtime.mapped_from): memory does not
    # grow with their number
    with tempfile.TemporaryDirectory(prefix="pseudocell-pu-") as tmp, \
            _row_file(inp.uris["patches"], Path(tmp) / "patches.raw") as rows, \
            mapped_from(PU_MAPPED_FROM):
        xp, xu = rows.take(np.flatnonzero(is_p)), rows.take(np.flatnonzero(~is_p))
        prior = cfg.pu_prior  # every data-parallel worker estimates the same (seeded) value
        if prior is None and cfg.pu_prior_estimate == "elkan-noto":
            sp, su = _prior_sample(is_p, PRIOR_SAMPLE, inp.seed)
            prior = estimate_prior_elkan_noto(rows[sp], rows[su], inp.seed)
        res = _train_pu(xp, xu, prior=prior, epochs=cfg.pu_epochs,
                        lr=cfg.pu_lr, weight_decay=cfg.pu_weight_decay, batch=cfg.pu_batch,
                        feature_dim=cfg.pu_feature_dim, seed=inp.seed,
                        device=parallel.device or cfg.device, parallel=parallel,
                        progress=_log_every(5, "train_pu", inp.round, cfg.pu_epochs, progress))
        if not parallel.is_main:
            return StageOutputs({}, {})
        chunk = min(1024, len(rows))
        arrays.create_array(f_uri, (len(rows), cfg.pu_feature_dim), chunk)
        scores, start = [], 0
        pending = np.zeros((0, cfg.pu_feature_dim), np.float32)  # written in whole chunks
        for f, sc in iter_pu_features(res.state_dict, rows, feature_dim=cfg.pu_feature_dim,
                                      device=parallel.device or cfg.device, batch=FEATURE_BATCH):
            pending = np.concatenate([pending, f])
            whole = len(pending) - len(pending) % chunk
            if whole:
                arrays.write_rows(f_uri, start, pending[:whole])
                start, pending = start + whole, pending[whole:]
            scores.append(sc)
        arrays.write_rows(f_uri, start, pending)
    m_uri = join(inp.out_dir, "model.pt")
    save_model(m_uri, res.state_dict, {"feature_dim": cfg.pu_feature_dim, "prior": res.prior})
    tables.write_table(s_uri, {"patch_id": table["patch_id"], "pu_score": np.concatenate(scores)})
    logger.info("train_pu round=%d prior=%.3f final_risk=%.4f corrected_steps=%d",
                inp.round, res.prior, res.risks[-1], sum(res.corrections))
    return StageOutputs({"model": m_uri, "features": f_uri, "pu_scores": s_uri},
                        {"pu_risk": res.risks, "pu_prior": res.prior,
                         "pu_corrected_steps": int(sum(res.corrections)), "pu_skipped": False})


#: Patches per forward pass when train_pu computes features: the same bytes as any other
#: size (eval mode), and the transient activations stay small (2,048 held ~90 MB more at
#: the peak of a 160-image round, and was slower on the CPU: 1.25 s against 0.69 s for
#: 5,000 patches).
FEATURE_BATCH = 256
#: Blocks of at least this many bytes are mapped on their own while train_pu runs (a
#: 160-image round's peak: 1050 MB without, 791 MB with; train_pu as fast).
PU_MAPPED_FROM = 4 << 20

#: At most this many patches (P and U together, drawn at random, seeded) estimate the
#: class prior (Elkan-Noto's logistic regression holds them all as float64).
PRIOR_SAMPLE = 8192


def _prior_sample(is_p: np.ndarray, cap: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of P and of U (increasing) that estimate the prior: all of them when there
    are at most ``cap``, else ``cap`` drawn uniformly (seeded) without replacement."""
    rows = np.arange(len(is_p))
    if len(rows) > cap:
        rows = np.sort(np.random.default_rng(seed).choice(rows, cap, replace=False))
    return rows[is_p[rows]], rows[~is_p[rows]]


def _row_file(uri: str, path: Path) -> RowFile:
    """A :class:`~pseudocell.stages.lazy.RowFile` of the array at ``uri``, copied chunk
    by chunk."""
    meta = arrays.array_info(uri)
    return RowFile(path, arrays.iter_rows(uri), meta["shape"][1:], meta["dtype"])


def rank(inp: StageInputs, cfg: Config) -> StageOutputs:
    """P-ranker score (P vs U) and flipped-ranker score (see ``neg_ranker``) of every
    U patch."""
    table = tables.read_table(inp.uris["table"])
    is_p = table["set"].astype(str) == "P"
    n_p, n_u = int(is_p.sum()), int((~is_p).sum())
    uri = join(inp.out_dir, "scores.parquet")
    if n_p == 0 or n_u < MIN_UNLABELED:  # see train_pu: nothing to rank
        tables.write_table(uri, {"patch_id": table["patch_id"][:0], "pos_score": np.zeros(0),
                                 "neg_score": np.zeros(0), "peak": np.zeros(0)})
        return StageOutputs({"scores": uri}, {"n_scored": 0})
    # P's and U's features each in a local row file, read as the ranker needs them (in
    # memory below core.ranker.BLOCK_ROWS rows, streamed in blocks above). Two files, not
    # one file's scattered rows: a streamed loss evaluation then reads each block in
    # one call (scattered, the 90,000 features of 640 images took 83 s to rank); both
    # written in one pass over the array (one download from an object store)
    meta = arrays.array_info(inp.uris["features"])
    with tempfile.TemporaryDirectory(prefix="pseudocell-rank-") as tmp:
        x_p, x_u = RowFile.split((Path(tmp) / "p.raw", Path(tmp) / "u.raw"),
                                 arrays.iter_rows(inp.uris["features"]), is_p,
                                 meta["shape"][1:], meta["dtype"])
        with x_p, x_u:
            s_pos, s_neg = rank_unlabeled(x_p, x_u, p=cfg.p, lam=cfg.lam,
                                          neg_ranker=cfg.neg_ranker,
                                          provisional_top=cfg.provisional_top)
    tables.write_table(uri, {"patch_id": table["patch_id"][~is_p], "pos_score": s_pos,
                             "neg_score": s_neg, "peak": np.asarray(table["peak"])[~is_p]})
    return StageOutputs({"scores": uri}, {"n_scored": n_u})


def select(inp: StageInputs, cfg: Config) -> StageOutputs:
    """Top ``alpha`` of U by P-score → pos, top ``beta`` by N-score → neg; drop overlaps.

    Negatives are taken only among detections whose peak value is at most the
    ``neg_peak_quantile`` quantile of U's peak values: a confident detection is never
    declared background. With ``pu_agree`` a pseudo-label must also agree with the
    nnPU classifier of this round (positive: PU score > 0; negative: < 0), so a round
    whose U holds few background detections adds few negatives. With ``neg_cap`` at
    most ``neg_cap`` x the estimated background of U are negatives (the highest
    N-scores; the estimate from U's peaks and the round's detections, ``peaks``). With
    ``peak_rank_weight`` both orders blend in the detector's peak height
    (:func:`~pseudocell.core.select.blend_ranks`)."""
    s = tables.read_table(inp.uris["scores"])
    peak = s["peak"]
    pos_order, neg_order = s["pos_score"], s["neg_score"]
    if cfg.peak_rank_weight is not None:
        pos_order = blend_ranks(pos_order, peak, cfg.peak_rank_weight)
        neg_order = blend_ranks(neg_order, -np.asarray(peak), cfg.peak_rank_weight)
    eligible = peak <= np.quantile(peak, cfg.neg_peak_quantile) if len(peak) else None
    pos_ok = None
    if cfg.pu_agree and len(peak) and "pu_scores" in inp.uris:
        pu = tables.read_table(inp.uris["pu_scores"])
        score = np.asarray(pu["pu_score"])[_rows_of(pu, s["patch_id"])]
        eligible = eligible & (score < 0)
        pos_ok = score > 0
    pos, neg = choose(pos_order, neg_order, alpha=cfg.alpha, beta=cfg.beta,
                      neg_eligible=eligible, pos_eligible=pos_ok)
    metrics = {}
    if cfg.neg_cap is not None:
        # every candidate at or above the threshold is a detection: the lowest
        # detection's value separates U's detections from the band below them
        det = tables.read_table(inp.uris["peaks"])["value"]
        threshold = float(np.min(det)) if len(det) else np.inf
        est = background_estimate(peak, threshold, cfg.peak_recall)
        metrics["neg_background_estimate"] = est
        neg = neg[:int(np.floor(cfg.neg_cap * est))]  # ``neg`` is in its ranking's order
    uri = join(inp.out_dir, "selected.parquet")
    tables.write_table(uri, {
        "patch_id": np.concatenate([s["patch_id"][pos], s["patch_id"][neg]]).astype(np.int64),
        "kind": np.array(["pos"] * len(pos) + ["neg"] * len(neg), object),
        "score": np.concatenate([s["pos_score"][pos], s["neg_score"][neg]]),
    })
    logger.info("select round=%d n_pos=%d n_neg=%d", inp.round, len(pos), len(neg))
    return StageOutputs({"selected": uri}, {"n_pseudo_pos": int(len(pos)),
                                            "n_pseudo_neg": int(len(neg)), **metrics})


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
    kinds = out["kind"].astype(str)
    counts = {k: int((kinds == k).sum()) for k in LABEL_KINDS  # seeds, uncertain, human:
              if k in ("annotated", "pseudo_pos", "pseudo_neg")    # only in their runs
              or (kinds == k).any()}
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
    fs.write_bytes(uri, json.dumps(metrics, indent=1, sort_keys=True).encode())
    return StageOutputs({"metrics": uri}, metrics)


def _pseudo_label_quality(inp: StageInputs, ids: list[str], gt: dict[str, np.ndarray],
                          cfg: Config) -> dict:
    """Precision of positive pseudo-labels (one-to-one against GT cells not labeled
    before) and the fraction of negative pseudo-labels with no GT cell within radius."""
    sel = tables.read_table(inp.uris["selected"])
    table = tables.read_table(inp.uris["table"])
    prior = points_by_image(tables.read_table(inp.uris["points"]), ids, POSITIVE_KINDS)
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


# -- the mode ---------------------------------------------------------------------------

#: Config fields only ``rank`` reads, only ``select`` reads, only ``evaluate`` reads: the
#: other stages declare them in :attr:`~pseudocell.stages.base.StageSpec.ignores`, so
#: that a sweep over them shares everything before ``rank`` (round 0's detector and PU
#: learner) between its trials.
RANK_FIELDS = frozenset({"p", "lam", "neg_ranker", "provisional_top"})
SELECT_FIELDS = frozenset({"alpha", "beta", "neg_peak_quantile", "pu_agree", "neg_cap",
                           "peak_rank_weight"})
EVAL_FIELDS = frozenset({"radius", "extra_radii"})
#: What every stage before ``rank`` ignores.
BEFORE_RANK_IGNORES = RANK_FIELDS | SELECT_FIELDS | EVAL_FIELDS
#: ... and what those of them that run no prediction ignore too (the arithmetic of
#: prediction: a sweep or a rerun in bfloat16 shares their outputs with float32's).
NO_PREDICTION_IGNORES = BEFORE_RANK_IGNORES | {"precision"}

_IMAGES = Prepared("scale", "images")
_SCALE = Prepared("scale", "scale")
_TABLE = Output("extract_patches", "table")
#: The previous round's detector: where a round's training starts with
#: ``detector_warm_start`` (absent in round 0).
WARM_START = Output("train_detector", "model", -1)
_TRAIN_DETECTOR = StageSpec(
    "train_detector", train_detector, "DetectorTrainer", TRAINING,
    inputs={"images": _IMAGES, "scale": _SCALE, "points": Labels(),
            "reviewed": Human("tiles"), "init": WARM_START},
    optional=frozenset({"reviewed", "init"}), gated={"init": "detector_warm_start"},
    series={"detector_loss": ("detector/loss", "detector_loss_steps")},
    row={"n_pos": "labels_pos", "n_neg": "labels_neg"}, ignores=NO_PREDICTION_IGNORES)
#: The predict stage (its model: this round's ``train_detector``).
PREDICT = StageSpec(
    "predict", predict, "Predictor", SHARDED,
    inputs={"images": _IMAGES, "scale": _SCALE, "model": Output("train_detector", "model"),
            "points": Labels(), "eval_images": Prepared("scale", "eval_images")},
    optional=frozenset({"eval_images", "points"}),
    row={"peak_threshold": "peak_threshold", "n_detections": "n_detections"},
    shards=ShardedStage(predict_plan, predict_shard, predict_merge),
    ignores=BEFORE_RANK_IGNORES)
#: The evaluation stage's inputs and settings (modes add ``points``, ``selected`` ...).
EVAL_INPUTS = {"images": _IMAGES, "peaks": Output("predict", "peaks"), "gt": Input("gt"),
               "eval_images": Prepared("scale", "eval_images"), "eval_gt": Input("eval_gt"),
               "eval_peaks": Output("predict", "eval_peaks")}
EVAL_SPEC = dict(actor="LabelSelector", run_if_any=("gt", "eval_gt"), uses_gpu=False,
                 optional=frozenset({"gt", "eval_images", "eval_gt", "eval_peaks"}),
                 journal_scalars=False, row="*", ignores=RANK_FIELDS | SELECT_FIELDS)


def scale_stage(points: Input | Output) -> StageSpec:
    """The ``scale`` stage of a mode whose clicks (or seed points) are ``points``: one
    cell size per run, whose images and scale every round's stages read."""
    return StageSpec("scale", scale_images, "Predictor", uses_gpu=False,
                     inputs={"images": Input("images"), "points": points,
                             "eval_images": Input("eval_images")},
                     optional=frozenset({"eval_images"}),
                     row={"cell_diameter": "cell_diameter", "scale": "scale"},
                     ignores=NO_PREDICTION_IGNORES)


def ranker_stages(labels: Labels | Output) -> tuple[StageSpec, ...]:
    """The PU and P-ranker half of a round, whose labels (P: the positives) are
    ``labels``: extract_patches → train_pu → rank → select → update_labels (``labels``
    plus the selections)."""
    return (
        StageSpec("extract_patches", extract_patches, "Predictor", SHARDED,
                  inputs={"images": _IMAGES, "scale": _SCALE, "points": labels,
                          "peaks": Output("predict", "candidates")},
                  shards=ShardedStage(extract_patches_plan, extract_patches_shard,
                                      extract_patches_merge),
                  ignores=BEFORE_RANK_IGNORES),
        StageSpec("train_pu", train_pu, "PUFeatureLearner", TRAINING,
                  inputs={"images": _IMAGES, "patches": Output("extract_patches", "patches"),
                          "table": _TABLE},
                  progress_unit="epochs", series={"pu_risk": ("pu/risk", None)},
                  ignores=BEFORE_RANK_IGNORES),
        StageSpec("rank", rank, "PRanker", uses_gpu=False,
                  inputs={"images": _IMAGES, "features": Output("train_pu", "features"),
                          "table": _TABLE}, ignores=SELECT_FIELDS | EVAL_FIELDS),
        StageSpec("select", select, "LabelSelector", uses_gpu=False,
                  inputs={"images": _IMAGES, "scores": Output("rank", "scores"),
                          "pu_scores": Output("train_pu", "pu_scores"),
                          "peaks": Output("predict", "peaks")},
                  row={"n_pseudo_pos": "n_pseudo_pos", "n_pseudo_neg": "n_pseudo_neg"},
                  ignores=RANK_FIELDS | EVAL_FIELDS),
        StageSpec("update_labels", update_labels, "LabelSelector", uses_gpu=False,
                  inputs={"images": _IMAGES, "points": labels,
                          "selected": Output("select", "selected"), "table": _TABLE},
                  ignores=BEFORE_RANK_IGNORES),
    )


#: Round 0's labels: the clicks plus confident background points.
BACKGROUND = StageSpec("background", add_background, "LabelSelector", uses_gpu=False,
                       inputs={"images": _IMAGES, "scale": _SCALE, "points": Input("points")},
                       row={"n_background": "n_background"}, ignores=NO_PREDICTION_IGNORES)

#: The partial-annotation loop: clicked points → rounds of detector, PU features, ranker
#: and pseudo-labels → the final detector.
PARTIAL = Mode(
    name="partial",
    before=(scale_stage(Input("points")), BACKGROUND),
    round_stages=(
        _TRAIN_DETECTOR,
        PREDICT,
        *ranker_stages(Labels()),
        StageSpec("evaluate", evaluate, **EVAL_SPEC,
                  inputs={**EVAL_INPUTS, "points": Labels(),
                          "selected": Output("select", "selected"), "table": _TABLE}),
    ),
    final_stages=(_TRAIN_DETECTOR, PREDICT,
                  StageSpec("evaluate", evaluate, **EVAL_SPEC, inputs=EVAL_INPUTS)),
    initial_labels=Prepared("background", "points"),
    labels=Output("update_labels", "points"),
    products={"model": Output("train_detector", "model"),
              "detections": Output("predict", "peaks"),
              "heldout_detections": Output("predict", "eval_peaks"),
              "scale": _SCALE},
    required_inputs=("images", "points"),
)
