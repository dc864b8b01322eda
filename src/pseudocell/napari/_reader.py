"""napari reader: a review folder → the first unreviewed tile's image, cells and
non-cells layers (their metadata name the folder and tile, for the writer)."""
from __future__ import annotations

from pathlib import Path

from pseudocell.napari.queue import ReviewQueue, TileView

__all__ = ["get_reader", "read_review", "layer_data"]


def layer_data(view: TileView, folder: Path) -> list[tuple]:
    """napari layer data tuples of one tile: image, cells (``status`` feature, new
    points default to ``added``), non-cells."""
    meta = {"pseudocell_review": str(folder), "tile_id": view.tile.tile_id}
    name = view.tile.tile_id
    return [
        (view.image, {"name": f"{name} image", "metadata": meta, "colormap": "gray"}, "image"),
        (view.cells, {"name": "cells", "metadata": meta, "face_color": "#ffdd00",
                      "features": {"status": list(view.cell_status)},
                      "feature_defaults": {"status": "added"}, "size": 8}, "points"),
        (view.non_cells, {"name": "non-cells", "metadata": meta, "face_color": "#ff00ff",
                          "symbol": "x", "size": 8}, "points"),
    ]


def read_review(path: str | list[str]) -> list[tuple]:
    folder = Path(path[0] if isinstance(path, list) else path)
    q = ReviewQueue.open(folder)
    return layer_data(q.current(), folder)


def get_reader(path: str | list[str]):
    """The reader for a review folder (one with ``review.json`` and ``manifest.csv``),
    else None (napari tries other readers)."""
    p = Path(path[0] if isinstance(path, list) else path)
    if p.is_dir() and (p / "review.json").exists() and (p / "manifest.csv").exists():
        return read_review
    return None
