"""Square patches around points, reflect-padded at image borders."""
from __future__ import annotations

import numpy as np

__all__ = ["crop_patches"]


def crop_patches(image: np.ndarray, points_yx: np.ndarray, size: int) -> np.ndarray:
    """Crop ``size`` x ``size`` patches centred on the rounded points.

    Parameters
    ----------
    image : ndarray of shape (H, W) or (C, H, W), float
    points_yx : ndarray of shape (n, 2), float, (y, x) inside the image
    size : int, odd

    Returns
    -------
    ndarray of shape (n, C, size, size), float32 (C = 1 for a 2-D image). Pixels beyond
    the border are mirrored (``numpy.pad`` mode ``reflect``).

    >>> img = np.arange(25, dtype=np.float32).reshape(5, 5)
    >>> crop_patches(img, np.array([[0.0, 0.0]]), 3)[0, 0].tolist()
    [[6.0, 5.0, 6.0], [1.0, 0.0, 1.0], [6.0, 5.0, 6.0]]
    """
    if size % 2 != 1:
        raise ValueError(f"size must be odd, got {size}")
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 2:
        img = img[None]
    r = size // 2
    pts = np.rint(np.asarray(points_yx, dtype=np.float64).reshape(-1, 2)).astype(int)
    C, H, W = img.shape
    if r >= H or r >= W:  # numpy's reflect cannot pad wider than the image
        padded = np.pad(img, ((0, 0), (r, r), (r, r)), mode="symmetric")
    else:
        padded = np.pad(img, ((0, 0), (r, r), (r, r)), mode="reflect")
    out = np.empty((len(pts), C, size, size), dtype=np.float32)
    for i, (y, x) in enumerate(pts):
        y = min(max(y, 0), H - 1)
        x = min(max(x, 0), W - 1)
        out[i] = padded[:, y:y + size, x:x + size]
    return out
