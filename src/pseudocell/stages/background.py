"""The ``background`` stage: round 0's labels are the clicks plus confident background.

Runs once before round 0, after ``scale``. For every training image it picks grid
points (spacing ``mask_radius``, canonical pixels) far from anything cell-like
(:func:`pseudocell.core.background.background_points`), at most ``background_ratio``
times that image's clicks (a seeded random subset), and adds them to the clicked points
as negative labels (kind ``pseudo_neg``, round -1): the masked loss of round 0 then sees
background, not only the discs around clicked cells.
"""
from __future__ import annotations

import logging

import numpy as np

from pseudocell.config import Config
from pseudocell.core.background import background_points
from pseudocell.data.points import points_by_image
from pseudocell.stages.base import StageInputs, StageOutputs
from pseudocell.stages.scale import read_scale
from pseudocell.storage import arrays, tables
from pseudocell.storage.layout import join

__all__ = ["add_background"]

logger = logging.getLogger(__name__)


def add_background(inp: StageInputs, cfg: Config) -> StageOutputs:
    """Inputs: ``images`` (canonical scale), ``scale``, ``points`` (the clicks). Output:
    ``points``, the clicks plus background points (original pixels)."""
    labels = tables.read_table(inp.uris["points"])
    labels = {k: labels[k] for k in tables.POINT_COLUMNS}
    images_uri = inp.uris["images"]
    ids = arrays.stack_ids(images_uri)
    sc = read_scale(inp.uris["scale"])
    clicks = points_by_image(labels, ids, ("annotated",))
    rng = np.random.default_rng(inp.seed)
    rows: dict[str, list] = {"image_id": [], "y": [], "x": []}
    for k, i in enumerate(ids):
        n_max = int(np.floor(cfg.background_ratio * len(clicks[i])))
        if n_max == 0:
            continue
        pts = background_points(arrays.read_stack_item(images_uri, k),
                                sc.to_scaled(i, clicks[i]),
                                cell_diameter=sc.diameter * sc.scale,
                                spacing=cfg.mask_radius, level=cfg.background_level,
                                reach=cfg.mask_radius)
        if len(pts) > n_max:
            pts = pts[np.sort(rng.choice(len(pts), n_max, replace=False))]
        pts = sc.from_scaled(i, pts)
        rows["image_id"] += [i] * len(pts)
        rows["y"] += pts[:, 0].tolist()
        rows["x"] += pts[:, 1].tolist()
    n = len(rows["y"])
    new = {"image_id": np.array(rows["image_id"], object), "y": np.array(rows["y"]),
           "x": np.array(rows["x"]), "kind": np.array(["pseudo_neg"] * n, object),
           "round": np.full(n, -1, np.int64), "score": np.full(n, np.nan)}
    uri = join(inp.out_dir, "points.parquet")
    tables.write_table(uri, tables.concat_tables(labels, new))
    logger.info("background: %d background points added to %d clicks", n,
                sum(len(v) for v in clicks.values()))
    return StageOutputs({"points": uri}, {"n_background": n})
