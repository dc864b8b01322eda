"""A simulated annotator for the human-in-the-loop benchmark: answers a review folder
from the full ground truth, as a careful person would.

In every tile it is shown it confirms the detections that match a true cell (one-to-one
within the matching radius), rejects the others, adds the true cells no detection
matched, and marks the tile reviewed. Its clicks: one per added cell, one per rejected
detection and one per tile ("accept the rest").
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pseudocell.core.metrics import match_points
from pseudocell.core.review import in_box
from pseudocell.data.points import points_by_image
from pseudocell.human.files import (read_manifest_csv, read_napari_points, write_manifest_csv,
                                    write_tile_points)

__all__ = ["annotate_review"]


def annotate_review(folder: str | Path, gt: dict[str, np.ndarray], radius: float) -> dict:
    """Answer every tile of review ``folder`` (napari CSVs, ``reviewed`` = yes) from
    ``gt`` (image_id, y, x in original pixels). Returns the counts: ``clicks``,
    ``added``, ``rejected``, ``confirmed``, ``tiles``."""
    from dataclasses import replace

    folder = Path(folder)
    tiles = read_manifest_csv(folder / "manifest.csv")
    truth = points_by_image(gt, sorted({t.image for t in tiles}))
    out = {"added": 0, "rejected": 0, "confirmed": 0, "tiles": len(tiles)}
    for t in tiles:
        det, _ = read_napari_points(folder / "points" / f"{t.tile_id}.csv", t)
        cells = truth[t.image][in_box(truth[t.image], t.box)]
        m = match_points(det, cells, radius)
        hit = np.zeros(len(det), bool)
        found = np.zeros(len(cells), bool)
        if len(m.pairs):
            hit[m.pairs[:, 0]] = True
            found[m.pairs[:, 1]] = True
        yx = np.concatenate([det, cells[~found]]).reshape(-1, 2)
        status = np.array(["confirmed" if h else "rejected" for h in hit]
                          + ["added"] * int((~found).sum()), object)
        write_tile_points(folder / "points", t, yx, status, formats=("napari",))
        out["added"] += int((~found).sum())
        out["rejected"] += int((~hit).sum())
        out["confirmed"] += int(hit.sum())
    write_manifest_csv(folder / "manifest.csv", [replace(t, reviewed=True) for t in tiles])
    out["clicks"] = out["added"] + out["rejected"] + out["tiles"]
    return out
