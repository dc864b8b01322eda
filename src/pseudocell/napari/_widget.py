"""The "review queue" dock widget: previous / next tile, accept all, save."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtWidgets import (QFileDialog, QHBoxLayout, QLabel, QPushButton, QVBoxLayout,
                            QWidget)

from pseudocell.napari._reader import layer_data
from pseudocell.napari.queue import ReviewQueue

__all__ = ["ReviewQueueWidget"]


class ReviewQueueWidget(QWidget):
    """Walk the tiles of a review folder in ``viewer``: the current tile's image, a
    ``cells`` and a ``non-cells`` points layer; Save writes them back and marks the tile
    reviewed, Accept all keeps every proposed cell."""

    def __init__(self, viewer, folder: str | Path | None = None) -> None:
        super().__init__()
        self.viewer = viewer
        self.queue: ReviewQueue | None = None
        self.label = QLabel("no review folder")
        buttons = {name: QPushButton(name) for name in
                   ("Open…", "Previous", "Next", "Accept all", "Save")}
        buttons["Open…"].clicked.connect(self._choose)
        buttons["Previous"].clicked.connect(lambda: self._show(self.queue.previous()))
        buttons["Next"].clicked.connect(lambda: self._show(self.queue.next()))
        buttons["Accept all"].clicked.connect(self.accept_all)
        buttons["Save"].clicked.connect(self.save)
        self.buttons = buttons
        row = QHBoxLayout()
        for name in ("Previous", "Next", "Accept all", "Save"):
            row.addWidget(buttons[name])
        box = QVBoxLayout()
        box.addWidget(buttons["Open…"])
        box.addWidget(self.label)
        box.addLayout(row)
        self.setLayout(box)
        if folder is not None:
            self.open(folder)

    def _choose(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "pseudocell review folder")
        if folder:
            self.open(folder)

    def open(self, folder: str | Path) -> None:
        self.queue = ReviewQueue.open(folder)
        self._show(self.queue.current())

    def _show(self, view) -> None:
        for layer in [lay for lay in self.viewer.layers
                      if (lay.metadata or {}).get("pseudocell_review")]:
            self.viewer.layers.remove(layer)
        for data, kw, kind in layer_data(view, self.queue.folder):
            getattr(self.viewer, f"add_{kind}")(data, **kw)
        q = self.queue
        self.label.setText(f"tile {q.index + 1}/{len(q)}  {view.tile.tile_id}  "
                           f"({view.tile.reason}; {q.n_reviewed} reviewed)")

    def _layers(self):
        cells = self.viewer.layers["cells"]
        non = self.viewer.layers["non-cells"]
        status = cells.features["status"].to_numpy(object) if "status" in cells.features \
            else None
        return np.asarray(cells.data), status, np.asarray(non.data)

    def save(self) -> None:
        self.queue.save(*self._layers())
        self._show(self.queue.current())

    def accept_all(self) -> None:
        cells, status, non = self._layers()
        self.queue.save(cells, status, non)
        self._show(self.queue.next())
