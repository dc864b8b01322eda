"""The label-free mode: seed points from prior self-activation maps (PSM), then the loop.

Before round 0, ``activation_map`` trains the activation network on the training images
(self-supervised, :mod:`pseudocell.core.psm`) and writes one Grad-CAM map per image;
``bootstrap_points`` (sharded over images) fuses each map with its image, clusters the
pixels with K-means, takes the points of the cell cluster with a confidence each, and
keeps the most confident ``seed_fraction`` of them as round 0's positive labels (kind
``seed``) with background far from any cell as negatives; clicks given with
``--points`` join them as ``annotated``. ``scale`` then measures the cell size at the
seeds, and the partial loop's rounds refine the labels (:data:`LABEL_FREE`).
"""
from __future__ import annotations

import logging

import numpy as np

from pseudocell.config import Config
from pseudocell.core import psm
from pseudocell.core.metrics import near_any
from pseudocell.core.parallel import SINGLE, DataParallel
from pseudocell.data.points import points_by_image
from pseudocell.errors import InvalidInputError
from pseudocell.stages.base import (SHARDED, TRAINING, Input, Mode, Output, Prepared,
                                    ProgressFn, ShardedStage, StageInputs, StageOutputs,
                                    StageSpec)
from pseudocell.stages.loop import NO_PREDICTION_IGNORES, PARTIAL, save_model, scale_stage
from pseudocell.storage import arrays, fs, tables
from pseudocell.storage.layout import join
from pseudocell.validation import check_label_free_inputs

__all__ = ["activation_map", "bootstrap_plan", "bootstrap_shard", "bootstrap_merge",
           "bootstrap_points", "LABEL_FREE", "ACTIVATION_WIDTH", "N_PANELS"]

logger = logging.getLogger(__name__)

#: Channels of the activation network's shallowest stage.
ACTIVATION_WIDTH = 16
#: Images per run whose raw | map | clusters | points panel is written (and logged).
N_PANELS = 4


def activation_map(inp: StageInputs, cfg: Config, *, parallel: DataParallel = SINGLE,
                   progress: ProgressFn | None = None) -> StageOutputs:
    """Train the activation network on the training ``images`` and write the map of
    every training (and held-out) image.

    Inputs: ``images``, optional ``eval_images`` (original pixels). Outputs: ``model``
    (activation.pt), ``maps`` and ``eval_maps`` ((n, H, W) float16 stacks in [0, 1]).
    """
    uri = inp.uris["images"]
    ids = arrays.stack_ids(uri)
    images = [arrays.read_stack_item(uri, k) for k in range(len(ids))]

    def report(step: int, loss: float) -> None:
        logger.info("activation_map step=%d/%d loss=%.4f", step, cfg.psm_iters, loss)
        if progress is not None:
            progress(step, cfg.psm_iters, loss)

    res = psm.train_activation_net(
        images, objective=cfg.psm_objective, iters=cfg.psm_iters, batch=cfg.psm_batch,
        crop=cfg.psm_crop, lr=cfg.psm_lr, width=ACTIVATION_WIDTH, seed=inp.seed,
        device=parallel.device or cfg.device, progress=report, parallel=parallel)
    if not parallel.is_main:
        return StageOutputs({}, {})
    out = {"model": join(inp.out_dir, "activation.pt")}
    save_model(out["model"], res.state_dict, {"width": ACTIVATION_WIDTH,
                                         "objective": cfg.psm_objective})
    net = psm.load_activation_net(res.state_dict, ACTIVATION_WIDTH, cfg.device)
    for prefix, key in (("", "images"), ("eval_", "eval_images")):
        if key not in inp.uris:
            continue
        src = inp.uris[key]
        dst = join(inp.out_dir, f"{prefix}maps.zarr")
        arrays.create_stack(dst, arrays.stack_ids(src), arrays.stack_shapes(src), "float16")
        for k in range(len(arrays.stack_ids(src))):
            amap = psm.activation_map(net, arrays.read_stack_item(src, k))
            arrays.write_stack_item(dst, k, amap.astype(np.float16))
        out[f"{prefix}maps"] = dst
    steps = [min((k + 1) * 25, cfg.psm_iters) for k in range(len(res.losses))]
    return StageOutputs(out, {"psm_loss": res.losses, "psm_loss_steps": steps})


_EMPTY = {"image_id": np.zeros(0, object), "y": np.zeros(0), "x": np.zeros(0),
          "value": np.zeros(0), "kind": np.zeros(0, object)}


#: Training images (evenly spaced) the plan measures the cell size on.
SIZE_IMAGES = 8


def _image_mask(image: np.ndarray, amap: np.ndarray, cfg: Config, polarity: str, seed: int,
                name: str) -> tuple[np.ndarray, np.ndarray]:
    """K-means clusters (H, W) uint8 of one image's fused pixels and its cell mask."""
    fused = psm.fuse(amap, image, cfg.fusion_beta, polarity)
    try:
        cl = psm.kmeans_clusters(fused, cfg.kmeans_k, seed=seed % (2**31))
    except ValueError as e:
        raise InvalidInputError(
            f"bootstrap_points: image {name!r}: {e} (fusion_beta={cfg.fusion_beta}, "
            f"kmeans_k={cfg.kmeans_k}); set fusion_beta > 0 so that the image itself is "
            "clustered, or lower kmeans_k") from None
    return cl, psm.foreground(cl, cfg.kmeans_k)


def _cell_size(inp: StageInputs, cfg: Config, polarity: str) -> tuple[float, str]:
    """The run's cell diameter (px): ``cell_diameter`` when set; else a first pass of
    points with each image's own object size (:func:`~pseudocell.core.psm.
    component_diameter`) on up to :data:`SIZE_IMAGES` training images, and the scale of
    the strongest blob response (:func:`~pseudocell.core.scale.estimate_diameter`, the
    estimate the partial mode makes at clicks) at the more confident half of them.
    Object sizes alone mislead: touching nuclei merge
    into clumps (MoNuSeg: 40 px against 22) and a speckled cell cluster breaks into
    fragments; at every first-pass point the bright-field estimate is 8.4 px, at the
    confident half 10.0 px (4 training images; the clicks give 9.3)."""
    from pseudocell.core.scale import estimate_diameter

    if cfg.cell_diameter is not None:
        return float(cfg.cell_diameter), "config"
    uri, maps = inp.uris["images"], inp.uris["maps"]
    n = len(arrays.stack_ids(uri))
    picks = sorted(set(np.linspace(0, n - 1, min(n, SIZE_IMAGES)).round().astype(int)))
    imgs, pts = [], []
    for k in picks:
        image = arrays.read_stack_item(uri, k)
        _, mask = _image_mask(image, arrays.read_stack_item(maps, k).astype(np.float32), cfg,
                              polarity, inp.seed + k, str(k))
        d = psm.component_diameter(mask)
        if d is not None:
            p, conf = psm.seed_points(psm.clean_mask(mask, d), d)
            imgs.append(image)
            pts.append(p[conf >= np.median(conf)] if len(p) else p)
    if not any(len(p) for p in pts):
        raise InvalidInputError(
            f"bootstrap_points found no cell-like object in the training images (cells taken "
            f"as the {polarity} pixels, fusion_beta={cfg.fusion_beta}); check the images, "
            "set polarity ('bright': cells brighter than background, 'dark'), or give "
            "cell_diameter")
    return float(estimate_diameter(imgs, pts)["diameter"]), "estimated"


def bootstrap_plan(inp: StageInputs, cfg: Config, n_shards: int) -> list[dict]:
    """Resolve the stain polarity (``polarity="auto"``: from the training images, see
    :func:`~pseudocell.core.psm.stain_polarity`) and the cell size (:func:`_cell_size`),
    pre-size the cluster stacks and return work items of image indices."""
    from pseudocell.stages.loop import _split

    uri = inp.uris["images"]
    ids = arrays.stack_ids(uri)
    polarity = cfg.polarity
    if polarity == "auto":
        polarity = psm.stain_polarity([arrays.read_stack_item(uri, k) for k in range(len(ids))],
                                      k=cfg.kmeans_k, seed=inp.seed % (2**31))
        logger.info("bootstrap_points: cells are the %s pixels (polarity='auto')", polarity)
    diameter, source = _cell_size(inp, cfg, polarity)
    logger.info("bootstrap_points: cell diameter %.1f px (%s)", diameter, source)
    items = []
    for prefix, key in (("", "images"), ("eval_", "eval_images")):
        if key not in inp.uris:
            continue
        src = inp.uris[key]
        arrays.create_stack(join(inp.out_dir, f"{prefix}clusters.zarr"), arrays.stack_ids(src),
                            arrays.stack_shapes(src), "uint8")
        items += [{"prefix": prefix, "images": key, "indices": idx, "polarity": polarity,
                   "diameter": diameter} for idx in _split(len(arrays.stack_ids(src)), n_shards)]
    for k, item in enumerate(items):
        item["shard"] = k
    return items


def _panel(path: str, image: np.ndarray, amap: np.ndarray, clusters: np.ndarray, k: int,
           pts: np.ndarray, seeds: np.ndarray) -> None:
    """raw | map | clusters | points, side by side, as one PNG."""
    import io

    from PIL import Image, ImageDraw

    g = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    m = (np.clip(amap, 0, 1) * 255).astype(np.uint8)
    c = (clusters.astype(np.float32) / max(1, k - 1) * 255).astype(np.uint8)
    tiles = [np.repeat(a[..., None], 3, axis=2) for a in (g, m, c, g)]
    strip = Image.fromarray(np.concatenate(tiles, axis=1))
    d = ImageDraw.Draw(strip)
    off = 3 * image.shape[1]
    for (y, x), is_seed in zip(pts, seeds):
        col = (0, 200, 0) if is_seed else (255, 160, 0)
        d.ellipse([off + x - 3, y - 3, off + x + 3, y + 3], fill=col)
    for j, label in enumerate(("raw", "activation map", f"K-means (K={k})",
                               "points (green: seeds)")):
        d.text((j * image.shape[1] + 4, 2), label, fill=(255, 40, 40))
    buf = io.BytesIO()
    strip.save(buf, format="PNG")
    fs.write_bytes(path, buf.getvalue())


def bootstrap_shard(inp: StageInputs, cfg: Config, item: dict, *,
                    device: str | None = None) -> dict:
    """Fuse, cluster, clean and point every image of one work item; writes its cluster
    chunks, a part table (candidates with confidence, background grid points) and the
    panels of the first :data:`N_PANELS` training images."""
    key, prefix = item["images"], item["prefix"]
    src, maps = inp.uris[key], inp.uris[f"{prefix}maps"]
    ids = arrays.stack_ids(src)
    cl_uri = join(inp.out_dir, f"{prefix}clusters.zarr")
    parts: list[dict] = []
    d = item["diameter"]
    for k in item["indices"]:
        image = arrays.read_stack_item(src, k)
        amap = arrays.read_stack_item(maps, k).astype(np.float32)
        cl, mask = _image_mask(image, amap, cfg, item["polarity"], inp.seed + k, ids[k])
        arrays.write_stack_item(cl_uri, k, cl)
        mask = psm.clean_mask(mask, d)
        pts, conf = psm.seed_points(mask, d)
        bg = psm.background_points(mask, d)
        n, m = len(pts), len(bg)
        parts.append({"image_id": np.array([ids[k]] * (n + m), object),
                      "y": np.concatenate([pts[:, 0], bg[:, 0]]),
                      "x": np.concatenate([pts[:, 1], bg[:, 1]]),
                      "value": np.concatenate([conf, np.zeros(m)]),
                      "kind": np.array(["candidate"] * n + ["background"] * m, object)})
        if prefix == "" and k < N_PANELS:
            top = conf >= np.quantile(conf, 1 - cfg.seed_fraction) if n else np.zeros(0, bool)
            _panel(join(inp.out_dir, "panels", f"{ids[k]}.png"), image, amap, cl,
                   cfg.kmeans_k, pts, top)
    part = join(inp.out_dir, "_parts", f"{prefix}points-{item['shard']:05d}.parquet")
    tables.write_table(part, tables.concat_tables(*parts) if parts else _EMPTY)
    return {"part": part, "prefix": prefix, "shard": item["shard"],
            "polarity": item["polarity"], "diameter": d}


def _labels(table: dict, clicks: dict | None, ids: list[str], cfg: Config, d: float,
            rng: np.random.Generator) -> tuple[dict, dict]:
    """Round 0's labels from the training images' part table: the most confident
    ``seed_fraction`` of the candidates (kind ``seed``, score = confidence), background
    grid points (``pseudo_neg``), at most ``seed_negatives`` per seed of their image and
    chosen at random, and the clicks (``annotated``). Seeds within half a cell (``d``
    px) of a click and background within a cell of one are dropped."""
    kind = table["kind"].astype(str)
    cand = np.flatnonzero(kind == "candidate")
    order = cand[np.argsort(-table["value"][cand], kind="stable")]
    n_keep = int(np.ceil(cfg.seed_fraction * len(cand)))
    seeds = np.sort(order[:n_keep])
    click_pts = points_by_image(clicks, ids) if clicks is not None else \
        {i: np.zeros((0, 2)) for i in ids}
    img = table["image_id"].astype(str)
    pts = np.stack([table["y"], table["x"]], axis=1) if len(img) else np.zeros((0, 2))
    keep_pos, keep_neg = [], []
    for i in ids:
        rows = seeds[img[seeds] == i]
        if len(click_pts[i]):
            rows = rows[~near_any(pts[rows], click_pts[i], d / 2)]
        keep_pos.append(rows)
        bg = np.flatnonzero((kind == "background") & (img == i))
        if len(bg) and len(click_pts[i]):
            bg = bg[~near_any(pts[bg], click_pts[i], d)]
        n_neg = int(np.floor(cfg.seed_negatives * (len(rows) + len(click_pts[i]))))
        if len(bg) > n_neg:
            bg = np.sort(rng.choice(bg, n_neg, replace=False))
        keep_neg.append(bg)
    pos, neg = np.concatenate(keep_pos).astype(int), np.concatenate(keep_neg).astype(int)

    def rows_of(idx: np.ndarray, kind_name: str, score: np.ndarray) -> dict:
        return {"image_id": table["image_id"][idx], "y": table["y"][idx], "x": table["x"][idx],
                "kind": np.array([kind_name] * len(idx), object),
                "round": np.full(len(idx), -1, np.int64), "score": score}

    parts = [rows_of(pos, "seed", table["value"][pos]),
             rows_of(neg, "pseudo_neg", np.full(len(neg), np.nan))]
    if clicks is not None:
        parts.insert(0, {c: clicks[c] for c in tables.POINT_COLUMNS})
    counts = {"n_seeds": len(pos), "n_background": len(neg),
              "n_clicks": 0 if clicks is None else len(clicks["y"])}
    return tables.concat_tables(*parts), counts


def bootstrap_merge(inp: StageInputs, cfg: Config, results: list[dict]) -> StageOutputs:
    """Outputs: ``points`` (round 0's labels, original pixels), ``candidates`` and
    ``eval_candidates`` (every PSM point with its confidence as ``value``: the PSM
    detector's output), ``clusters`` / ``eval_clusters`` and ``panels``."""
    results = sorted(results, key=lambda r: r["shard"])
    fs_parts = {}
    for prefix in dict.fromkeys(r["prefix"] for r in results):
        tabs = [tables.read_table(r["part"]) for r in results if r["prefix"] == prefix]
        tabs = [t for t in tabs if len(t["y"])]
        fs_parts[prefix] = tables.concat_tables(*tabs) if tabs else _EMPTY
    fs.remove(join(inp.out_dir, "_parts"))
    ids = arrays.stack_ids(inp.uris["images"])
    train = fs_parts[""]
    if not (train["kind"].astype(str) == "candidate").any():
        raise InvalidInputError(
            "bootstrap_points found no cell-like object in any training image (polarity "
            f"{results[0]['polarity']!r}, fusion_beta={cfg.fusion_beta}, cell diameter "
            f"{results[0]['diameter']:.1f} px); check the images, set polarity ('bright': "
            "cells brighter than background, 'dark'), or give cell_diameter")
    clicks = tables.read_table(inp.uris["points"]) if "points" in inp.uris else None
    diam = float(results[0]["diameter"])
    labels, counts = _labels(train, clicks, ids, cfg, diam, np.random.default_rng(inp.seed))
    uris = {"points": join(inp.out_dir, "points.parquet")}
    tables.write_table(uris["points"], labels)
    for prefix, table in fs_parts.items():
        cand = tables.take(table, np.flatnonzero(table["kind"].astype(str) == "candidate"))
        uris[f"{prefix}candidates"] = join(inp.out_dir, f"{prefix}candidates.parquet")
        tables.write_table(uris[f"{prefix}candidates"],
                           {c: cand[c] for c in ("image_id", "y", "x", "value")})
        uris[f"{prefix}clusters"] = join(inp.out_dir, f"{prefix}clusters.zarr")
    if fs.exists(join(inp.out_dir, "panels")):
        uris["panels"] = join(inp.out_dir, "panels")
    cand = train["kind"].astype(str) == "candidate"
    logger.info("bootstrap_points: %d candidates, %d seeds, %d background points, cell "
                "diameter about %.1f px (%s cells)", int(cand.sum()), counts["n_seeds"],
                counts["n_background"], diam, results[0]["polarity"])
    return StageOutputs(uris, {"n_candidates": int(cand.sum()), **counts,
                               "psm_diameter": diam,
                               "bright_cells": int(results[0]["polarity"] == "bright")})


def bootstrap_points(inp: StageInputs, cfg: Config) -> StageOutputs:
    """:func:`bootstrap_plan`, every :func:`bootstrap_shard`, :func:`bootstrap_merge` in
    this process (the Ray executor runs the shards in parallel: same bytes)."""
    items = bootstrap_plan(inp, cfg, 1)
    return bootstrap_merge(inp, cfg, [bootstrap_shard(inp, cfg, it) for it in items])


#: Label-free fields only ``bootstrap_points`` reads (the activation network ignores them,
#: so a sweep over them trains it once).
_SEED_FIELDS = frozenset({"fusion_beta", "kmeans_k", "polarity", "seed_fraction",
                          "seed_negatives"})
_ACTIVATION = StageSpec(
    "activation_map", activation_map, "ActivationMapper", TRAINING,
    inputs={"images": Input("images"), "eval_images": Input("eval_images")},
    optional=frozenset({"eval_images"}), series={"psm_loss": ("psm/loss", "psm_loss_steps")},
    ignores=NO_PREDICTION_IGNORES | _SEED_FIELDS)
_BOOTSTRAP = StageSpec(
    "bootstrap_points", bootstrap_points, "Predictor", SHARDED, uses_gpu=False,
    inputs={"images": Input("images"), "maps": Output("activation_map", "maps"),
            "eval_images": Input("eval_images"),
            "eval_maps": Output("activation_map", "eval_maps"), "points": Input("points")},
    optional=frozenset({"eval_images", "eval_maps", "points"}),
    shards=ShardedStage(bootstrap_plan, bootstrap_shard, bootstrap_merge),
    artifacts=("panels",),
    row={"n_seeds": "seeds", "psm_diameter": "psm_diameter"},
    ignores=NO_PREDICTION_IGNORES)

#: Label-free: PSM seed points (no clicks needed; clicks, if given, join them) → the
#: partial loop's rounds and final detector.
LABEL_FREE = Mode(
    name="label-free",
    before=(_ACTIVATION, _BOOTSTRAP, scale_stage(Output("bootstrap_points", "points"))),
    round_stages=PARTIAL.round_stages,
    final_stages=PARTIAL.final_stages,
    initial_labels=Prepared("bootstrap_points", "points"),
    labels=PARTIAL.labels,
    products={**PARTIAL.products, "seeds": Prepared("bootstrap_points", "candidates"),
              "heldout_seeds": Prepared("bootstrap_points", "eval_candidates")},
    required_inputs=("images",),
    check_inputs=check_label_free_inputs,
)
