"""One-to-one matching of detections to ground truth within a radius, and P/R/F."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

__all__ = ["MatchResult", "match_points", "prf", "pooled", "near_any"]


@dataclass(frozen=True)
class MatchResult:
    """Counts of one matching. ``pairs`` is (n_tp, 2) int: (pred index, gt index)."""

    tp: int
    fp: int
    fn: int
    pairs: np.ndarray

    @property
    def precision(self) -> float:
        return prf(self.tp, self.fp, self.fn)[0]

    @property
    def recall(self) -> float:
        return prf(self.tp, self.fp, self.fn)[1]

    @property
    def f1(self) -> float:
        return prf(self.tp, self.fp, self.fn)[2]

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("pairs")
        d.update(precision=self.precision, recall=self.recall, f1=self.f1)
        return d


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall, F1. An empty prediction of an empty image scores (1, 1, 1);
    any other zero denominator gives 0.

    >>> prf(8, 2, 0)
    (0.8, 1.0, 0.8888888888888888)
    """
    if tp + fp + fn == 0:
        return 1.0, 1.0, 1.0
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * tp / (2 * tp + fp + fn)
    return p, r, f



def match_points(pred_yx: np.ndarray, gt_yx: np.ndarray, radius: float) -> MatchResult:
    """Optimal one-to-one matching (most pairs, then least total distance).

    Pairs farther apart than ``radius`` are forbidden. Uses the Hungarian algorithm on
    the distance matrix with forbidden pairs priced above any sum of allowed distances,
    so the assignment first maximises the number of matches.

    Parameters
    ----------
    pred_yx : ndarray of shape (n_pred, 2), float
    gt_yx : ndarray of shape (n_gt, 2), float
    radius : float, px

    >>> r = match_points(np.array([[0., 0.], [0., 9.]]), np.array([[0., 5.], [0., 13.]]), 5.0)
    >>> (r.tp, r.fp, r.fn)
    (2, 0, 0)
    """
    pred = np.asarray(pred_yx, dtype=np.float64).reshape(-1, 2)
    gt = np.asarray(gt_yx, dtype=np.float64).reshape(-1, 2)
    if len(pred) == 0 or len(gt) == 0:
        return MatchResult(0, len(pred), len(gt), np.zeros((0, 2), dtype=int))
    d = cdist(pred, gt)
    allowed = d <= radius
    # only rows/cols with at least one allowed pair take part; keeps the problem small
    rows = np.flatnonzero(allowed.any(axis=1))
    cols = np.flatnonzero(allowed.any(axis=0))
    if len(rows) == 0:
        return MatchResult(0, len(pred), len(gt), np.zeros((0, 2), dtype=int))
    sub = d[np.ix_(rows, cols)]
    big = radius * (min(len(rows), len(cols)) + 1) + 1.0
    cost = np.where(sub <= radius, sub, big)
    r_idx, c_idx = linear_sum_assignment(cost)
    ok = cost[r_idx, c_idx] <= radius
    pairs = np.stack([rows[r_idx[ok]], cols[c_idx[ok]]], axis=1).astype(int)
    tp = len(pairs)
    return MatchResult(tp, len(pred) - tp, len(gt) - tp, pairs)


def pooled(results: list[MatchResult]) -> dict:
    """Sum counts over images and return tp/fp/fn/precision/recall/f1 as plain floats."""
    tp = sum(r.tp for r in results)
    fp = sum(r.fp for r in results)
    fn = sum(r.fn for r in results)
    p, r, f = prf(tp, fp, fn)
    return {"tp": tp, "fp": fp, "fn": fn, "precision": p, "recall": r, "f1": f}


def near_any(points_yx: np.ndarray, ref_yx: np.ndarray, radius: float) -> np.ndarray:
    """For each point, whether any reference point lies within ``radius``.

    Returns
    -------
    ndarray of shape (n_points,), bool

    >>> near_any(np.array([[0., 0.], [0., 9.]]), np.array([[0., 2.]]), 3.0).tolist()
    [True, False]
    """
    pts = np.asarray(points_yx, dtype=np.float64).reshape(-1, 2)
    ref = np.asarray(ref_yx, dtype=np.float64).reshape(-1, 2)
    if len(pts) == 0 or len(ref) == 0:
        return np.zeros(len(pts), bool)
    from scipy.spatial import cKDTree

    return cKDTree(ref).query(pts, k=1)[0] <= radius
