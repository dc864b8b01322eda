"""Confident background points from the image itself, for round 0.

The masked loss of round 0 sees background only inside the discs around clicked cells,
so a detector trained on a few clicks can fire anywhere else (the bright-field demo's
round 0 at a fixed threshold; every Hoechst image of the benchmark, whose dark
background the detector never saw). Background points give it background to learn from:
grid points far from any blob-like structure at the cell scale.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["structure_map", "background_points"]


def structure_map(image: np.ndarray, cell_diameter: float, reach: float = 0.0) -> np.ndarray:
    """Largest scale-normalised |LoG| response of either polarity at scales around the
    cell size (0.5x, 0.7x and 1x the cell's sigma), max-filtered over a window one cell
    diameter plus ``2 reach`` wide: high wherever a cell (or anything of its size) is
    within ``reach`` px of the cell's edge.

    Parameters
    ----------
    image : (H, W) float array (z-scored inside)
    cell_diameter : float, px

    Returns
    -------
    (H, W) float64
    """
    im = np.asarray(image, np.float64)
    im = (im - im.mean()) / (im.std() + 1e-12)
    s0 = cell_diameter / (2.0 * np.sqrt(2.0))
    resp = np.max([np.abs(s**2 * ndimage.gaussian_laplace(im, s)) for s in
                   (0.5 * s0, 0.7 * s0, s0)], axis=0)
    return ndimage.maximum_filter(resp, size=max(3, int(round(cell_diameter + 2 * reach))) | 1)


def background_points(image: np.ndarray, cells: np.ndarray, *, cell_diameter: float,
                      spacing: float, level: float = 0.25, reach: float = 0.0) -> np.ndarray:
    """Grid points (spacing ``spacing`` px) where :func:`structure_map` is below
    ``level`` times its median at the clicked ``cells``, and at least 1.5 cell diameters
    from every click.

    Parameters
    ----------
    image : (H, W) float array
    cells : (N, 2) float array of clicked centres (y, x); none: no points
    cell_diameter, spacing : float, px
    level : float
        Fraction of a typical clicked cell's structure that still counts as background.
    reach : float, px
        Nothing cell-like may lie within this distance (the radius of the loss disc a
        background point gets), so its disc never covers part of an unclicked cell.

    Returns
    -------
    (M, 2) float64 of (y, x)

    >>> im = np.zeros((64, 96), np.float32)
    >>> yy, xx = np.mgrid[:64, :96]
    >>> im[(yy - 20) ** 2 + (xx - 20) ** 2 <= 25] = 1.0      # one cell, top left
    >>> pts = background_points(im, np.array([[20.0, 20.0]]), cell_diameter=10,
    ...                         spacing=16)
    >>> bool(len(pts)) and bool(np.all(np.hypot(pts[:, 0] - 20, pts[:, 1] - 20) >= 15))
    True
    """
    cells = np.asarray(cells, np.float64).reshape(-1, 2)
    if not len(cells):
        return np.zeros((0, 2))
    s = structure_map(image, cell_diameter, reach)
    H, W = s.shape
    ref = np.median(s[np.clip(np.rint(cells[:, 0]).astype(int), 0, H - 1),
                      np.clip(np.rint(cells[:, 1]).astype(int), 0, W - 1)])
    step = max(1, int(round(spacing)))
    gy, gx = np.mgrid[step // 2:H:step, step // 2:W:step]
    grid = np.stack([gy.ravel(), gx.ravel()], axis=1)
    quiet = s[grid[:, 0], grid[:, 1]] < level * ref
    d = np.min(np.hypot(grid[:, None, 0] - cells[None, :, 0],
                        grid[:, None, 1] - cells[None, :, 1]), axis=1)
    return grid[quiet & (d >= 1.5 * cell_diameter + reach)].astype(np.float64)
