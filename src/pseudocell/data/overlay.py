"""Overlay PNGs: the image with annotated points, pseudo-labels and detections."""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["COLORS", "draw_overlay"]

#: RGB colours of each point kind (distinct also for common colour-vision deficiencies).
COLORS = {
    "detection": (255, 221, 0),     # yellow ring
    "annotated": (0, 200, 0),       # green dot
    "seed": (200, 0, 200),          # magenta dot (label-free seed points)
    "pseudo_pos": (0, 160, 255),    # blue dot
    "pseudo_neg": (255, 40, 40),    # red cross
    "uncertain": (150, 150, 150),   # grey dot (adapt: detections not trusted yet)
    "human_added": (0, 230, 180),   # teal dot (a person added the cell)
    "human_confirmed": (255, 150, 0),  # orange dot (a person confirmed the detection)
    "human_rejected": (255, 0, 255),   # magenta cross (a person rejected the detection)
}
#: Kinds drawn as crosses (negative labels); the others are dots.
_CROSS = ("pseudo_neg", "human_rejected")
#: Kinds whose legend entry appears only on images that have them.
_OCCASIONAL = ("uncertain", "human_added", "human_confirmed", "human_rejected")

_LEGEND = {"detection": "detected", "annotated": "annotated", "seed": "seed",
           "pseudo_pos": "pseudo+",
           "pseudo_neg": "pseudo-", "uncertain": "unsure", "human_added": "added",
           "human_confirmed": "confirmed", "human_rejected": "rejected"}


def draw_overlay(path: str | Path, image: np.ndarray, layers: dict[str, np.ndarray],
                 radius: int = 7) -> None:
    """Write ``image`` (H, W) float with point ``layers`` ({kind: (n, 2) yx}) as an RGB PNG.

    Detections are rings of ``radius``; annotated and positive pseudo-labels filled dots;
    negative pseudo-labels crosses. A legend strip is drawn at the top.
    """
    from PIL import Image, ImageDraw

    im = np.asarray(image)
    if im.dtype.kind == "f":  # a normalised image: 0..1 is the display range
        g = np.clip(im, 0.0, 1.0) * 255
    else:  # raw integers: stretch min..max
        im = im.astype(np.float32)
        g = (im - im.min()) / max(float(im.max() - im.min()), 1.0) * 255
    rgb = Image.fromarray(np.repeat(g.astype(np.uint8)[..., None], 3, axis=2))
    d = ImageDraw.Draw(rgb)
    for kind in COLORS:
        pts = layers.get(kind)
        if pts is None:
            continue
        c = COLORS[kind]
        for y, x in np.asarray(pts).reshape(-1, 2):
            if kind == "detection":
                d.ellipse([x - radius, y - radius, x + radius, y + radius], outline=c, width=1)
            elif kind in _CROSS:
                d.line([x - 4, y - 4, x + 4, y + 4], fill=c, width=2)
                d.line([x - 4, y + 4, x + 4, y - 4], fill=c, width=2)
            else:
                d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=c)
    x, y = 2, 0
    for kind, c in COLORS.items():  # legend, wrapped onto more rows on narrow images
        if kind in _OCCASIONAL and not len(layers.get(kind, ())):
            continue  # adapt runs and reviewed runs only
        label = _LEGEND[kind]
        width = 16 + 6 * len(label)
        if x > 2 and x + width > rgb.width:
            x, y = 2, y + 12
        d.rectangle([x, y + 2, x + 8, y + 10], fill=c)
        d.text((x + 11, y), label, fill=c)
        x += width
    rgb.save(path)
