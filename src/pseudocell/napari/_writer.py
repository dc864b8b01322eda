"""napari writer: the cells and non-cells layers of a tile back into its review folder."""
from __future__ import annotations

import numpy as np

from pseudocell.napari.queue import ReviewQueue

__all__ = ["write_points"]


def write_points(path: str, layer_data: list[tuple]) -> list[str]:
    """Save a tile opened from a review folder (layers named ``cells`` / ``non-cells``,
    metadata from the reader); ``path`` is ignored in favour of the tile's own CSV."""
    cells = non = None
    status = None
    meta = {}
    for data, attrs, kind in layer_data:
        if kind != "points":
            continue
        meta = attrs.get("metadata") or meta
        if attrs.get("name") == "non-cells":
            non = np.asarray(data)
        else:
            cells = np.asarray(data)
            status = (attrs.get("features") or {}).get("status")
    if "pseudocell_review" not in meta:
        raise ValueError("these points were not opened from a pseudocell review folder")
    q = ReviewQueue.open(meta["pseudocell_review"])
    q.go([t.tile_id for t in q.tiles].index(meta["tile_id"]))
    q.save(cells if cells is not None else np.zeros((0, 2)),
           None if status is None else np.asarray(status, object),
           non if non is not None else np.zeros((0, 2)))
    return [str(q.folder / "points" / f"{q.tile.tile_id}.csv")]
