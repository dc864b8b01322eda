"""Point files (napari points CSV and plain ``image,y,x`` CSV, read and write) and points
tables (``{"image_id", "y", "x", ...}`` column dicts).

Reading returns raw rows (image reference as written, y, x); mapping image references to
image ids and checking them against the images is done in :mod:`pseudocell.validation`.
"""
from __future__ import annotations

import contextlib
import csv
import io
import re
from pathlib import Path

import numpy as np

from pseudocell.errors import InvalidInputError

__all__ = ["LABEL_KINDS", "DECIDED_KINDS", "ROUND0_POSITIVE", "POSITIVE_KINDS",
           "NEGATIVE_KINDS", "read_points_csv", "write_napari_csv", "write_points_csv",
           "points_by_image", "hide_points"]

#: Kinds of a labels table: clicked cells, label-free seed points (round 0's positives
#: when no one clicked), positive and negative pseudo-labels, (adapt modes) detections
#: not trusted yet: drawn into the heatmap target so that a neighbouring label's loss
#: disc does not call them background, but with no loss disc of their own, and a
#: person's review (``pseudocell ingest``): cells added, detections confirmed, detections
#: rejected.
LABEL_KINDS = ("annotated", "seed", "pseudo_pos", "pseudo_neg", "uncertain", "human_added",
               "human_confirmed", "human_rejected")
#: Kinds that say something about their place (a cell or not): every kind but
#: ``uncertain``.
DECIDED_KINDS = ("annotated", "seed", "pseudo_pos", "pseudo_neg", "human_added",
                 "human_confirmed", "human_rejected")
#: Round 0's positive labels (what the run was given or bootstrapped).
ROUND0_POSITIVE = ("annotated", "seed")
#: Every positive label (the detector's Gaussians, the PU learner's P set).
POSITIVE_KINDS = ("annotated", "seed", "pseudo_pos", "human_added", "human_confirmed")
#: Every negative label (a loss disc that says "no cell here").
NEGATIVE_KINDS = ("pseudo_neg", "human_rejected")


def _float(v: str, where: str, line: int, col: str) -> float:
    try:
        return float(v)
    except ValueError:
        raise InvalidInputError(
            f"{where} line {line}: column {col!r} is {v!r}, not a number. "
            "Fix or delete that row."
        ) from None


def read_points_csv(path: str | Path, *, allow_empty: bool = False
                    ) -> tuple[str, list[str | int], np.ndarray]:
    """Read a points CSV.

    Accepted layouts (header required):

    * plain: ``image,y,x`` (``image_id`` also accepted; more columns are ignored);
      ``image`` is an image file name or id.
    * napari: ``index,axis-0,axis-1`` (2 axes, y and x: one image) or
      ``index,axis-0,axis-1,axis-2`` (3 axes: axis-0 is the frame = position of the image
      in name order). Any other number of axes (a z or channel axis) is refused.

    A row with more fields than the header is refused (naming its line), as is a
    header-only file unless ``allow_empty`` (e.g. the detections of images without cells).

    Returns
    -------
    layout : {"plain", "napari2d", "napari3d"}
    refs : list of image references (str for plain, int frame for napari3d, 0 for napari2d)
    yx : ndarray (n, 2), float64

    Raises
    ------
    InvalidInputError
        Missing, unreadable or malformed file; the message names the file and the line.
    """
    from pseudocell.storage import fs  # local paths or URIs (s3://...)

    try:
        text = fs.read_bytes(str(path)).decode("utf-8-sig")  # tolerate Excel's BOM
    except FileNotFoundError:
        raise InvalidInputError(f"points file {str(path)!r} does not exist; check the "
                                "path") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"points file {str(path)!r} cannot be read ({e}); pass a "
                                "UTF-8 CSV file") from e
    where = f"points file {str(path)!r}"
    try:
        # line numbers as an editor shows them (a quoted field may span lines)
        reader = csv.reader(io.StringIO(text, newline=""))
        rows = [(reader.line_num, r) for r in reader]
    except csv.Error as e:
        raise InvalidInputError(f"{where} is not a valid CSV ({e}); re-export it as CSV") \
            from None
    rows = [(n, r) for n, r in rows if any(c.strip() for c in r)]
    if not rows:
        raise InvalidInputError(f"{where} is empty; it needs a header ('image,y,x' or "
                                "napari 'index,axis-0,axis-1') and rows")
    header = [h.strip().lower() for h in rows[0][1]]
    body = rows[1:]
    if not body and not allow_empty:
        raise InvalidInputError(f"{where} has a header but no points; annotate at least "
                                "one cell")
    col = {h: k for k, h in enumerate(header)}
    for n, r in body:
        if len(r) != len(header):
            raise InvalidInputError(
                f"{where} line {n} has {len(r)} fields, the header has {len(header)}; "
                "fix that row (a stray or missing comma?)")
    axes = sorted(int(m.group(1)) for h in header
                  if (m := re.fullmatch(r"axis-(0|[1-9][0-9]*)", h)))
    if axes:
        if axes not in ([0, 1], [0, 1, 2]):
            raise InvalidInputError(
                f"{where} is a napari CSV with {len(axes)} ax{'is' if len(axes) == 1 else 'es'} "
                f"({', '.join(f'axis-{a}' for a in axes)}); pseudocell reads 2 axes (y, x) "
                "of one image or 3 axes (frame, y, x) of a stack of 2-D images. Save the "
                "points of 2-D images (no z or channel axis)")
        return _read_napari(body, col, where, three=len(axes) == 3)
    img_col = "image" if "image" in col else "image_id" if "image_id" in col else None
    if img_col is None or "y" not in col or "x" not in col:
        raise InvalidInputError(
            f"{where} has header {rows[0][1]}; expected 'image,y,x' or napari "
            "'index,axis-0,axis-1[,axis-2]'"
        )
    refs: list[str | int] = []
    yx = np.zeros((len(body), 2))
    for k, (n, r) in enumerate(body):
        refs.append(r[col[img_col]].strip())
        yx[k] = (_float(r[col["y"]], where, n, "y"), _float(r[col["x"]], where, n, "x"))
    return "plain", refs, yx


def _read_napari(body: list[tuple[int, list[str]]], col: dict[str, int], where: str, *,
                 three: bool) -> tuple[str, list[str | int], np.ndarray]:
    ycol, xcol = ("axis-1", "axis-2") if three else ("axis-0", "axis-1")
    refs: list[str | int] = []
    yx = np.zeros((len(body), 2))
    for k, (n, r) in enumerate(body):
        if three:
            f = _float(r[col["axis-0"]], where, n, "axis-0")
            if not np.isfinite(f) or f != int(f):
                raise InvalidInputError(f"{where} line {n}: frame axis-0={f} is not a whole "
                                        "number; frames count the images 0, 1, 2 ...")
            refs.append(int(f))
        else:
            refs.append(0)
        yx[k] = (_float(r[col[ycol]], where, n, ycol), _float(r[col[xcol]], where, n, xcol))
    return ("napari3d" if three else "napari2d"), refs, yx


def write_napari_csv(path, image_ids: list[str] | dict[str, int],
                     table: dict[str, np.ndarray], extra: tuple[str, ...] = (), *,
                     start: int = 0, header: bool = True) -> None:
    """napari points CSV with a frame axis: ``index,axis-0,axis-1,axis-2`` where axis-0 is
    the position of the point's image in ``image_ids`` (load the images as a stack in
    that order). ``extra`` columns of ``table`` follow; napari reads them as point
    features (e.g. colour by ``kind``).

    ``path`` may be an open text file, to write a long table in pieces: ``header=False``
    and ``start`` (the ``index`` of the first row) continue an earlier piece;
    ``image_ids`` may then be the ready ``{image id: frame}`` mapping.
    """
    frame = image_ids if isinstance(image_ids, dict) else \
        {i: k for k, i in enumerate(image_ids)}
    with _text_out(path) as f:
        w = csv.writer(f)
        if header:
            w.writerow(["index", "axis-0", "axis-1", "axis-2", *extra])
        for n, (i, y, x) in enumerate(zip(table["image_id"], table["y"], table["x"])):
            w.writerow([start + n, frame[str(i)], f"{float(y):.2f}", f"{float(x):.2f}",
                        *[_cell(table[e][n]) for e in extra]])


def write_points_csv(path, table: dict[str, np.ndarray], extra: tuple[str, ...] = (), *,
                     header: bool = True) -> None:
    """Plain ``image,y,x[,extra...]`` CSV (readable by :func:`read_points_csv`).
    ``path`` may be an open text file (``header=False`` continues an earlier piece)."""
    with _text_out(path) as f:
        w = csv.writer(f)
        if header:
            w.writerow(["image", "y", "x", *extra])
        for n in range(len(table["y"])):
            w.writerow([table["image_id"][n], f"{float(table['y'][n]):.2f}",
                        f"{float(table['x'][n]):.2f}", *[_cell(table[e][n]) for e in extra]])


def _text_out(path):
    """A path opened for writing, or an open text file left open."""
    if hasattr(path, "write"):
        return contextlib.nullcontext(path)
    return open(path, "w", newline="")


def _cell(v) -> str:
    """Floats with 6 significant digits (float32 and float64 print alike)."""
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.6g}"
    return str(v)


def points_by_image(table: dict[str, np.ndarray], ids: list[str],
                    kinds: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Split a points table into ``{image_id: (n, 2) float64 (y, x)}`` (every id present),
    keeping only rows whose ``kind`` is in ``kinds`` when given."""
    keep = np.ones(len(table["y"]), bool)
    if kinds is not None and "kind" in table:
        keep &= np.isin(table["kind"].astype(str), kinds)
    img = table["image_id"].astype(str)
    out = {}
    for i in ids:
        m = keep & (img == i)
        out[i] = np.stack([table["y"][m], table["x"][m]], axis=1).astype(np.float64).reshape(-1, 2)
    return out


def hide_points(gt: dict[str, np.ndarray], keep: float, seed: int) -> dict[str, np.ndarray]:
    """Keep a seeded random ``keep`` fraction of each image's points (at least one point
    per image that has any; ``round(keep * n)`` otherwise).

    Returns a points table ``{"image_id", "y", "x"}``.

    >>> gt = {"image_id": np.array(["a"] * 20, object), "y": np.arange(20.), "x": np.zeros(20)}
    >>> len(hide_points(gt, 0.1, 0)["y"])
    2
    """
    rng = np.random.default_rng(seed)
    ids = gt["image_id"].astype(str)
    keep_idx = []
    for i in sorted(set(ids)):
        idx = np.flatnonzero(ids == i)
        k = max(1, int(np.floor(keep * len(idx) + 0.5)))
        keep_idx.append(np.sort(rng.choice(idx, size=k, replace=False)))
    sel = np.sort(np.concatenate(keep_idx)) if keep_idx else np.zeros(0, int)
    return {k: np.asarray(v)[sel] for k, v in gt.items()}
