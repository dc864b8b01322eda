"""The review folder: plain files a person edits on a laptop while the run lives elsewhere.

``review/round_NNN/`` (written by ``pseudocell suggest``, read back by ``pseudocell
ingest`` and the napari plugin)::

    review.json              # run id, round, model id, tile size, sha256 of every file written
    manifest.csv             # tile_id,image,y0,x0,h,w,score,reason,model_run_id,reviewed
    tiles/<tile_id>.png      # the tile's pixels (8 bit, the run's normalised image)
    points/<tile_id>.csv     # napari points CSV in tile pixels: index,axis-0,axis-1,status
    points/<tile_id>.geojson # the same points for QuPath: full-image [x, y], objectType,
                             # classification = status

A point's ``status``: ``proposed`` (the detector's, as written), ``confirmed``,
``rejected`` or ``added``. A tile whose ``reviewed`` column says yes (``yes``, ``y``,
``true``, ``1``, ``x``) is fully labelled: its ``proposed`` points count as confirmed and
every place in it without a cell is background.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pseudocell.data.geojson import points_to_geojson, read_geojson_points
from pseudocell.errors import InvalidInputError

__all__ = ["STATUSES", "MANIFEST_COLUMNS", "REVIEWED_YES", "Tile", "tile_id",
           "write_manifest_csv", "read_manifest_csv", "write_tile_points", "read_napari_points",
           "read_geojson_tile", "write_tile_png", "sha256_file", "read_review_json"]

#: What a person can say about a point.
STATUSES = ("proposed", "confirmed", "rejected", "added")
MANIFEST_COLUMNS = ("tile_id", "image", "y0", "x0", "h", "w", "score", "reason",
                    "model_run_id", "reviewed")
#: Values of the ``reviewed`` column that mean "I looked at the whole tile".
REVIEWED_YES = ("yes", "y", "true", "1", "x", "done")
#: QuPath colours of the statuses.
_COLORS = {"proposed": (255, 221, 0), "confirmed": (255, 150, 0), "rejected": (255, 0, 255),
           "added": (0, 230, 180)}


@dataclass(frozen=True)
class Tile:
    """One suggested tile (original-image pixels)."""

    tile_id: str
    image: str
    y0: int
    x0: int
    h: int
    w: int
    score: float = 0.0
    reason: str = ""
    model_run_id: str = ""
    reviewed: bool = False

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.y0, self.x0, self.h, self.w


def tile_id(image: str, y0: int, x0: int) -> str:
    """A tile's id: its image and corner, safe as a file name.

    >>> tile_id("img 01", 256, 0)
    'img_01_y256_x0'
    """
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(image))
    return f"{safe}_y{int(y0)}_x{int(x0)}"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_manifest_csv(path: Path, tiles: list[Tile]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(MANIFEST_COLUMNS)
    for t in tiles:
        w.writerow([t.tile_id, t.image, t.y0, t.x0, t.h, t.w, f"{t.score:.6g}", t.reason,
                    t.model_run_id, "yes" if t.reviewed else ""])
    Path(path).write_text(buf.getvalue())


def read_manifest_csv(path: Path) -> list[Tile]:
    """The tiles of a review's ``manifest.csv`` (the ``reviewed`` column as edited)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InvalidInputError(f"{str(path)!r} does not exist: a review folder holds the "
                                "manifest.csv that `pseudocell suggest` wrote") from None
    rows = list(csv.DictReader(io.StringIO(text)))
    missing = [c for c in MANIFEST_COLUMNS if rows and c not in rows[0]]
    if missing:
        raise InvalidInputError(f"{str(path)!r} lacks the columns {missing}; keep the header "
                                "`pseudocell suggest` wrote")
    out = []
    for n, r in enumerate(rows, start=2):
        try:
            out.append(Tile(r["tile_id"], r["image"], int(r["y0"]), int(r["x0"]), int(r["h"]),
                            int(r["w"]), float(r["score"] or 0), r["reason"],
                            r["model_run_id"],
                            (r["reviewed"] or "").strip().lower() in REVIEWED_YES))
        except (TypeError, ValueError) as e:
            raise InvalidInputError(f"{str(path)!r} line {n}: {e}; keep the numbers "
                                    "`pseudocell suggest` wrote") from None
    return out


def write_tile_points(folder: Path, tile: Tile, yx: np.ndarray, status: np.ndarray, *,
                      formats: tuple[str, ...] = ("napari", "geojson")) -> None:
    """``points/<tile_id>.csv`` (napari, tile pixels) and ``points/<tile_id>.geojson``
    (QuPath, full-image pixels) of one tile (``formats``: which of the two); ``yx`` (n, 2)
    in full-image pixels."""
    yx = np.asarray(yx, np.float64).reshape(-1, 2)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "axis-0", "axis-1", "status"])
    for k, ((y, x), s) in enumerate(zip(yx, status)):
        w.writerow([k, f"{y - tile.y0:.3f}", f"{x - tile.x0:.3f}", s])
    if "napari" in formats:
        (folder / f"{tile.tile_id}.csv").write_text(buf.getvalue())
    if "geojson" not in formats:
        return
    doc = points_to_geojson(yx[:, 0], yx[:, 1], classes=np.asarray(status, object),
                            colors=_COLORS, object_type="annotation")
    for f in doc["features"]:
        f["properties"]["tile_id"] = tile.tile_id
    (folder / f"{tile.tile_id}.geojson").write_text(json.dumps(doc, allow_nan=False))


def _status(value: str, where: str) -> str:
    s = (value or "").strip().lower() or "added"  # a point napari added without a status
    if s not in STATUSES:
        raise InvalidInputError(f"{where}: status {value!r} is not one of {STATUSES}")
    return s


def _check_inside(tile: Tile, yx: np.ndarray, where: str) -> None:
    """Refuse points outside the tile (full-image pixels, half a pixel of slack)."""
    y0, x0, h, w = tile.box
    for k, (y, x) in enumerate(yx):
        if not (y0 - 0.5 <= y < y0 + h + 0.5 and x0 - 0.5 <= x < x0 + w + 0.5):
            raise InvalidInputError(
                f"{where}: point {k} at (y={y:.1f}, x={x:.1f}) lies outside tile "
                f"{tile.tile_id!r} (rows {y0}..{y0 + h - 1}, columns {x0}..{x0 + w - 1}); "
                "add it in the tile that holds it, or delete it")


def read_napari_points(path: Path, tile: Tile) -> tuple[np.ndarray, np.ndarray]:
    """A tile's napari CSV → (full-image (n, 2) yx, (n,) status)."""
    text = Path(path).read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    if rows and not {"axis-0", "axis-1"} <= set(rows[0]):
        raise InvalidInputError(f"{str(path)!r}: a napari points CSV has columns axis-0, "
                                "axis-1 (and status); save the layer with napari")
    yx, st = [], []
    for n, r in enumerate(rows, start=2):
        try:
            yx.append((float(r["axis-0"]) + tile.y0, float(r["axis-1"]) + tile.x0))
        except (TypeError, ValueError):
            raise InvalidInputError(f"{str(path)!r} line {n}: axis-0/axis-1 are not "
                                    "numbers") from None
        st.append(_status(r.get("status", ""), f"{str(path)!r} line {n}"))
    out = np.asarray(yx, np.float64).reshape(-1, 2)
    _check_inside(tile, out, str(path))
    return out, np.asarray(st, object)


def read_geojson_tile(path: Path, tile: Tile) -> tuple[np.ndarray, np.ndarray]:
    """A tile's QuPath GeoJSON → (full-image (n, 2) yx, (n,) status); a point's status is
    its classification name (none: ``added``)."""
    g = read_geojson_points(path)
    yx = np.stack([g["y"], g["x"]], axis=1).reshape(-1, 2)
    st = np.asarray([_status(c, f"{str(path)!r} feature {k}")
                     for k, c in enumerate(g["class"])], object)
    _check_inside(tile, yx, str(path))
    return yx, st


def write_tile_png(path: Path, crop: np.ndarray) -> None:
    """A tile's pixels as an 8-bit PNG (a normalised image: 0..1 is the display range)."""
    from PIL import Image

    a = np.asarray(crop, np.float32)
    if a.ndim == 3:  # channels first in the run's stores
        a = a[0] if a.shape[0] <= 4 else a[..., 0]
    Image.fromarray((np.clip(a, 0.0, 1.0) * 255).astype(np.uint8)).save(path)


def read_review_json(folder: Path) -> dict:
    p = Path(folder) / "review.json"
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise InvalidInputError(f"{str(folder)!r} is not a review folder (no review.json); "
                                "pass the folder `pseudocell suggest` wrote, e.g. "
                                "RUN/review/round_002") from None
    except json.JSONDecodeError as e:
        raise InvalidInputError(f"{str(p)!r} is not valid JSON ({e}); do not edit it") from e
