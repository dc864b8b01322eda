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
from pseudocell.orchestrator.export import round_detections, round_labels, write_points
from pseudocell.stages.loop import points_by_image
from pseudocell.storage import arrays, fs, tables
from pseudocell.storage.layout import RunLayout, join
from pseudocell.storage.manifest import read_manifest

__all__ = ["finalize", "round_rows", "round_artifacts", "final_artifacts"]

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
    """Collect the last round's model and detections into ``final/``; returns the metrics.

    A run directory on an object store gets them built in its local folder
    (:attr:`RunLayout.local_dir`) first, then uploaded."""
    last = cfg.rounds
    final = Path(layout.local_dir) / "final"
    if final.exists() and not layout.is_local:
        shutil.rmtree(final)
    final.mkdir(parents=True, exist_ok=True)
    model = read_manifest(layout.manifest(last, "train_detector"))["outputs"]["model"]["uri"]
    (final / "model.pt").write_bytes(fs.read_bytes(model))
    pred = read_manifest(layout.manifest(last, "predict"))["outputs"]
    ids = arrays.stack_ids(layout.images)
    det = tables.read_table(pred["peaks"]["uri"])
    write_napari_csv(final / "detections.csv", ids, det)
    write_points_csv(final / "detections_table.csv", det, extra=("value",))
    write_points(final, "detections", det, ids, "geojson", object_type="detection")
    if "eval_peaks" in pred:
        edet = tables.read_table(pred["eval_peaks"]["uri"])
        write_points_csv(final / "heldout_detections_table.csv", edet, extra=("value",))
    labels_uri = layout.points if last == 0 else \
        read_manifest(layout.manifest(last - 1, "update_labels"))["outputs"]["points"]["uri"]
    labels = tables.read_table(labels_uri)
    write_points_csv(final / "labels_table.csv", labels, extra=("kind", "round"))
    if overlays:
        _overlays(layout, final / "overlays", ids, labels, det)
    metrics = _clean({"config": cfg.to_dict(), "rounds": round_rows(layout, cfg)})
    text = json.dumps(metrics, indent=1)
    (final / "metrics.json").write_text(text)
    (Path(layout.local_dir) / "metrics.json").write_text(text)
    if not layout.is_local:
        fs.write_bytes(join(layout.root, "metrics.json"), text.encode())
        fs.remove(layout.final)
        fs.put_dir(str(final), layout.final)
    logger.info("final outputs in %s", layout.final)
    return metrics


def _overlays(layout: RunLayout, out: Path, ids: list[str], labels: dict, det: dict,
              limit: int | None = None) -> list[Path]:
    """Overlay PNGs of the first ``limit`` (default all) training images."""
    out.mkdir(parents=True, exist_ok=True)
    by_kind = {k: points_by_image(labels, ids, (k,))
               for k in ("annotated", "pseudo_pos", "pseudo_neg")}
    dets = points_by_image(det, ids)
    paths = []
    for k, i in enumerate(ids[:limit]):
        layers = {kind: by_kind[kind][i] for kind in by_kind}
        layers["detection"] = dets[i]
        paths.append(out / f"{i}.png")
        draw_overlay(paths[-1], arrays.read_stack_item(layout.images, k), layers)
    return paths


def round_artifacts(layout: RunLayout, rnd: int, n_overlays: int) -> list[tuple[str, str]]:
    """Write round ``rnd``'s artefacts under ``<run>/tracking/round_NNN/`` and return
    ``(path, artifact folder)`` pairs (a folder's files go into the artifact folder):
    overlays of the first ``n_overlays`` images
    (annotated / pseudo+ / pseudo- / detections), detections and labels as napari CSV
    and QuPath GeoJSON, and the round's detector weights."""
    out = Path(layout.local_dir) / "tracking" / f"round_{rnd:03d}"
    ids = arrays.stack_ids(layout.images)
    det, labels = round_detections(layout, rnd), round_labels(layout, rnd)
    files: list[tuple[str, str]] = []
    if det is not None and labels is not None:
        _overlays(layout, out / "overlays", ids, labels, det, limit=n_overlays)
        files.append((str(out / "overlays"), "overlays"))
    for name, table, kind in (("detections", det, "detection"), ("labels", labels, "annotation")):
        if table is None:
            continue
        for fmt in ("napari", "geojson"):
            write_points(out / name, name, table, ids, fmt, object_type=kind)
        files.append((str(out / name), name))
    model = read_manifest(layout.manifest(rnd, "train_detector"))
    if model is not None:
        uri = model["outputs"]["model"]["uri"]
        if not layout.is_local:  # MLflow logs local files
            (out / "detector").mkdir(parents=True, exist_ok=True)
            (out / "detector" / "model.pt").write_bytes(fs.read_bytes(uri))
            uri = str(out / "detector" / "model.pt")
        files.append((uri, "detector"))
    return files


def final_artifacts(layout: RunLayout, metrics: dict) -> list[tuple[str, str]]:
    """The parent run's artefacts: resolved config, metrics, the P/R/F-versus-round plot,
    the final model, detections (napari CSV, plain CSV, GeoJSON), labels and overlays."""
    from pseudocell.orchestrator.report import plot_rounds

    root = Path(layout.local_dir)
    final = root / "final"
    config = layout.config
    if not layout.is_local:
        config = str(root / "config.toml")
        Path(config).write_bytes(fs.read_bytes(layout.config))
    files = [(config, ""), (str(root / "metrics.json"), "")]
    plot = plot_rounds(metrics, root / "tracking" / "prf_vs_round.png")
    if plot is not None:
        files.append((str(plot), "plots"))
    files += [(str(final / "model.pt"), "model")]
    files += [(str(final / n), "detections") for n in
              ("detections.csv", "detections_table.csv", "heldout_detections_table.csv",
               "labels_table.csv") if (final / n).exists()]
    files.append((str(final / "detections_geojson"), "detections/detections_geojson"))
    if (final / "overlays").is_dir():
        files.append((str(final / "overlays"), "overlays"))
    if (root / "pseudocell.log").exists():
        files.append((str(root / "pseudocell.log"), "logs"))
    return files


