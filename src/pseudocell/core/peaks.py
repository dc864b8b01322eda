"""Local maxima of a detector heatmap."""
from __future__ import annotations

import numpy as np
from skimage.feature import peak_local_max

__all__ = ["find_peaks"]


def find_peaks(
    heatmap: np.ndarray,
    *,
    threshold: float = 0.3,
    min_distance: int = 6,
    mode: str = "absolute",
) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima of ``heatmap`` above a threshold.

    Parameters
    ----------
    heatmap : ndarray of shape (H, W), float
        Detector output (targets peak at 1).
    threshold : float
        ``mode="absolute"``: minimum output value of a peak.
        Ignored in ``mode="reference"``.
    min_distance : int
        Minimum separation (px) between peaks (Chebyshev, as in skimage).
    mode : {"absolute", "reference"}
        ``reference`` reproduces the reference code: scale each image to 0-255 by its
        own min/max, then keep maxima >= 128. This always yields peaks, even on a blank
        prediction, which is why ``absolute`` is the default.

    Returns
    -------
    points_yx : ndarray of shape (n, 2), float64, (y, x), sorted by descending value
    values : ndarray of shape (n,), float32, heatmap value at each peak (unscaled)

    >>> h = np.zeros((20, 20), np.float32); h[5, 5] = 1.0; h[14, 12] = 0.5; h[2, 17] = 0.1
    >>> find_peaks(h, threshold=0.3, min_distance=2)[0].tolist()
    [[5.0, 5.0], [14.0, 12.0]]
    """
    h = np.asarray(heatmap, dtype=np.float32)
    if mode == "absolute":
        img, thr = h, float(threshold)
    elif mode == "reference":
        lo, hi = float(h.min()), float(h.max())
        img = (h - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(h)
        thr = 128.0
    else:
        raise ValueError(f"mode must be 'absolute' or 'reference', got {mode!r}")
    coords = peak_local_max(img, min_distance=int(min_distance), threshold_abs=thr,
                            exclude_border=False)
    coords = coords.astype(np.float64).reshape(-1, 2)
    values = h[coords[:, 0].astype(int), coords[:, 1].astype(int)] if len(coords) else \
        np.zeros(0, np.float32)
    order = np.lexsort((coords[:, 1], coords[:, 0], -values)) if len(coords) else np.zeros(0, int)
    return coords[order], values[order].astype(np.float32)
