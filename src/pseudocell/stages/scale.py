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
from dataclasses import dataclass, field

import numpy as np

from pseudocell.config import Config
from pseudocell.core.scale import (CANONICAL_DIAMETER, estimate_diameter,
                                   estimate_diameter_unlabeled, from_scaled, resize_image,
                                   scale_factor, scaled_shape, to_scaled)
from pseudocell.data.points import ROUND0_POSITIVE, points_by_image
from pseudocell.errors import InvalidInputError
from pseudocell.stages.base import StageInputs, StageOutputs
from pseudocell.stages.lazy import LazyItems
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
    image_scales : dict[str, float]
        Images resized by another factor than ``scale`` (the adapt modes' source
        images, whose cells have their own size).
    """

    diameter: float
    source: str
    scale: float
    shapes: dict[str, tuple[int, int]]
    image_scales: dict[str, float] = field(default_factory=dict)

    def scale_of(self, image_id: str) -> float:
        """Resize factor of one image."""
        return self.image_scales.get(image_id, self.scale)

    def to_scaled(self, image_id: str, pts: np.ndarray) -> np.ndarray:
        """(N, 2) original-image points → resized-image points."""
        return to_scaled(pts, self.shapes[image_id], self.scale_of(image_id))

    def from_scaled(self, image_id: str, pts: np.ndarray) -> np.ndarray:
        """(N, 2) resized-image points → original-image points."""
        return from_scaled(pts, self.shapes[image_id], self.scale_of(image_id))

    def length(self, px: float) -> float:
        """A length of ``px`` resized-image pixels in original pixels."""
        return px / self.scale


def read_scale(uri: str) -> ScaleInfo:
    """The :class:`ScaleInfo` written by :func:`scale_images`."""
    d = json.loads(fs.read_bytes(uri))
    return ScaleInfo(d["diameter"], d["source"], d["scale"],
                     {k: tuple(v) for k, v in d["shapes"].items()},
                     d.get("image_scales", {}))


def _resize_stack(src: str, dst: str, s: float) -> dict[str, tuple[int, int]]:
    ids, shapes = arrays.stack_ids(src), arrays.stack_shapes(src)
    if s != 1.0:
        arrays.create_stack(dst, ids, [scaled_shape(sh, s) for sh in shapes], dtype="float32")
        for k in range(len(ids)):
            arrays.write_stack_item(dst, k, resize_image(arrays.read_stack_item(src, k), s))
    return {i: tuple(int(n) for n in sh) for i, sh in zip(ids, shapes)}


def _measure(images_uri: str, points_uri: str, cfg_diameter: float | None) -> tuple:
    """(diameter, how, extra) at the points of a stack, or the configured diameter."""
    ids = arrays.stack_ids(images_uri)
    if cfg_diameter is not None:
        return float(cfg_diameter), "config", {}
    pts = points_by_image(tables.read_table(points_uri), ids, ROUND0_POSITIVE)
    with_pts = [k for k, i in enumerate(ids) if len(pts[ids[k]])]
    if not with_pts:
        raise InvalidInputError("cell_diameter='auto' needs at least one clicked cell to "
                                "measure; give points, or set cell_diameter (px)")
    reader = arrays.StackReader(images_uri)  # images read when used (16 at most)
    est = estimate_diameter(LazyItems(len(with_pts), lambda j: reader.read(with_pts[j]), 0),
                            [pts[ids[k]] for k in with_pts])
    return est["diameter"], "estimated", {"polarity": est["polarity"],
                                          "n_points": est["n_points"],
                                          "profile": est["profile"]}


def scale_images(inp: StageInputs, cfg: Config) -> StageOutputs:
    """Cell diameter (given or estimated at the ``points``), resized ``images``,
    ``eval_images`` and ``source_images`` (float32 stacks), and ``scale`` (scale.json).

    With ``source_images`` (the adapt modes) the ``points`` are the source's: the
    source's diameter is measured there (or ``cell_diameter``), the target's
    (``images``, ``eval_images``) is ``target_diameter`` or, by default, estimated
    without labels from the source's (:func:`~pseudocell.core.scale.
    estimate_diameter_unlabeled`); each domain is resized to the canonical cell size by
    its own factor. ``scale.json``'s diameter and scale are then the target's."""
    src_uri = inp.uris.get("source_images")
    diameter, source, extra = _measure(src_uri or inp.uris["images"], inp.uris.get("points"),
                                       cfg.cell_diameter)
    image_scales: dict[str, float] = {}
    factors = {"images": scale_factor(diameter), "eval_images": scale_factor(diameter)}
    if src_uri is not None:
        s_src = scale_factor(diameter)
        image_scales = {i: s_src for i in arrays.stack_ids(src_uri)}
        extra = {**extra, "source_diameter": diameter, "source_scale": s_src}
        if cfg.target_diameter is not None:
            diameter, source = float(cfg.target_diameter), "config"
        else:
            uri = inp.uris["images"]
            n = len(arrays.stack_ids(uri))
            picks = np.linspace(0, n - 1, min(n, 16)).round().astype(int)
            est = estimate_diameter_unlabeled([arrays.read_stack_item(uri, int(k))
                                               for k in sorted(set(picks))],
                                              diameter, polarity=extra.get("polarity", "bright"))
            diameter, source = est["diameter"], "estimated without labels"
            extra["target_guesses"] = est["guesses"]
        factors = {"images": scale_factor(diameter), "eval_images": scale_factor(diameter),
                   "source_images": s_src}
        logger.info("scale: source cells %.1f px, target cells %.1f px (%s)",
                    extra["source_diameter"], diameter, source)
    s = factors["images"]
    logger.info("scale: cell diameter %.1f px (%s); images resized by %.3f to %.0f px cells",
                diameter, source, s, diameter * s)
    uris, shapes = {}, {}
    for key, f in factors.items():
        if key in inp.uris:
            dst = join(inp.out_dir, f"{key}.zarr")
            shapes.update(_resize_stack(inp.uris[key], dst, f))
            uris[key] = inp.uris[key] if f == 1.0 else dst
    info = {"diameter": diameter, "source": source, "scale": s,
            "canonical_diameter": CANONICAL_DIAMETER, **extra,
            "shapes": {i: list(sh) for i, sh in shapes.items()}}
    if image_scales:
        info["image_scales"] = image_scales
    uris["scale"] = join(inp.out_dir, "scale.json")
    fs.write_bytes(uris["scale"], json.dumps(info, indent=1).encode())
    return StageOutputs(uris, {"cell_diameter": diameter, "scale": s})
