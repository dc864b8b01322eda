"""QuPath-compatible GeoJSON for point objects (one file per image).

Each point is a ``Feature`` with a ``Point`` geometry and QuPath's properties:
``objectType`` (``"detection"`` or ``"annotation"``), a ``classification`` (name and
RGB colour) and optional ``measurements``. Import in QuPath with File → Import objects
(or drag the file onto the image).

Coordinates: GeoJSON is ``[x, y]``. pseudocell points are pixel indices (row ``y``,
column ``x``; the centre of pixel (0, 0) is (0, 0), as in napari and numpy), while
QuPath puts pixel corners on integers, so the centre of pixel (0, 0) is (0.5, 0.5).
:data:`PIXEL_CENTRE_OFFSET` is added on writing and removed on reading, so a point
round-trips exactly (up to float formatting, 1e-6 px).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from pseudocell.errors import InvalidInputError

__all__ = ["PIXEL_CENTRE_OFFSET", "points_to_geojson", "write_geojson", "read_geojson_points"]

#: Added to pixel-index coordinates to get QuPath coordinates.
PIXEL_CENTRE_OFFSET = 0.5


def points_to_geojson(y: np.ndarray, x: np.ndarray, *, classes: np.ndarray | None = None,
                      colors: dict[str, tuple[int, int, int]] | None = None,
                      measurements: dict[str, np.ndarray] | None = None,
                      object_type: str = "detection") -> dict:
    """A GeoJSON ``FeatureCollection`` of points.

    Parameters
    ----------
    y, x : (n,) float
        Pixel-index coordinates (row, column).
    classes : (n,) str, optional
        QuPath classification name of each point (e.g. ``annotated``, ``pseudo_pos``).
    colors : dict, optional
        Class name → RGB (0-255) used in the classification.
    measurements : dict of (n,) float, optional
        Per-point numbers (e.g. the detector peak); NaN values are left out.
    object_type : {"detection", "annotation"}
    """
    if object_type not in ("detection", "annotation"):
        raise InvalidInputError(f"object_type={object_type!r}: use 'detection' or 'annotation'")
    y = np.asarray(y, np.float64).reshape(-1)
    x = np.asarray(x, np.float64).reshape(-1)
    if y.shape != x.shape:
        raise InvalidInputError(f"y and x differ in length ({len(y)} vs {len(x)})")
    features = []
    for n in range(len(y)):
        props: dict[str, Any] = {"objectType": object_type}
        if classes is not None:
            name = str(classes[n])
            cls: dict[str, Any] = {"name": name}
            if colors and name in colors:
                cls["color"] = [int(c) for c in colors[name]]
            props["classification"] = cls
        if measurements:
            vals = {k: float(v[n]) for k, v in measurements.items()
                    if not math.isnan(float(v[n]))}
            if vals:
                props["measurements"] = vals
        features.append({
            "type": "Feature",
            "geometry": {"type": "Point",
                         "coordinates": [round(float(x[n]) + PIXEL_CENTRE_OFFSET, 6),
                                         round(float(y[n]) + PIXEL_CENTRE_OFFSET, 6)]},
            "properties": props,
        })
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: str | Path, collection: dict) -> None:
    """Write a ``FeatureCollection`` (from :func:`points_to_geojson`) as strict JSON."""
    Path(path).write_text(json.dumps(collection, allow_nan=False))


def read_geojson_points(path: str | Path) -> dict[str, np.ndarray]:
    """Read the ``Point`` features of a GeoJSON file back into pixel-index coordinates.

    Returns ``{"y": (n,) float64, "x": (n,) float64, "class": (n,) object}`` (class is
    ``""`` where a feature has none). Other geometry types are refused.
    """
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InvalidInputError(f"{str(path)!r} is not a readable GeoJSON file: {e}") from e
    feats = doc.get("features") if isinstance(doc, dict) else None
    if doc.get("type") != "FeatureCollection" or not isinstance(feats, list):
        raise InvalidInputError(f"{str(path)!r} is not a GeoJSON FeatureCollection")
    ys, xs, cls = [], [], []
    for k, f in enumerate(feats):
        geom = (f or {}).get("geometry") or {}
        if geom.get("type") != "Point":
            raise InvalidInputError(f"{str(path)!r} feature {k} is a {geom.get('type')!r}, "
                                    "not a Point; export points only")
        x, y = geom["coordinates"][:2]
        xs.append(float(x) - PIXEL_CENTRE_OFFSET)
        ys.append(float(y) - PIXEL_CENTRE_OFFSET)
        cls.append(((f.get("properties") or {}).get("classification") or {}).get("name", ""))
    return {"y": np.asarray(ys, np.float64), "x": np.asarray(xs, np.float64),
            "class": np.asarray(cls, object)}
