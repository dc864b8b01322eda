"""Use a trained model on new images, and score point files against each other."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from pseudocell.config import Config, load_config
from pseudocell.core.detector import load_unet, predict_heatmap
from pseudocell.core.metrics import match_points, pooled
from pseudocell.core.peaks import find_peaks
from pseudocell.data.images import image_id
from pseudocell.data.overlay import draw_overlay
from pseudocell.data.points import (points_by_image, read_points_csv, write_napari_csv,
                                    write_points_csv)
from pseudocell.errors import InvalidInputError
from pseudocell.validation import check_points, load_image_folder

__all__ = ["detect_folder", "evaluate_files", "resolve_model"]

logger = logging.getLogger(__name__)


def resolve_model(model: str | Path) -> tuple[Path, Config]:
    """``model.pt`` path and the run config, from a run directory or a model file inside one."""
    model = Path(model)
    if model.is_dir():
        model = model / "final" / "model.pt"
    if not model.is_file():
        raise InvalidInputError(f"--model: {str(model)!r} does not exist; pass RUN/final/model.pt "
                                "or a finished run directory")
    for parent in model.parents:
        if (parent / "config.toml").exists():
            return model, load_config(parent / "config.toml")
    logger.warning("no config.toml above %s; using default detection settings", model)
    return model, Config()


def detect_folder(model: str | Path, images: str | Path, out: str | Path, *, pattern: str = "*",
                  threshold: float | None = None, overlays: bool = True) -> int:
    """Detect cells in every image of a folder; returns the number of detections.

    Writes ``out/detections.csv`` (napari, frame = image order), ``out/detections_table.csv``
    (image,y,x,value) and, optionally, ``out/overlays/<image>.png``.
    """
    path, cfg = resolve_model(model)
    if threshold is not None:
        cfg = cfg.replace(peak_threshold=threshold)
    imgs = load_image_folder(images, pattern=pattern, name="--images")
    ck = torch.load(path, map_location="cpu", weights_only=True)
    net = load_unet(ck["state_dict"], ck["meta"]["widths"], cfg.device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list] = {"image_id": [], "y": [], "x": [], "value": []}
    for i, im in zip(imgs.ids, imgs.images):
        pts, vals = find_peaks(predict_heatmap(net, im), threshold=cfg.peak_threshold,
                               min_distance=cfg.peak_min_distance, mode=cfg.peak_mode)
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


def _read_any(path: Path, images, name: str) -> dict[str, np.ndarray]:
    layout, refs, yx = read_points_csv(path)
    if images is not None:
        return check_points(refs, yx, images, layout=layout, name=f"{name} ({str(path)!r})")
    if layout == "napari3d":
        refs = [f"frame{int(r)}" for r in refs]
    elif layout == "napari2d":
        refs = ["image"] * len(refs)
    else:
        refs = [image_id(str(r)) for r in refs]  # '001cells.png' and '001cells' are one image
    return {"image_id": np.array([str(r) for r in refs], object), "y": yx[:, 0], "x": yx[:, 1]}


def evaluate_files(pred: str | Path, gt: str | Path, *, radius: float = 15.0,
                   images: str | Path | None = None) -> dict:
    """Pooled P/R/F (and per-image counts) of two point files, matched one-to-one."""
    if radius <= 0:
        raise InvalidInputError(f"--radius must be > 0, got {radius}")
    imgs = load_image_folder(images, name="--images") if images is not None else None
    p = _read_any(Path(pred), imgs, "--pred")
    g = _read_any(Path(gt), imgs, "--gt")
    ids = sorted(set(p["image_id"].astype(str)) | set(g["image_id"].astype(str)))
    pp, gg = points_by_image(p, ids), points_by_image(g, ids)
    per = {i: match_points(pp[i], gg[i], radius) for i in ids}
    res = pooled(list(per.values()))
    res["radius"] = radius
    res["per_image"] = {i: m.to_dict() for i, m in per.items()}
    return res
