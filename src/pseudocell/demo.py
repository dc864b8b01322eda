"""The demo data: real bright-field images with 90 % of their points hidden.

Images 001-040 are the training set (10 % of their ground-truth points kept, seeded);
041-050 are held out and only used for evaluation.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pseudocell.config import Config
from pseudocell.data.images import points_from_dots, read_raw
from pseudocell.data.points import hide_points
from pseudocell.validation import ImageSet, RunInputs, check_data_dir, check_image

__all__ = ["DEMO_CONFIG", "load_brightfield", "demo_inputs"]

logger = logging.getLogger(__name__)

#: The demo's settings: the defaults plus an 8 px matching radius (about half a cell).
DEMO_CONFIG = Config(extra_radii=(8.0,))


def load_brightfield(folder: str | Path, numbers: range) -> tuple[ImageSet, dict[str, np.ndarray]]:
    """Images ``NNNcells.png`` and ground truth from ``NNNdots.png`` for ``numbers``."""
    folder = Path(folder)
    ids, imgs, paths, rows = [], [], [], []
    for n in numbers:
        p = folder / f"{n:03d}cells.png"
        ids.append(p.stem)
        imgs.append(check_image(read_raw(p), name=repr(str(p))))
        paths.append(str(p))
        pts = points_from_dots(read_raw(folder / f"{n:03d}dots.png"))
        rows += [(p.stem, y, x) for y, x in pts]
    gt = {"image_id": np.array([r[0] for r in rows], object),
          "y": np.array([r[1] for r in rows], np.float64),
          "x": np.array([r[2] for r in rows], np.float64)}
    return ImageSet(ids, imgs, paths), gt


def demo_inputs(cfg: Config = DEMO_CONFIG, *, keep: float = 0.1,
                data_dir: str | Path | None = None, train: range = range(1, 41),
                heldout: range = range(41, 51)) -> RunInputs:
    """The demo's inputs: bright-field images ``train`` with a fraction ``keep`` of
    their points (seed ``cfg.seed``) and full ground truth, images ``heldout`` with
    theirs."""
    from pseudocell.data.fetch import locate_brightfield

    if data_dir is not None:
        folder = check_data_dir(data_dir, [f"{n:03d}{kind}.png" for n in [*train, *heldout]
                                           for kind in ("cells", "dots")])
    else:
        folder = locate_brightfield()
    images, gt = load_brightfield(folder, train)
    eval_images, eval_gt = load_brightfield(folder, heldout)
    points = hide_points(gt, keep, seed=cfg.seed)
    logger.info("demo: %d training images, %d of %d points kept; %d held-out images",
                len(images.ids), len(points["y"]), len(gt["y"]), len(eval_images.ids))
    return RunInputs(images, points, gt, eval_images, eval_gt)
