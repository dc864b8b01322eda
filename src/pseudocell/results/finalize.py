"""Write ``<run>/final/``: model, detections (napari + plain CSV), overlays, metrics; and
the files MLflow records per round and per run."""
from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

from pseudocell.data.overlay import draw_overlay
from pseudocell.data.points import LABEL_KINDS, points_by_image, write_napari_csv, write_points_csv
from pseudocell.results.export import write_points
from pseudocell.results.reader import RunResults
from pseudocell.storage import arrays, fs
from pseudocell.storage.layout import join

__all__ = ["finalize", "choose_final_round", "round_warnings", "round_artifacts",
           "final_artifacts"]

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


def round_warnings(rows: list[dict], *, recall_drop: float = 0.05,
                   count_factor: float = 2.0) -> list[str]:
    """Rounds that left the run worse than the round before, by what a run knows without
    ground truth: the share of the annotated points its detector finds
    (``annotated_recall``) fell by more than ``recall_drop``, or its number of detections
    on the training images (``n_detections``) shrank or grew by more than
    ``count_factor``.

    >>> round_warnings([{"round": 0, "annotated_recall": 0.9, "n_detections": 900},
    ...                 {"round": 1, "annotated_recall": 0.5, "n_detections": 3}])[0][:40]
    'round 1: its detector finds 50% of the a'
    >>> round_warnings([{"round": 0, "annotated_recall": 0.9, "n_detections": 900},
    ...                 {"round": 1, "annotated_recall": 0.88, "n_detections": 700}])
    []
    """
    out = []
    for prev, row in zip(rows, rows[1:]):
        r = row["round"]
        a, b = prev.get("annotated_recall"), row.get("annotated_recall")
        if a is not None and b is not None and b < a - recall_drop:
            out.append(f"round {r}: its detector finds {b:.0%} of the annotated points "
                       f"against {a:.0%} in round {prev['round']}")
        n0, n1 = prev.get("n_detections"), row.get("n_detections")
        if n0 and n1 is not None and not n0 / count_factor <= n1 <= n0 * count_factor:
            out.append(f"round {r}: {n1} detections on the training images against {n0} "
                       f"in round {prev['round']}")
    return out


def _write_final_model(src_uri: str, dst: Path, peak_threshold: float | None) -> None:
    """Copy a round's model to ``dst`` with the peak threshold its round used in its meta
    (``pseudocell detect`` applies it)."""
    import io

    import torch

    ck = torch.load(io.BytesIO(fs.read_bytes(src_uri)), map_location="cpu", weights_only=True)
    if peak_threshold is not None:
        ck["meta"]["peak_threshold"] = float(peak_threshold)
    torch.save(ck, dst)


def choose_final_round(recalls: list[float | None], ratio: float) -> tuple[int, str | None]:
    """The round whose detector is final, and why it is not the last one (None if it is).

    ``recalls[r]`` is the share of the annotated points round ``r``'s detector finds. The
    last round is final unless its recall is below ``ratio`` times the best earlier one
    (a collapsed detector); then the latest round with that best recall is.

    >>> choose_final_round([0.9, 0.95, 0.02], 0.5)[0]
    1
    >>> choose_final_round([0.9, 0.95, 0.9], 0.5)
    (2, None)
    """
    last = len(recalls) - 1
    earlier = [(r, v) for r, v in enumerate(recalls[:-1]) if v is not None]
    if ratio <= 0 or recalls[last] is None or not earlier:
        return last, None
    best = max(v for _, v in earlier)
    if recalls[last] >= ratio * best:
        return last, None
    pick = max(r for r, v in earlier if v == best)
    return pick, (f"the last round's detector (round {last}) finds {recalls[last]:.0%} of the "
                  f"annotated points against {best:.0%} for round {pick}'s (below "
                  f"collapse_ratio={ratio:g} of it): it collapsed, so final/ holds round "
                  f"{pick}'s detector and detections")


def finalize(res: RunResults, *, overlays: bool = True) -> dict:
    """Collect the final detector (the last round's, unless it collapsed: see
    :func:`choose_final_round`) and its detections into ``final/``; returns the metrics.

    A run directory on an object store gets them built in its local folder
    (:attr:`RunLayout.local_dir`) first, then uploaded."""
    layout = res.layout
    rows = res.rows()
    recalls = [row.get("annotated_recall") for row in rows]
    final_round, reason = choose_final_round(recalls, res.cfg.collapse_ratio)
    logger.info("share of the annotated points found, by round: %s",
                ", ".join("-" if v is None else f"{v:.2f}" for v in recalls))
    if reason is not None:
        logger.warning("%s", reason)
    warnings = round_warnings(rows)
    for w in warnings:
        logger.warning("worse than the round before: %s", w)
    final = Path(layout.local_dir) / "final"
    if final.exists() and not layout.is_local:
        shutil.rmtree(final)
    final.mkdir(parents=True, exist_ok=True)
    _write_final_model(res.model_uri(final_round), final / "model.pt",
                       rows[final_round].get("peak_threshold"))
    ids = res.image_ids
    det = res.detections(final_round)
    write_napari_csv(final / "detections.csv", ids, det)
    write_points_csv(final / "detections_table.csv", det, extra=("value",))
    write_points(final, "detections", det, ids, "geojson", object_type="detection")
    edet = res.detections(final_round, heldout=True)
    if edet is not None:
        write_points_csv(final / "heldout_detections_table.csv", edet, extra=("value",))
    labels = res.training_labels(final_round)
    write_points_csv(final / "labels_table.csv", labels, extra=("kind", "round"))
    if overlays:
        _overlays(res, final / "overlays", labels, det)
    metrics = _clean({"config": res.cfg.to_dict(), "rounds": rows,
                      "final_round": final_round,
                      "final_reason": reason, "round_warnings": warnings})
    text = json.dumps(metrics, indent=1)
    (final / "metrics.json").write_text(text)
    (Path(layout.local_dir) / "metrics.json").write_text(text)
    if not layout.is_local:
        fs.write_bytes(join(layout.root, "metrics.json"), text.encode())
        fs.remove(layout.final)
        fs.put_dir(str(final), layout.final)
    logger.info("final outputs in %s", layout.final)
    return metrics


def _overlays(res: RunResults, out: Path, labels: dict, det: dict,
              limit: int | None = None) -> list[Path]:
    """Overlay PNGs of the first ``limit`` (default all) training images."""
    out.mkdir(parents=True, exist_ok=True)
    ids = res.image_ids
    by_kind = {k: points_by_image(labels, ids, (k,))
               for k in LABEL_KINDS}
    dets = points_by_image(det, ids)
    paths = []
    for k, i in enumerate(ids[:limit]):
        layers = {kind: by_kind[kind][i] for kind in by_kind}
        layers["detection"] = dets[i]
        paths.append(out / f"{i}.png")
        draw_overlay(paths[-1], arrays.read_stack_item(res.layout.images, k), layers)
    return paths


def round_artifacts(res: RunResults, rnd: int, n_overlays: int) -> list[tuple[str, str]]:
    """Write round ``rnd``'s artefacts under ``<run>/tracking/round_NNN/`` and return
    ``(path, artifact folder)`` pairs (a folder's files go into the artifact folder):
    overlays of the first ``n_overlays`` images
    (annotated / pseudo+ / pseudo- / detections), detections and labels as napari CSV
    and QuPath GeoJSON, the outputs its stages declare as ``artifacts`` (e.g. the
    label-free maps) and the round's detector weights."""
    layout = res.layout
    out = Path(layout.local_dir) / "tracking" / f"round_{rnd:03d}"
    ids = res.image_ids
    det, labels = res.detections(rnd), res.labels(rnd)
    files: list[tuple[str, str]] = []
    if det is not None and labels is not None:
        _overlays(res, out / "overlays", labels, det, limit=n_overlays)
        files.append((str(out / "overlays"), "overlays"))
    for name, table, kind in (("detections", det, "detection"), ("labels", labels, "annotation")):
        if table is None:
            continue
        for fmt in ("napari", "geojson"):
            write_points(out / name, name, table, ids, fmt, object_type=kind)
        files.append((str(out / name), name))
    for name, uri in res.stage_artifacts(rnd):
        if not layout.is_local:  # MLflow logs local files
            local = out / name
            for rel in fs.list_files(uri):
                dst = local / rel if rel else local
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_bytes(fs.read_bytes(uri.rstrip("/") + "/" + rel if rel else uri))
            uri = str(local)
        files.append((uri, name))
    uri = res.model_uri(rnd)
    if uri is not None:
        if not layout.is_local:  # MLflow logs local files
            (out / "detector").mkdir(parents=True, exist_ok=True)
            (out / "detector" / "model.pt").write_bytes(fs.read_bytes(uri))
            uri = str(out / "detector" / "model.pt")
        files.append((uri, "detector"))
    return files


def final_artifacts(res: RunResults, metrics: dict) -> list[tuple[str, str]]:
    """The parent run's artefacts: resolved config, metrics, the P/R/F-versus-round plot,
    the final model, detections (napari CSV, plain CSV, GeoJSON), labels and overlays."""
    from pseudocell.results.report import plot_rounds

    layout = res.layout
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
