"""A small review folder on a real crop, written with the review-folder API (as
``pseudocell suggest`` would), for the plugin's tests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pseudocell.human.files import (Tile, sha256_file, write_manifest_csv, write_tile_png,
                                    write_tile_points)


def make_review(folder: Path, image: np.ndarray) -> list[Tile]:
    """Two 64 px tiles of ``image`` (original pixels), each with three proposed points."""
    (folder / "tiles").mkdir(parents=True)
    (folder / "points").mkdir()
    tiles = [Tile("img_y0_x0", "img", 0, 0, 64, 64, 2.0, "uncertain", "m1"),
             Tile("img_y64_x64", "img", 64, 64, 64, 64, 1.0, "audit", "m1")]
    for t in tiles:
        write_tile_png(folder / "tiles" / f"{t.tile_id}.png",
                       image[t.y0:t.y0 + t.h, t.x0:t.x0 + t.w])
        pts = np.array([[10.0, 10.0], [30.0, 20.0], [50.0, 40.0]]) + [t.y0, t.x0]
        write_tile_points(folder / "points", t, pts, np.array(["proposed"] * 3, object))
    write_manifest_csv(folder / "manifest.csv", tiles)
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    (folder / "review.json").write_text(json.dumps(
        {"run_id": "r", "round": 0, "model_run_id": "m1",
         "files": {f: sha256_file(folder / f) for f in files}}))
    return tiles
