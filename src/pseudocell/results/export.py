"""Export any round's labels and detections of a run (napari CSV, QuPath GeoJSON, CSV).

*Labels of round R* are the annotated points plus every pseudo-label selected in rounds
0..R (see :meth:`~pseudocell.results.reader.RunResults.labels`); the last round selects none, so its
labels are those its detector was trained on. *Detections of round R* are the peaks of
round R's detector on the training images.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pseudocell.data.geojson import points_to_geojson, write_geojson
from pseudocell.data.overlay import COLORS
from pseudocell.data.points import write_napari_csv, write_points_csv
from pseudocell.errors import InvalidInputError, RunDirectoryError
from pseudocell.results.reader import RunResults

__all__ = ["FORMATS", "WHAT", "export_round", "write_points"]

logger = logging.getLogger(__name__)

FORMATS = ("napari", "geojson", "csv")
WHAT = ("labels", "detections")


def write_points(out_dir: Path, stem: str, table: dict[str, np.ndarray], ids: list[str],
                 fmt: str, *, object_type: str) -> list[Path]:
    """Write one points table in one format; returns the files written.

    ``napari``: ``<stem>_napari.csv`` (frame axis = position in ``ids``); ``csv``:
    ``<stem>.csv`` (image, y, x and the table's extra columns); ``geojson``:
    ``<stem>_geojson/<image id>.geojson``, one file per image, for QuPath.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    extra = tuple(c for c in ("kind", "round", "value", "score") if c in table)
    if fmt == "napari":
        path = out_dir / f"{stem}_napari.csv"
        write_napari_csv(path, ids, table, extra=extra)
        return [path]
    if fmt == "csv":
        path = out_dir / f"{stem}.csv"
        write_points_csv(path, table, extra=extra)
        return [path]
    if fmt != "geojson":
        raise InvalidInputError(f"format {fmt!r}: use one of {', '.join(FORMATS)}")
    gdir = out_dir / f"{stem}_geojson"
    gdir.mkdir(exist_ok=True)
    img = table["image_id"].astype(str)
    files = []
    for i in ids:
        m = img == i
        classes = table["kind"][m] if "kind" in table else np.full(int(m.sum()), "detection")
        meas = {"peak": np.asarray(table["value"][m], np.float64)} if "value" in table else None
        coll = points_to_geojson(table["y"][m], table["x"][m], classes=classes, colors=COLORS,
                                 measurements=meas, object_type=object_type)
        path = gdir / f"{i}.geojson"
        write_geojson(path, coll)
        files.append(path)
    return files


def export_round(run_dir: str | Path, out_dir: str | Path, *, rnd: int | None = None,
                 fmt: str = "napari", what: tuple[str, ...] = WHAT) -> list[Path]:
    """Export round ``rnd`` (default: the last one) of a run; returns the files written.

    Labels are written as QuPath *annotations* classified by kind (annotated,
    pseudo_pos, pseudo_neg), detections as *detections* with their peak value.
    """
    res = RunResults.open(run_dir)
    if fmt not in FORMATS:
        raise InvalidInputError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    bad = [w for w in what if w not in WHAT]
    if bad or not what:
        raise InvalidInputError(f"--what {','.join(what)!r}: use labels, detections or both")
    rounds = res.rounds
    rnd = rounds if rnd is None else rnd
    if not 0 <= rnd <= rounds:
        raise InvalidInputError(f"--round {rnd}: this run has rounds 0..{rounds}")
    ids = res.image_ids
    files: list[Path] = []
    for w in what:
        table = res.labels(rnd) if w == "labels" else res.detections(rnd)
        if table is None:
            raise RunDirectoryError(f"round {rnd} of {str(run_dir)!r} has no {w} yet; finish "
                                    f"the run with `pseudocell resume {run_dir}`")
        files += write_points(Path(out_dir), f"round_{rnd:03d}_{w}", table, ids, fmt,
                              object_type="annotation" if w == "labels" else "detection")
    logger.info("exported %d file(s) to %s", len(files), out_dir)
    return files
