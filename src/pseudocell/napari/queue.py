"""The review queue of the napari plugin, without Qt: which tile is shown, its cells and
non-cells, and saving a person's answers into the review folder.

A tile's points are split into two layers: **cells** (status ``proposed``, ``confirmed``
or ``added``) and **non-cells** (``rejected``). Saving writes the tile's napari CSV back
with the statuses the layers imply (a proposed point that is still in *cells* stays
``proposed``; one moved to *non-cells* becomes ``rejected``; a new point in *cells* is
``added``) and marks the tile reviewed in ``manifest.csv``: the person looked at the whole
tile, so its remaining proposed points count as confirmed at ingest.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from pseudocell.human.files import (Tile, read_manifest_csv, read_napari_points,
                                    read_review_json, write_manifest_csv, write_tile_points)

__all__ = ["TileView", "ReviewQueue", "split_layers", "join_layers"]


@dataclass
class TileView:
    """What the viewer shows of one tile (tile pixels: y, x from the tile's corner)."""

    tile: Tile
    image: np.ndarray            # (h, w) float32 in [0, 1]
    cells: np.ndarray            # (n, 2)
    cell_status: np.ndarray      # (n,) object: proposed / confirmed / added
    non_cells: np.ndarray        # (m, 2)


def split_layers(yx: np.ndarray, status: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                               np.ndarray]:
    """Points of a tile → (cells, their statuses, non-cells).

    >>> c, s, n = split_layers(np.array([[1., 1.], [2., 2.]]), np.array(["proposed", "rejected"]))
    >>> c.tolist(), s.tolist(), n.tolist()
    ([[1.0, 1.0]], ['proposed'], [[2.0, 2.0]])
    """
    st = np.asarray(status).astype(str)
    yx = np.asarray(yx, np.float64).reshape(-1, 2)
    rej = st == "rejected"
    return yx[~rej], st[~rej].astype(object), yx[rej]


def join_layers(cells: np.ndarray, cell_status: np.ndarray | None, non_cells: np.ndarray,
                original: np.ndarray, tol: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """The two layers as edited → (points, statuses) to save.

    ``cell_status`` holds the statuses of the cells layer's points (napari's ``status``
    feature; new points get the feature default ``added``; None: every cell is judged by
    position). A non-cell is ``rejected``; a cell keeps a known status, and a cell
    without one is ``proposed`` if it sits on one of the detector's ``original`` points
    (within ``tol`` px: it was moved from non-cells back) and ``added`` otherwise.

    >>> p, s = join_layers(np.array([[1., 1.], [5., 5.]]), None, np.array([[9., 9.]]),
    ...                    np.array([[1., 1.], [9., 9.]]))
    >>> s.tolist()
    ['proposed', 'added', 'rejected']
    """
    cells = np.asarray(cells, np.float64).reshape(-1, 2)
    non = np.asarray(non_cells, np.float64).reshape(-1, 2)
    orig = np.asarray(original, np.float64).reshape(-1, 2)
    st = []
    for k, p in enumerate(cells):
        s = "" if cell_status is None else str(cell_status[k] or "")
        if s in ("proposed", "confirmed", "added"):
            st.append(s)
        elif len(orig) and np.min(np.hypot(*(orig - p).T)) <= tol:
            st.append("proposed")
        else:
            st.append("added")
    return (np.concatenate([cells, non]).reshape(-1, 2),
            np.array(st + ["rejected"] * len(non), object))


@dataclass
class ReviewQueue:
    """The tiles of a review folder, one at a time (``pseudocell suggest`` wrote it).

    >>> q = ReviewQueue.open("runs/exp1/review/round_002")   # doctest: +SKIP
    >>> view = q.current()                                    # doctest: +SKIP
    >>> q.save(view.cells, None, view.non_cells); q.next()    # doctest: +SKIP
    """

    folder: Path
    tiles: list[Tile]
    index: int = 0
    _original: dict = field(default_factory=dict)

    @classmethod
    def open(cls, folder: str | Path) -> "ReviewQueue":
        folder = Path(folder)
        read_review_json(folder)  # refuses a folder that is not a review
        tiles = read_manifest_csv(folder / "manifest.csv")
        first = next((k for k, t in enumerate(tiles) if not t.reviewed), 0)
        return cls(folder, tiles, first)

    def __len__(self) -> int:
        return len(self.tiles)

    @property
    def tile(self) -> Tile:
        return self.tiles[self.index]

    @property
    def n_reviewed(self) -> int:
        return sum(t.reviewed for t in self.tiles)

    def current(self) -> TileView:
        """The current tile's pixels and layers (tile pixels)."""
        from PIL import Image

        t = self.tile
        img = np.asarray(Image.open(self.folder / "tiles" / f"{t.tile_id}.png"),
                         np.float32) / 255.0
        yx, st = read_napari_points(self.folder / "points" / f"{t.tile_id}.csv", t)
        local = yx - np.array([t.y0, t.x0], np.float64)
        if t.tile_id not in self._original:
            self._original[t.tile_id] = local[st.astype(str) != "added"]
        cells, status, non = split_layers(local, st)
        return TileView(t, img, cells, status, non)

    def go(self, index: int) -> TileView:
        self.index = int(np.clip(index, 0, len(self.tiles) - 1))
        return self.current()

    def next(self) -> TileView:
        return self.go(self.index + 1)

    def previous(self) -> TileView:
        return self.go(self.index - 1)

    def save(self, cells: np.ndarray, cell_status: np.ndarray | None,
             non_cells: np.ndarray) -> None:
        """Write the current tile's answers (layers in tile pixels) and mark it reviewed."""
        t = self.tile
        orig = self._original.get(t.tile_id)
        if orig is None:
            orig = self.current().cells
        yx, st = join_layers(cells, cell_status, non_cells, orig)
        write_tile_points(self.folder / "points", t, yx + np.array([t.y0, t.x0]), st,
                          formats=("napari",))
        self.tiles[self.index] = replace(t, reviewed=True)
        write_manifest_csv(self.folder / "manifest.csv", self.tiles)

    def accept_all(self) -> None:
        """Every point of the current tile as the detector proposed it; tile reviewed."""
        v = self.current()
        self.save(v.cells, v.cell_status, v.non_cells)
