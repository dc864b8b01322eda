"""Choose positive and negative pseudo-labels among the unlabeled detections."""
from __future__ import annotations

import numpy as np

from scipy import ndimage

from pseudocell.core.metrics import near_any
from pseudocell.core.peaks import find_peaks, values_at
from pseudocell.core.ranker import BLOCK_ROWS, fit_ranker

__all__ = ["top_k", "top_fraction", "rank_unlabeled", "choose", "background_estimate",
           "blend_ranks", "peak_confidence", "empty_points", "curriculum_fraction", "admit"]


def top_k(scores: np.ndarray, k: int, eligible: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``k`` highest scores (ties: lower index first), among the
    ``eligible`` samples (bool, (n,)) only when given.

    >>> top_k(np.array([0.1, 0.9, 0.5, 0.9]), 2, np.array([1, 0, 1, 1], bool)).tolist()
    [3, 2]
    """
    order = np.lexsort((np.arange(len(scores)), -np.asarray(scores)))
    if eligible is not None:
        order = order[np.asarray(eligible, bool)[order]]
    return order[:k]


def top_fraction(scores: np.ndarray, fraction: float) -> np.ndarray:
    """Indices of the ``round(fraction * n)`` highest scores (ties: lower index first).

    >>> top_fraction(np.array([0.1, 0.9, 0.5, 0.9]), 0.5).tolist()
    [1, 3]
    """
    scores = np.asarray(scores)
    k = int(np.floor(fraction * len(scores) + 0.5))
    order = np.lexsort((np.arange(len(scores)), -scores))
    return order[:k]


def rank_unlabeled(feat_p: np.ndarray, feat_u: np.ndarray, *, p: float, lam: float,
                   neg_ranker: str = "flip",
                   provisional_top: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """P-score and N-score of every unlabeled sample.

    The P-ranker is trained with positives = P, unlabeled = U; its score on U is the
    P-score. The N-score comes from a ranker trained with flipped roles:

    * ``neg_ranker="flip"`` (default, as the paper describes): positives = U,
      unlabeled = P. U samples unlike anything in P score highest.
    * ``neg_ranker="provisional"`` (design.md's reading of the reference code): the top
      ``provisional_top`` of U by P-score are provisionally positive; positives = the
      rest of U, unlabeled = P ∪ provisional.

    On the demo's round-0 features (training images, 5 % of U) the negatives chosen by
    ``flip`` were 82 % background against 65 % for ``provisional``.

    Parameters
    ----------
    feat_p : ndarray (n_p, d), features of labeled positives
    feat_u : ndarray (n_u, d), features of unlabeled detections
        Or rows read on demand (see :func:`~pseudocell.core.ranker.fit_ranker`).

    Returns
    -------
    pos_scores, neg_scores : ndarray (n_u,), float64
    """
    ranker_p = fit_ranker(feat_p, feat_u, p=p, lam=lam)
    s_pos = ranker_p.score(feat_u, block=BLOCK_ROWS)
    if neg_ranker == "flip":
        return s_pos, fit_ranker(feat_u, feat_p, p=p, lam=lam).score(feat_u, block=BLOCK_ROWS)
    if neg_ranker != "provisional":
        raise ValueError(f"neg_ranker must be 'flip' or 'provisional', got {neg_ranker!r}")
    prov = top_fraction(s_pos, provisional_top)
    rest = np.setdiff1d(np.arange(len(feat_u)), prov)
    if len(rest) == 0 or len(prov) == 0:
        raise ValueError(
            f"cannot split U (n_u={len(feat_u)}) at provisional_top={provisional_top}: "
            "too few unlabeled detections"
        )
    # this variant indexes U at random: its rows are read into memory here
    ranker_n = fit_ranker(feat_u[rest], np.concatenate([feat_p[:len(feat_p)], feat_u[prov]]),
                          p=p, lam=lam)
    return s_pos, ranker_n.score(feat_u, block=BLOCK_ROWS)


def choose(pos_scores: np.ndarray, neg_scores: np.ndarray, *, alpha: float,
           beta: float, neg_eligible: np.ndarray | None = None,
           pos_eligible: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top ``alpha`` of U by P-score → positives; top ``beta`` by N-score → negatives;
    a sample in both lists is dropped from both.

    ``neg_eligible`` / ``pos_eligible`` (bool, (n_u,)) restrict the negatives / positives
    to those samples; the counts stay ``round(beta * n_u)`` / ``round(alpha * n_u)``
    at most (fewer if fewer are eligible).

    >>> pos, neg = choose(np.array([3., 2., 1., 0.]), np.array([0., 1., 2., 3.]),
    ...                   alpha=0.5, beta=0.25)
    >>> pos.tolist(), neg.tolist()
    ([0, 1], [3])
    >>> pos, neg = choose(np.array([3., 2., 1., 0.]), np.array([0., 1., 2., 3.]),
    ...                   alpha=0.5, beta=0.25, pos_eligible=np.array([0, 1, 1, 1], bool),
    ...                   neg_eligible=np.array([1, 1, 1, 0], bool))
    >>> pos.tolist(), neg.tolist()     # 0 and 3 not eligible; 2 chosen by both: dropped
    ([1], [])
    """
    def pick(scores: np.ndarray, frac: float, eligible: np.ndarray | None) -> np.ndarray:
        return top_k(scores, len(top_fraction(scores, frac)), eligible)

    pos = pick(pos_scores, alpha, pos_eligible)
    neg = pick(neg_scores, beta, neg_eligible)
    both = np.intersect1d(pos, neg)
    return pos[~np.isin(pos, both)], neg[~np.isin(neg, both)]


def blend_ranks(scores: np.ndarray, peak: np.ndarray, weight: float) -> np.ndarray:
    """Blend a ranker's scores with the detector's peak heights by rank.

    ``(1 - weight) r(scores) + weight r(peak)``, with ``r`` the rank scaled to [0, 1]
    (ties share their mean rank), so neither scale matters: the ranker orders U by its
    PU features, the detector by its own confidence, and a sample both rate high comes
    first. Pass ``-peak`` to order negatives (low peaks first).

    Parameters
    ----------
    scores, peak : ndarray (n,), float
        A ranker's scores and the detector's peak value of the same n samples.
    weight : float in [0, 1]
        0: the ranker's order; 1: the peak's order.

    Returns
    -------
    ndarray (n,), float64
        Higher comes first.

    >>> blend_ranks(np.array([3., 2., 1.]), np.array([0.1, 0.9, 0.5]), 0.5).tolist()
    [0.5, 0.75, 0.25]
    >>> blend_ranks(np.array([3., 2., 1.]), np.array([0.1, 0.9, 0.5]), 0.0).tolist()
    [1.0, 0.5, 0.0]
    """
    from scipy.stats import rankdata
    scores, peak = np.asarray(scores, np.float64), np.asarray(peak, np.float64)
    if scores.shape != peak.shape:
        raise ValueError(f"scores {scores.shape} and peak {peak.shape} differ in shape")
    n = len(scores)
    if n < 2:
        return np.zeros(n)
    r = lambda v: (rankdata(v) - 1.0) / (n - 1)  # noqa: E731
    return (1.0 - weight) * r(scores) + weight * r(peak)


def background_estimate(u_peaks: np.ndarray, threshold: float, recall: float) -> float:
    """Expected number of background detections among the unlabeled ones, from the
    detector's own calibration.

    The peak threshold keeps (at least) a share ``recall`` of the known cells above it;
    if U's cells peak like the known ones, the ``n_above`` unlabeled detections at or
    above ``threshold`` bring ``n_above (1 - recall) / recall`` cells below it, and the
    rest of the ``n_below`` detections below it are background::

        estimate = max(0, n_below - n_above (1 - recall) / recall)

    A lower bound in practice (the known cells were trained on and peak higher than
    unseen ones). On the human-in-the-loop benchmark's runs it was 0 where U was
    2-9 % background (U2OS) and 0.41-0.46 x #U where U was 46-50 % background
    (bright-field round 0).

    Parameters
    ----------
    u_peaks : ndarray (n_u,), float
        Detector peak value of every unlabeled detection (the candidates reach down
        to ``unlabeled_ratio`` x the threshold).
    threshold : float
        The round's peak threshold (``inf``: every detection is below it).
    recall : float in (0, 1]

    >>> u = np.array([0.9, 0.8, 0.7, 0.6, 0.55, 0.52, 0.3, 0.2, 0.1])
    >>> background_estimate(u, 0.5, 0.75)   # 6 above bring 2 cells below: 1 background
    1.0
    >>> background_estimate(u, 0.5, 0.5)    # 6 cells expected below, only 3 there
    0.0
    """
    u_peaks = np.asarray(u_peaks, np.float64)
    n_above = int((u_peaks >= threshold).sum())
    n_below = len(u_peaks) - n_above
    return float(max(0.0, n_below - n_above * (1.0 - recall) / recall))


# -- domain adaptation: uncertainty and curriculum (Cho et al. 2022) --------------------

def peak_confidence(passes: np.ndarray, peaks: np.ndarray, *, radius: int,
                    min_distance: int) -> dict[str, np.ndarray]:
    """How sure a detector is of each peak, from ``T`` stochastic heatmaps of one image.

    Per peak and pass t: ``h_t`` = the pass's largest value within ``radius`` px (a
    (2 radius + 1)² window). ``height`` = mean of ``h_t``, ``spread`` = their standard
    deviation, ``freq`` = share of passes that have a local maximum of at least half
    the peak's ``height`` within ``radius`` px. The score is a lower confidence bound
    of the peak's height, counted only as often as the peak appears::

        confidence = freq * max(height - spread, 0)

    Parameters
    ----------
    passes : ndarray of shape (T, H, W), float32
        Heatmaps of the same image (:func:`~pseudocell.core.detector.heatmap_passes`).
    peaks : ndarray of shape (N, 2), float64
        Peak positions (y, x) in the heatmaps' pixels.
    radius : int
        Search radius (px) for a peak's value and its re-appearance in a pass.
    min_distance : int
        Peak separation used to find each pass's local maxima.

    Returns
    -------
    dict of (N,) float64 arrays: ``confidence``, ``height``, ``spread``, ``freq``

    >>> p = np.zeros((2, 9, 9), np.float32); p[0, 4, 4] = 1.0; p[1, 4, 5] = 0.6
    >>> c = peak_confidence(p, np.array([[4.0, 4.0]]), radius=1, min_distance=1)
    >>> [round(float(c[k][0]), 3) for k in ("height", "spread", "freq", "confidence")]
    [0.8, 0.2, 1.0, 0.6]
    """
    peaks = np.asarray(peaks, np.float64).reshape(-1, 2)
    h = np.stack([values_at(p, peaks, radius) for p in passes]).astype(np.float64)
    height = h.mean(axis=0) if len(passes) else np.zeros(len(peaks))
    spread = h.std(axis=0) if len(passes) else np.zeros(len(peaks))
    found = np.zeros(len(peaks))
    floor = float(height.min()) / 2 if len(peaks) else 0.0
    for k, p in enumerate(passes):
        if not len(peaks):
            break
        pts, vals = find_peaks(p, threshold=max(floor, 1e-6), min_distance=min_distance,
                               subpixel=False)
        for j in range(len(peaks)):
            strong = pts[vals >= height[j] / 2]
            found[j] += bool(near_any(peaks[j:j + 1], strong, radius)[0])
    freq = found / max(1, len(passes))
    return {"confidence": freq * np.maximum(height - spread, 0.0), "height": height,
            "spread": spread, "freq": freq}


def empty_points(passes: np.ndarray, avoid: np.ndarray, *, spacing: float,
                 clearance: float, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Confidently empty places of one image: grid points (every ``spacing`` px) where no
    pass of the detector comes near a cell.

    A grid point qualifies when the largest value of every pass within ``spacing`` px
    (a square window) is below ``level`` and no point of ``avoid`` (e.g. every
    candidate peak, however weak) lies within ``clearance`` px.

    Parameters
    ----------
    passes : ndarray of shape (T, H, W), float32
    avoid : ndarray of shape (N, 2)
    spacing : float
        Grid step (px).
    clearance : float
        Smallest distance (px) to a point of ``avoid``.
    level : float
        Highest heatmap value an empty place may show.

    Returns
    -------
    points : ndarray of shape (M, 2), float64, emptiest first
    values : ndarray of shape (M,), float32, their largest value over passes and window

    >>> p = np.zeros((2, 20, 20), np.float32); p[1, 5, 5] = 1.0
    >>> pts, _ = empty_points(p, np.array([[15.0, 15.0]]), spacing=4, clearance=6, level=0.5)
    >>> sorted(map(tuple, pts.astype(int).tolist()))
    [(4, 12), (4, 16), (8, 12), (8, 16), (12, 4), (12, 8), (16, 4), (16, 8)]
    """
    top = np.asarray(passes, np.float32).max(axis=0)
    r = max(1, int(round(spacing)))
    near = ndimage.maximum_filter(top, size=2 * r + 1, mode="nearest")
    ys, xs = np.meshgrid(np.arange(r, top.shape[0] - r + 1, r),
                         np.arange(r, top.shape[1] - r + 1, r), indexing="ij")
    grid = np.stack([ys.ravel(), xs.ravel()], axis=1).astype(np.float64)
    vals = near[ys.ravel(), xs.ravel()]
    keep = (vals < level) & ~near_any(grid, avoid, clearance)
    grid, vals = grid[keep], vals[keep]
    order = np.lexsort((np.arange(len(vals)), vals))
    return grid[order], vals[order].astype(np.float32)


def curriculum_fraction(schedule: tuple[float, ...], rnd: int) -> float:
    """Share of the target's peaks admitted in round ``rnd``: ``schedule[rnd]``, the last
    entry for every later round.

    >>> curriculum_fraction((0.2, 0.4), 0), curriculum_fraction((0.2, 0.4), 5)
    (0.2, 0.4)
    """
    return float(schedule[min(rnd, len(schedule) - 1)])


def admit(confidence: np.ndarray, fraction: float, min_confidence: float = 0.0) -> np.ndarray:
    """Indices of the most confident ``round(fraction * n)`` peaks, among those whose
    confidence is > 0 and >= ``min_confidence`` (the confidence cut), most confident
    first.

    >>> admit(np.array([0.9, 0.1, 0.5, 0.0]), 0.5).tolist()
    [0, 2]
    >>> admit(np.array([0.9, 0.1, 0.5, 0.0]), 1.0, min_confidence=0.4).tolist()
    [0, 2]
    """
    conf = np.asarray(confidence, np.float64)
    chosen = top_fraction(conf, fraction)
    return chosen[(conf[chosen] > 0) & (conf[chosen] >= min_confidence)]
