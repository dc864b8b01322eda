"""The ``scale`` stage: one cell size per run, images at the canonical scale.

Runs once before round 0. It takes ``cell_diameter`` from the config or estimates it at
the clicked cells (:func:`pseudocell.core.scale.estimate_diameter`), and writes the
training (and held-out) images resized by ``s = CANONICAL_DIAMETER / diameter`` (the
input stores themselves when ``s == 1``) plus ``scale.json``. Every table of the run
(labels, peaks, patches, detections) stays in the coordinates of the original images;
only the stages that touch pixels move points in and out of the resized images, through
:class:`ScaleInfo`.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np

from pseudocell.config import Config
from pseudocell.core.scale import (CANONICAL_DIAMETER, estimate_diameter, from_scaled,
                                   resize_image, scale_factor, scaled_shape, to_scaled)
from pseudocell.data.points import ROUND0_POSITIVE, points_by_image
from pseudocell.errors import InvalidInputError
from pseudocell.stages.base import StageInputs, StageOutputs
from pseudocell.storage import arrays, fs, tables
from pseudocell.storage.layout import join

__all__ = ["ScaleInfo", "scale_images", "read_scale"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScaleInfo:
    """The run's cell size and the map between original and resized images.

    Attributes
    ----------
    diameter : float
        Cell diameter (px of the original images).
    source : str
        ``"config"`` or ``"estimated"``.
    scale : float
        Resize factor ``s`` (1.0: images used as they are).
    shapes : dict[str, tuple[int, int]]
        Original (H, W) of every training and held-out image.
    """

    diameter: float
    source: str
    scale: float
    shapes: dict[str, tuple[int, int]]

    def to_scaled(self, image_id: str, pts: np.ndarray) -> np.ndarray:
        """(N, 2) original-image points → resized-image points."""
        return to_scaled(pts, self.shapes[image_id], self.scale)

    def from_scaled(self, image_id: str, pts: np.ndarray) -> np.ndarray:
        """(N, 2) resized-image points → original-image points."""
        return from_scaled(pts, self.shapes[image_id], self.scale)

    def length(self, px: float) -> float:
        """A length of ``px`` resized-image pixels in original pixels."""
        return px / self.scale


def read_scale(uri: str) -> ScaleInfo:
    """The :class:`ScaleInfo` written by :func:`scale_images`."""
    d = json.loads(fs.read_bytes(uri))
    return ScaleInfo(d["diameter"], d["source"], d["scale"],
                     {k: tuple(v) for k, v in d["shapes"].items()})


def _resize_stack(src: str, dst: str, s: float) -> dict[str, tuple[int, int]]:
    ids, shapes = arrays.stack_ids(src), arrays.stack_shapes(src)
    if s != 1.0:
        arrays.create_stack(dst, ids, [scaled_shape(sh, s) for sh in shapes], dtype="float32")
        for k in range(len(ids)):
            arrays.write_stack_item(dst, k, resize_image(arrays.read_stack_item(src, k), s))
    return {i: tuple(int(n) for n in sh) for i, sh in zip(ids, shapes)}


def scale_images(inp: StageInputs, cfg: Config) -> StageOutputs:
    """Cell diameter (given or estimated at the ``points``), resized ``images`` and
    ``eval_images`` (float32 stacks), and ``scale`` (scale.json)."""
    images_uri = inp.uris["images"]
    ids = arrays.stack_ids(images_uri)
    if cfg.cell_diameter is not None:
        diameter, source, extra = float(cfg.cell_diameter), "config", {}
    else:
        pts = points_by_image(tables.read_table(inp.uris["points"]), ids, ROUND0_POSITIVE)
        with_pts = [k for k, i in enumerate(ids) if len(pts[ids[k]])]
        if not with_pts:
            raise InvalidInputError("cell_diameter='auto' needs at least one clicked cell to "
                                    "measure; give points, or set cell_diameter (px)")
        est = estimate_diameter([arrays.read_stack_item(images_uri, k) for k in with_pts],
                                [pts[ids[k]] for k in with_pts])
        diameter, source = est["diameter"], "estimated"
        extra = {"polarity": est["polarity"], "n_points": est["n_points"],
                 "profile": est["profile"]}
    s = scale_factor(diameter)
    logger.info("scale: cell diameter %.1f px (%s); images resized by %.3f to %.0f px cells",
                diameter, source, s, diameter * s)
    uris, shapes = {}, {}
    for key in ("images", "eval_images"):
        if key in inp.uris:
            dst = join(inp.out_dir, f"{key}.zarr")
            shapes.update(_resize_stack(inp.uris[key], dst, s))
            uris[key] = inp.uris[key] if s == 1.0 else dst
    info = {"diameter": diameter, "source": source, "scale": s,
            "canonical_diameter": CANONICAL_DIAMETER, **extra,
            "shapes": {i: list(sh) for i, sh in shapes.items()}}
    uris["scale"] = join(inp.out_dir, "scale.json")
    fs.write_bytes(uris["scale"], json.dumps(info, indent=1).encode())
    return StageOutputs(uris, {"cell_diameter": diameter, "scale": s})
