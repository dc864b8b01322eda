"""Read microscopy images (2-D grayscale or RGB TIFF/PNG) and ground-truth dot/label images.

Validation of what is read lives in :mod:`pseudocell.validation`; this module only reads.
"""
from __future__ import annotations

import logging
import io
from pathlib import Path, PurePosixPath

import numpy as np

__all__ = ["IMAGE_SUFFIXES", "read_raw", "to_gray", "normalize", "read_image",
           "list_images", "image_id", "points_from_dots", "points_from_labels"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")


def image_id(path: str | Path) -> str:
    """The id of an image file: its name without the suffix (``001cells.png`` → ``001cells``)."""
    name = PurePosixPath(str(path)).name
    return PurePosixPath(name).stem if PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES \
        else name


def list_images(folder: str | Path, pattern: str = "*") -> list[str]:
    """Image files in ``folder`` (a path or a URI such as ``s3://bucket/images``)
    matching ``pattern`` (glob), sorted by name."""
    from pseudocell.storage import fs

    if fs.is_local(str(folder)):
        return [str(p) for p in sorted(p for p in Path(folder).glob(pattern)
                                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)]
    fsys, root = fs.filesystem(str(folder))
    protocol = str(folder).split("://", 1)[0]
    found = fsys.glob(root.rstrip("/") + "/" + pattern)
    return sorted(f"{protocol}://{p}" for p in found
                  if PurePosixPath(p).suffix.lower() in IMAGE_SUFFIXES and fsys.isfile(p))


def read_raw(path: str | Path) -> np.ndarray:
    """Pixel array as stored (no conversion). TIFF via tifffile, others via Pillow; local
    paths or URIs."""
    from pseudocell.storage import fs

    with fs.open_uri(str(path), "rb") as f:
        data = f.read()
    if PurePosixPath(str(path)).suffix.lower() in (".tif", ".tiff"):
        import tifffile

        return np.asarray(tifffile.imread(io.BytesIO(data)))
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im)


def to_gray(arr: np.ndarray) -> np.ndarray:
    """(H, W) → itself; (H, W, 3|4) RGB(A) → luminance (ITU-R 601). Returns float32."""
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        a = a[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return a.astype(np.float32)


def normalize(gray: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Per-image percentile normalisation: ``low``→0, ``high``→1 (not clipped).

    >>> normalize(np.arange(101, dtype=np.float32), 0, 100)[[0, 50, 100]].tolist()
    [0.0, 0.5, 1.0]
    """
    lo, hi = np.percentile(gray, [low, high])
    scale = hi - lo if hi > lo else 1.0
    return ((gray - lo) / scale).astype(np.float32)


def read_image(path: str | Path) -> np.ndarray:
    """Read, convert to grayscale and normalise one image → (H, W) float32."""
    return normalize(to_gray(read_raw(path)))


def points_from_dots(dots: np.ndarray) -> np.ndarray:
    """Centres from a dot image (every pixel > half its max is one centre) → (n, 2) float64."""
    d = np.asarray(dots)
    if d.ndim == 3:
        d = d.max(axis=-1)
    if d.max() == 0:
        return np.zeros((0, 2), np.float64)
    ys, xs = np.nonzero(d > d.max() / 2)
    return np.stack([ys, xs], axis=1).astype(np.float64)


def points_from_labels(labels: np.ndarray) -> np.ndarray:
    """Centroids of an instance label image (0 = background) → (n, 2) float64, by label."""
    from scipy import ndimage

    lab = np.asarray(labels)
    ids = np.unique(lab)
    ids = ids[ids != 0]
    if len(ids) == 0:
        return np.zeros((0, 2), np.float64)
    return np.asarray(ndimage.center_of_mass(lab > 0, lab, ids), np.float64).reshape(-1, 2)
