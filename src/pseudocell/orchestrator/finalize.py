"""Write ``<run>/final/``: model, detections (napari + plain CSV), overlays, metrics."""
from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

from pseudocell.config import Config
from pseudocell.data.overlay import draw_overlay
from pseudocell.data.points import write_napari_csv, write_points_csv
from pseudocell.stages.loop import points_by_image
from pseudocell.storage import arrays, tables
from pseudocell.storage.layout import RunLayout
from pseudocell.storage.manifest import read_manifest

__all__ = ["finalize", "round_rows"]

logger = logging.getLogger(__name__)


def _clean(x):
    """NaN → None so metrics.json is strict JSON."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


def round_rows(layout: RunLayout, cfg: Config) -> list[dict]:
    """One flat row per round: detection P/R/F (training and held-out images, every
    radius), pseudo-labels selected with this round's detector and their quality."""
    rows = []
    for rnd in range(cfg.rounds + 1):
        row: dict = {"round": rnd}
        ev = read_manifest(layout.manifest(rnd, "evaluate"))
        if ev is not None:
            for key, val in ev["metrics"].items():
                if isinstance(val, dict):
                    for m in ("precision", "recall", "f1"):
                        row[f"{key}/{m}"] = val[m]
                elif key != "round":
                    row[key] = val
        sel = read_manifest(layout.manifest(rnd, "select"))
        if sel is not None:
            row["n_pseudo_pos"] = sel["metrics"]["n_pseudo_pos"]
            row["n_pseudo_neg"] = sel["metrics"]["n_pseudo_neg"]
        det = read_manifest(layout.manifest(rnd, "train_detector"))
        if det is not None:
            row["labels_pos"] = det["metrics"]["n_pos"]
            row["labels_neg"] = det["metrics"]["n_neg"]
        rows.append(row)
    return rows


def finalize(layout: RunLayout, cfg: Config, *, overlays: bool = True) -> dict:
    """Collect the last round's model and detections into ``final/``; returns the metrics."""
    last = cfg.rounds
    final = Path(layout.final)
    final.mkdir(parents=True, exist_ok=True)
    model = read_manifest(layout.manifest(last, "train_detector"))["outputs"]["model"]["uri"]
    shutil.copyfile(model, final / "model.pt")
    pred = read_manifest(layout.manifest(last, "predict"))["outputs"]
    ids = arrays.stack_ids(layout.images)
    det = tables.read_table(pred["peaks"]["uri"])
    write_napari_csv(final / "detections.csv", ids, det)
    write_points_csv(final / "detections_table.csv", det, extra=("value",))
    if "eval_peaks" in pred:
        edet = tables.read_table(pred["eval_peaks"]["uri"])
        write_points_csv(final / "heldout_detections_table.csv", edet, extra=("value",))
    labels_uri = layout.points if last == 0 else \
        read_manifest(layout.manifest(last - 1, "update_labels"))["outputs"]["points"]["uri"]
    labels = tables.read_table(labels_uri)
    write_points_csv(final / "labels_table.csv", labels, extra=("kind", "round"))
    if overlays:
        odir = final / "overlays"
        odir.mkdir(exist_ok=True)
        by_kind = {k: points_by_image(labels, ids, (k,))
                   for k in ("annotated", "pseudo_pos", "pseudo_neg")}
        dets = points_by_image(det, ids)
        for k, i in enumerate(ids):
            layers = {kind: by_kind[kind][i] for kind in by_kind}
            layers["detection"] = dets[i]
            draw_overlay(odir / f"{i}.png", arrays.read_stack_item(layout.images, k), layers)
    metrics = _clean({"config": cfg.to_dict(), "rounds": round_rows(layout, cfg)})
    with open(final / "metrics.json", "w") as f:
        json.dump(metrics, f, indent=1)
    (Path(layout.root) / "metrics.json").write_text(json.dumps(metrics, indent=1))
    logger.info("final outputs in %s", final)
    return metrics


