"""Local maxima of a detector heatmap."""
from __future__ import annotations

import numpy as np
from skimage.feature import peak_local_max

__all__ = ["find_peaks", "values_at", "calibrate_threshold", "PEAK_FLOOR"]


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


#: Candidate peaks below this heatmap value are never cells (targets peak at 1); the
#: calibrated threshold is chosen among the candidates above it.
PEAK_FLOOR = 0.05


def values_at(heatmap: np.ndarray, points: np.ndarray, radius: int) -> np.ndarray:
    """Largest ``heatmap`` value within a (2 radius + 1)² window around each point.

    Parameters
    ----------
    heatmap : (H, W) float array
    points : (N, 2) float array of (y, x) in heatmap pixels
    radius : int

    Returns
    -------
    (N,) float32
    """
    h = np.asarray(heatmap, np.float32)
    out = np.zeros(len(points), np.float32)
    for k, (y, x) in enumerate(np.rint(np.asarray(points).reshape(-1, 2)).astype(int)):
        y0, x0 = max(0, y - radius), max(0, x - radius)
        win = h[y0:y + radius + 1, x0:x + radius + 1]
        out[k] = win.max() if win.size else 0.0
    return out


def calibrate_threshold(candidates: np.ndarray, positives: np.ndarray, *,
                        recall: float = 0.9, floor: float = PEAK_FLOOR) -> float:
    """Peak threshold from the run's own labels: Otsu's split of the candidate peak
    values (cells against clutter), lowered if needed so that a fraction ``recall`` of
    the known positives' peak values stays above it.

    Parameters
    ----------
    candidates : (N,) float array
        Values of all local maxima >= ``floor`` on the training images.
    positives : (M,) float array
        Heatmap maxima at the known positive points (annotated and pseudo-positive).
    recall : float in (0, 1]
        Share of the known positives the threshold must keep.
    floor : float
        Lowest threshold returned.

    Returns
    -------
    float

    Peaks with a value >= the returned threshold are detections.

    >>> c = np.r_[np.full(50, 0.35), np.full(50, 0.9)]
    >>> round(calibrate_threshold(c, np.full(10, 0.9)), 3)     # midway between the modes
    0.625
    >>> round(calibrate_threshold(c, np.r_[np.full(9, 0.9), 0.2]), 3)  # 1 of 10 may go
    0.625
    >>> round(calibrate_threshold(c, np.r_[np.full(5, 0.9), np.full(5, 0.3)]), 3)
    0.3
    """
    from skimage.filters import threshold_otsu

    c = np.asarray(candidates, np.float64)
    c = c[c >= floor]
    if len(np.unique(c)) > 1:  # midway between the two classes Otsu separates
        o = float(threshold_otsu(c))
        t = 0.5 * (float(c[c <= o].max()) + float(c[c > o].min()))
    else:
        t = floor
    p = np.asarray(positives, np.float64)
    if len(p):
        k = min(len(p) - 1, int(np.floor((1.0 - recall) * len(p) + 1e-9)))
        t = min(t, float(np.sort(p)[k]))  # keeps >= len(p) - k of them
    return max(floor, t)
