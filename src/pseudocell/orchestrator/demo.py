"""The demo: the loop on real bright-field images with 90 % of the points hidden.

Images 001-040 are the training set (10 % of their ground-truth points kept, seeded);
041-050 are held out and only used for evaluation.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pseudocell.config import Config
from pseudocell.data.images import points_from_dots, read_raw
from pseudocell.orchestrator.run import RunInputs, StageEvent, prepare_run, run_loop
from pseudocell.validation import ImageSet, check_image

__all__ = ["DEMO_CONFIG", "hide_points", "load_brightfield", "demo_inputs", "run_demo"]

logger = logging.getLogger(__name__)

#: The demo's settings: the defaults plus an 8 px matching radius (about half a cell).
DEMO_CONFIG = Config(extra_radii=(8.0,))


def hide_points(gt: dict[str, np.ndarray], keep: float, seed: int) -> dict[str, np.ndarray]:
    """Keep a seeded random ``keep`` fraction of each image's points (at least one point
    per image that has any; ``round(keep * n)`` otherwise).

    Returns a points table ``{"image_id", "y", "x"}``.

    >>> gt = {"image_id": np.array(["a"] * 20, object), "y": np.arange(20.), "x": np.zeros(20)}
    >>> len(hide_points(gt, 0.1, 0)["y"])
    2
    """
    rng = np.random.default_rng(seed)
    ids = gt["image_id"].astype(str)
    keep_idx = []
    for i in sorted(set(ids)):
        idx = np.flatnonzero(ids == i)
        k = max(1, int(np.floor(keep * len(idx) + 0.5)))
        keep_idx.append(np.sort(rng.choice(idx, size=k, replace=False)))
    sel = np.sort(np.concatenate(keep_idx)) if keep_idx else np.zeros(0, int)
    return {k: np.asarray(v)[sel] for k, v in gt.items()}


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

    folder = Path(data_dir) if data_dir is not None else locate_brightfield()
    images, gt = load_brightfield(folder, train)
    eval_images, eval_gt = load_brightfield(folder, heldout)
    points = hide_points(gt, keep, seed=cfg.seed)
    logger.info("demo: %d training images, %d of %d points kept; %d held-out images",
                len(images.ids), len(points["y"]), len(gt["y"]), len(eval_images.ids))
    return RunInputs(images, points, gt, eval_images, eval_gt)


def run_demo(out: str | Path, *, cfg: Config = DEMO_CONFIG, keep: float = 0.1,
             data_dir: str | Path | None = None, train: range = range(1, 41),
             heldout: range = range(41, 51), executor=None, force: bool = False,
             progress: Callable[[StageEvent], None] | None = None) -> dict:
    """Run the demo into ``out`` and return the metrics (see ``final/metrics.json``)."""
    from pseudocell.orchestrator.executors import LocalExecutor

    inputs = demo_inputs(cfg, keep=keep, data_dir=data_dir, train=train, heldout=heldout)
    layout = prepare_run(out, cfg, inputs, force=force)
    return run_loop(layout, cfg, executor or LocalExecutor(), progress=progress)
