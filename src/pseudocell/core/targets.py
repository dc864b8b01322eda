"""Heatmap targets and loss masks for the masked-MSE detector.

Points are ``(n, 2)`` float arrays of pixel coordinates in (y, x) order.
"""
from __future__ import annotations

import numpy as np

__all__ = ["gaussian_heatmap", "disc_mask", "make_target"]


def _as_points(points_yx: np.ndarray | None) -> np.ndarray:
    if points_yx is None:
        return np.zeros((0, 2), dtype=np.float64)
    return np.asarray(points_yx, dtype=np.float64).reshape(-1, 2)


def _windows(shape: tuple[int, int], points_yx: np.ndarray | None, r: int):
    """For each point, the (slice_y, slice_x) of its window of half-size ``r`` clipped to
    ``shape`` and the offsets dy (h, 1), dx (1, w) of the window pixels from the point."""
    H, W = shape
    for y, x in _as_points(points_yx):
        y0, y1 = max(int(np.floor(y)) - r, 0), min(int(np.ceil(y)) + r + 1, H)
        x0, x1 = max(int(np.floor(x)) - r, 0), min(int(np.ceil(x)) + r + 1, W)
        if y0 < y1 and x0 < x1:
            yield ((slice(y0, y1), slice(x0, x1)),
                   (np.arange(y0, y1) - y)[:, None], (np.arange(x0, x1) - x)[None, :])


def gaussian_heatmap(shape: tuple[int, int], points_yx: np.ndarray, sigma: float) -> np.ndarray:
    """Max of unit-peak Gaussians centred at ``points_yx``.

    Parameters
    ----------
    shape : (H, W)
    points_yx : ndarray of shape (n, 2), float, pixel coordinates (y, x)
    sigma : float, px

    Returns
    -------
    ndarray of shape (H, W), float32, values in [0, 1]; 1 exactly at integer centres.

    >>> h = gaussian_heatmap((5, 5), np.array([[2.0, 2.0]]), sigma=1.0)
    >>> float(h[2, 2]), round(float(h[2, 3]), 4)
    (1.0, 0.6065)
    """
    out = np.zeros(shape, dtype=np.float32)
    for win, dy, dx in _windows(shape, points_yx, int(np.ceil(4 * sigma))):
        g = np.exp(-(dy**2 + dx**2) / (2 * sigma**2)).astype(np.float32)
        np.maximum(out[win], g, out=out[win])
    return out


def disc_mask(shape: tuple[int, int], points_yx: np.ndarray, radius: float) -> np.ndarray:
    """Union of discs ``|p - c| <= radius`` around each point.

    Returns
    -------
    ndarray of shape (H, W), bool

    >>> int(disc_mask((7, 7), np.array([[3.0, 3.0]]), 1.0).sum())
    5
    """
    out = np.zeros(shape, dtype=bool)
    for win, dy, dx in _windows(shape, points_yx, int(np.ceil(radius))):
        out[win] |= (dy**2 + dx**2) <= radius**2
    return out


def make_target(
    shape: tuple[int, int],
    positives_yx: np.ndarray | None,
    negatives_yx: np.ndarray | None,
    sigma: float,
    mask_radius: float,
    neg_radius: float | None = None,
    context_yx: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Target heatmap and loss mask for one image.

    The target is the Gaussian heatmap of the positives. The mask is the union of discs
    of ``mask_radius`` around positives and of ``neg_radius`` (default: ``mask_radius``)
    around negatives. ``context_yx`` (cells believed but not trusted) are drawn into
    the target too, with no disc of their own: where a label's disc reaches them, the
    loss sees a cell there rather than background. Inside a negative disc that no
    positive disc overlaps, the target is forced to 0 (a negative pseudo-point says
    "no cell here"); where discs overlap, the positive Gaussian wins.

    Returns
    -------
    target : ndarray of shape (H, W), float32 in [0, 1]
    mask : ndarray of shape (H, W), bool

    >>> t, m = make_target((9, 9), np.array([[2.0, 2.0]]), np.array([[7.0, 7.0]]), 1.0, 1.0)
    >>> float(t[2, 2]), bool(m[7, 7]), float(t[7, 7]), bool(m[0, 8])
    (1.0, True, 0.0, False)
    """
    pos_mask = disc_mask(shape, positives_yx, mask_radius)
    neg_mask = disc_mask(shape, negatives_yx, mask_radius if neg_radius is None else neg_radius)
    drawn = positives_yx
    if context_yx is not None and len(context_yx):
        drawn = np.concatenate([_as_points(positives_yx), _as_points(context_yx)])
    target = gaussian_heatmap(shape, drawn, sigma)
    target[neg_mask & ~pos_mask] = 0.0
    return target, pos_mask | neg_mask
