"""Use a trained model on new images, and score point files against each other."""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from pseudocell.config import Config, load_config
from pseudocell.core.detector import load_unet, predict_heatmap
from pseudocell.core.metrics import match_points, pooled
from pseudocell.core.peaks import find_peaks
from pseudocell.core.scale import from_scaled, resize_image, scale_factor
from pseudocell.data.images import image_id
from pseudocell.data.overlay import draw_overlay
from pseudocell.data.points import (points_by_image, read_points_csv, write_napari_csv,
                                    write_points_csv)
from pseudocell.errors import InvalidInputError
from pseudocell.validation import (check_device, check_output_path, check_points,
                                   check_same_images, load_image_folder, load_model_file)

__all__ = ["detect_folder", "evaluate_files", "resolve_model"]

logger = logging.getLogger(__name__)

#: The fixed peak threshold of models made before thresholds were calibrated.
LEGACY_PEAK_THRESHOLD = 0.3


def resolve_model(model: str | Path) -> tuple[Path, Config, dict]:
    """``model.pt`` path, the run config and the checked model (``{"state_dict", "meta"}``),
    from a run directory or a model file inside one."""
    check_output_path(model, name="--model", example="--model runs/exp1")
    model = Path(model)
    if model.is_dir():
        model = model / "final" / "model.pt"
    if not model.is_file():
        raise InvalidInputError(f"--model: {str(model)!r} does not exist; pass RUN/final/model.pt "
                                "or a finished run directory")
    ck = load_model_file(model, name="--model")
    for parent in model.parents:
        if (parent / "config.toml").exists():
            return model, load_config(parent / "config.toml"), ck
    logger.warning("no config.toml above %s; using default detection settings", model)
    return model, Config(), ck


def detect_folder(model: str | Path, images: str | Path, out: str | Path, *, pattern: str = "*",
                  threshold: float | None = None, overlays: bool = True,
                  device: str | None = None, cell_diameter: float | None = None) -> int:
    """Detect cells in every image of a folder; returns the number of detections.

    Images are resized as in the model's run (its cell size, or ``cell_diameter`` px when
    the new images' cells differ) and cut at the peak threshold of the model's round
    (or ``threshold``). Writes ``out/detections.csv`` (napari, frame = image order),
    ``out/detections_table.csv`` (image,y,x,value) and, optionally, ``out/overlays/<image>.png``. Every input (model,
    images, device, ``out``) is checked before anything is written. ``device`` replaces
    the run's ``device``.
    """
    check_output_path(out, name="--out", example="--out detections/")
    if cell_diameter is not None and not (math.isfinite(cell_diameter) and cell_diameter >= 2):
        raise InvalidInputError(f"--cell-diameter must be a diameter in pixels >= 2, got "
                                f"{cell_diameter!r}; leave it out to resize as the model's "
                                "run did")
    path, cfg, ck = resolve_model(model)
    meta = ck["meta"]
    threshold = threshold if threshold is not None else (
        cfg.peak_threshold if cfg.peak_threshold is not None else meta.get("peak_threshold"))
    if threshold is None:
        threshold = LEGACY_PEAK_THRESHOLD
        logger.warning("the model carries no peak threshold; using %.2f (pass --threshold)",
                       threshold)
    scale = float(meta.get("scale", 1.0)) if cell_diameter is None else \
        scale_factor(cell_diameter)
    cfg = cfg.replace(**{k: v for k, v in (("peak_threshold", threshold),
                                           ("device", device)) if v is not None})
    check_device(cfg.device, name="--device" if device is not None else
                 f"device of the model's run ({cfg.device!r}; override with --device)")
    imgs = load_image_folder(images, pattern=pattern, name="--images")
    net = load_unet(ck["state_dict"], ck["meta"]["widths"], cfg.device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list] = {"image_id": [], "y": [], "x": [], "value": []}
    for i, im in zip(imgs.ids, imgs.images):
        pts, vals = find_peaks(predict_heatmap(net, resize_image(im, scale)),
                               threshold=cfg.peak_threshold,
                               min_distance=cfg.peak_min_distance, mode=cfg.peak_mode)
        pts = from_scaled(pts, im.shape, scale)
        rows["image_id"] += [i] * len(pts)
        rows["y"] += pts[:, 0].tolist()
        rows["x"] += pts[:, 1].tolist()
        rows["value"] += vals.tolist()
        if overlays:
            (out / "overlays").mkdir(exist_ok=True)
            draw_overlay(out / "overlays" / f"{i}.png", im, {"detection": pts})
        logger.info("image=%s detections=%d", i, len(pts))
    table = {"image_id": np.array(rows["image_id"], object), "y": np.array(rows["y"]),
             "x": np.array(rows["x"]), "value": np.array(rows["value"])}
    write_napari_csv(out / "detections.csv", imgs.ids, table)
    write_points_csv(out / "detections_table.csv", table, extra=("value",))
    return len(table["y"])


def _read_any(path: Path, images, name: str, allow_empty: bool = False) -> dict[str, np.ndarray]:
    layout, refs, yx = read_points_csv(path, allow_empty=allow_empty)
    if images is not None:
        return check_points(refs, yx, images, layout=layout, name=f"{name} ({str(path)!r})",
                            allow_empty=allow_empty)
    if layout == "napari3d":
        refs = [f"frame{int(r)}" for r in refs]
    elif layout == "napari2d":
        refs = ["image"] * len(refs)
    else:
        refs = [image_id(str(r)) for r in refs]  # '001cells.png' and '001cells' are one image
    return {"image_id": np.array([str(r) for r in refs], object), "y": yx[:, 0], "x": yx[:, 1]}


def evaluate_files(pred: str | Path, gt: str | Path, *, radius: float = 15.0,
                   images: str | Path | None = None) -> dict:
    """Pooled P/R/F (and per-image counts) of two point files, matched one-to-one.

    An empty ``pred`` (header only: ``detect`` found no cell) scores TP = 0; two files
    that name no image in common are refused.
    """
    if not radius > 0 or not np.isfinite(radius):
        raise InvalidInputError(f"--radius must be a finite number > 0, got {radius}")
    imgs = load_image_folder(images, name="--images") if images is not None else None
    p = _read_any(Path(pred), imgs, "--pred", allow_empty=True)
    g = _read_any(Path(gt), imgs, "--gt")
    if len(p["y"]) == 0:
        logger.warning("--pred %s holds 0 points: all %d ground-truth points are misses "
                       "(F1 = 0)", pred, len(g["y"]))
    check_same_images({str(i) for i in p["image_id"]}, {str(i) for i in g["image_id"]})
    ids = sorted(set(p["image_id"].astype(str)) | set(g["image_id"].astype(str)))
    pp, gg = points_by_image(p, ids), points_by_image(g, ids)
    per = {i: match_points(pp[i], gg[i], radius) for i in ids}
    res = pooled(list(per.values()))
    res["radius"] = radius
    res["per_image"] = {i: m.to_dict() for i, m in per.items()}
    return res
