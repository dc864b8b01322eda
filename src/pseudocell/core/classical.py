"""A classical, non-learning blob detector (Laplacian of Gaussian) as a baseline."""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.feature import peak_local_max

__all__ = ["log_detect"]


def log_detect(image: np.ndarray, *, sigma: float, threshold: float, polarity: str = "dark",
               min_distance: int = 6) -> np.ndarray:
    """Cells as local maxima of the scale-normalised LoG response at one scale.

    Parameters
    ----------
    image : ndarray (H, W), float, normalised to about [0, 1]
    sigma : float, px; a blob of radius r responds most at sigma ≈ r / sqrt(2)
    threshold : float, minimum normalised response
    polarity : {"dark", "bright"}, whether cells are darker or brighter than background
    min_distance : int, px

    Returns
    -------
    ndarray (n, 2), float64, (y, x)

    >>> img = np.zeros((40, 40), np.float32); img[18:23, 18:23] = 1.0
    >>> log_detect(img, sigma=2.0, threshold=0.1, polarity="bright").tolist()
    [[20.0, 20.0]]
    """
    if polarity not in ("dark", "bright"):
        raise ValueError(f"polarity must be 'dark' or 'bright', got {polarity!r}")
    sign = -1.0 if polarity == "bright" else 1.0
    resp = sign * sigma**2 * ndimage.gaussian_laplace(np.asarray(image, np.float64), sigma)
    pts = peak_local_max(resp, min_distance=min_distance, threshold_abs=threshold,
                         exclude_border=False)
    return pts.astype(np.float64).reshape(-1, 2)
