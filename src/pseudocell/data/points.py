"""Point files (napari points CSV and plain ``image,y,x`` CSV, read and write) and points
tables (``{"image_id", "y", "x", ...}`` column dicts).

Reading returns raw rows (image reference as written, y, x); mapping image references to
image ids and checking them against the images is done in :mod:`pseudocell.validation`.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from pseudocell.errors import InvalidInputError

__all__ = ["read_points_csv", "write_napari_csv", "write_points_csv", "points_by_image",
           "hide_points"]


def _float(v: str, path: Path, line: int, col: str) -> float:
    try:
        return float(v)
    except ValueError:
        raise InvalidInputError(
            f"points file {str(path)!r} line {line}: column {col!r} is {v!r}, not a number. "
            "Fix or delete that row."
        ) from None


def read_points_csv(path: str | Path) -> tuple[str, list[str | int], np.ndarray]:
    """Read a points CSV.

    Accepted layouts (header required):

    * plain: ``image,y,x`` (``image_id`` also accepted; more columns are ignored);
      ``image`` is an image file name or id.
    * napari: ``index,axis-0,axis-1`` (one image) or ``index,axis-0,axis-1,axis-2``
      where ``axis-0`` is the frame = position of the image in name order.

    Returns
    -------
    layout : {"plain", "napari2d", "napari3d"}
    refs : list of image references (str for plain, int frame for napari3d, 0 for napari2d)
    yx : ndarray (n, 2), float64
    """
    from pseudocell.storage import fs  # local paths or URIs (s3://...)

    try:
        text = fs.read_bytes(str(path)).decode("utf-8-sig")  # tolerate Excel's BOM
    except FileNotFoundError:
        raise InvalidInputError(f"points file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"points file {str(path)!r} cannot be read: {e}") from e
    rows = list(csv.reader(text.splitlines()))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise InvalidInputError(f"points file {str(path)!r} is empty; it needs a header "
                                "('image,y,x' or napari 'index,axis-0,axis-1') and rows")
    header = [h.strip().lower() for h in rows[0]]
    body = rows[1:]
    if not body:
        raise InvalidInputError(f"points file {str(path)!r} has a header but no points; "
                                "annotate at least one cell")
    col = {h: k for k, h in enumerate(header)}
    refs: list[str | int] = []
    yx = np.zeros((len(body), 2))
    if "axis-0" in col and "axis-1" in col:
        three = "axis-2" in col
        layout = "napari3d" if three else "napari2d"
        ycol, xcol = ("axis-1", "axis-2") if three else ("axis-0", "axis-1")
        for n, r in enumerate(body, start=2):
            if len(r) < len(header):
                raise InvalidInputError(f"points file {str(path)!r} line {n} has "
                                        f"{len(r)} fields, header has {len(header)}")
            if three:
                f = _float(r[col["axis-0"]], path, n, "axis-0")
                if not np.isfinite(f) or f != int(f):
                    raise InvalidInputError(f"points file {str(path)!r} line {n}: frame "
                                            f"axis-0={f} is not a whole number")
                refs.append(int(f))
            else:
                refs.append(0)
            yx[n - 2] = (_float(r[col[ycol]], path, n, ycol), _float(r[col[xcol]], path, n, xcol))
        return layout, refs, yx
    img_col = "image" if "image" in col else "image_id" if "image_id" in col else None
    if img_col is None or "y" not in col or "x" not in col:
        raise InvalidInputError(
            f"points file {str(path)!r} has header {rows[0]}; expected 'image,y,x' or napari "
            "'index,axis-0,axis-1[,axis-2]'"
        )
    for n, r in enumerate(body, start=2):
        if len(r) < len(header):
            raise InvalidInputError(f"points file {str(path)!r} line {n} has {len(r)} "
                                    f"fields, header has {len(header)}")
        refs.append(r[col[img_col]].strip())
        yx[n - 2] = (_float(r[col["y"]], path, n, "y"), _float(r[col["x"]], path, n, "x"))
    return "plain", refs, yx


def write_napari_csv(path: str | Path, image_ids: list[str], table: dict[str, np.ndarray],
                     extra: tuple[str, ...] = ()) -> None:
    """napari points CSV with a frame axis: ``index,axis-0,axis-1,axis-2`` where axis-0 is
    the position of the point's image in ``image_ids`` (load the images as a stack in
    that order). ``extra`` columns of ``table`` follow; napari reads them as point
    features (e.g. colour by ``kind``)."""
    frame = {i: k for k, i in enumerate(image_ids)}
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "axis-0", "axis-1", "axis-2", *extra])
        for n, (i, y, x) in enumerate(zip(table["image_id"], table["y"], table["x"])):
            w.writerow([n, frame[str(i)], f"{float(y):.2f}", f"{float(x):.2f}",
                        *[_cell(table[e][n]) for e in extra]])


def write_points_csv(path: str | Path, table: dict[str, np.ndarray],
                     extra: tuple[str, ...] = ()) -> None:
    """Plain ``image,y,x[,extra...]`` CSV (readable by :func:`read_points_csv`)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "y", "x", *extra])
        for n in range(len(table["y"])):
            w.writerow([table["image_id"][n], f"{float(table['y'][n]):.2f}",
                        f"{float(table['x'][n]):.2f}", *[_cell(table[e][n]) for e in extra]])


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
