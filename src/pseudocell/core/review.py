"""Human in the loop: which tiles a person should look at, and how their answers become
labels. Pure functions: numpy in, numpy out (no files, no Ray).

Coordinates are pixels (y, x) of the image the arrays describe; a tile is ``(y0, x0, h,
w)`` (integers, the box ``y0 <= y < y0 + h``, ``x0 <= x < x0 + w``).
"""
from __future__ import annotations

import numpy as np

from pseudocell.core.metrics import near_any
from pseudocell.core.peaks import values_at

__all__ = ["HUMAN_KINDS", "HUMAN_POSITIVE", "tile_grid", "in_box", "overlap_fraction",
           "decision_disagreement", "tile_scores", "choose_tiles", "merge_human",
           "review_counts"]

#: Label kinds a person's review writes (positives: added and confirmed cells).
HUMAN_KINDS = ("human_added", "human_confirmed", "human_rejected")
HUMAN_POSITIVE = ("human_added", "human_confirmed")


def tile_grid(shape: tuple[int, int], tile: int) -> np.ndarray:
    """Tiles of side ``tile`` covering an image of ``shape``: a regular grid, the last row
    and column shifted inwards so that every tile lies inside the image (an image smaller
    than ``tile`` is one tile of its own size).

    Returns
    -------
    ndarray of shape (n, 4), int64: ``y0, x0, h, w`` per tile, row-major order

    >>> tile_grid((5, 7), 4).tolist()
    [[0, 0, 4, 4], [0, 3, 4, 4], [1, 0, 4, 4], [1, 3, 4, 4]]
    >>> tile_grid((3, 3), 4).tolist()
    [[0, 0, 3, 3]]
    """
    if tile < 1:
        raise ValueError(f"tile={tile}: a tile is at least 1 px")

    def starts(n: int) -> tuple[list[int], int]:
        if n <= tile:
            return [0], n
        s = list(range(0, n - tile + 1, tile))
        if s[-1] + tile < n:
            s.append(n - tile)
        return s, tile

    ys, th = starts(int(shape[0]))
    xs, tw = starts(int(shape[1]))
    return np.array([[y, x, th, tw] for y in ys for x in xs], np.int64).reshape(-1, 4)


def in_box(points_yx: np.ndarray, box) -> np.ndarray:
    """Which points lie in the tile ``box = (y0, x0, h, w)``: (n,) bool.

    >>> in_box(np.array([[0.0, 0.0], [3.9, 1.0], [4.0, 1.0]]), (0, 0, 4, 4)).tolist()
    [True, True, False]
    """
    p = np.asarray(points_yx, np.float64).reshape(-1, 2)
    y0, x0, h, w = (float(v) for v in box)
    return (p[:, 0] >= y0) & (p[:, 0] < y0 + h) & (p[:, 1] >= x0) & (p[:, 1] < x0 + w)


def overlap_fraction(box, others: np.ndarray) -> np.ndarray:
    """Share of ``box``'s area that each of ``others`` (m, 4) covers: (m,) float64.

    >>> overlap_fraction((0, 0, 4, 4), np.array([[2, 2, 4, 4], [4, 0, 4, 4]])).tolist()
    [0.25, 0.0]
    """
    o = np.asarray(others, np.float64).reshape(-1, 4)
    y0, x0, h, w = (float(v) for v in box)
    dy = np.clip(np.minimum(y0 + h, o[:, 0] + o[:, 2]) - np.maximum(y0, o[:, 0]), 0, None)
    dx = np.clip(np.minimum(x0 + w, o[:, 1] + o[:, 3]) - np.maximum(x0, o[:, 1]), 0, None)
    return dy * dx / max(h * w, 1.0)


def decision_disagreement(passes: np.ndarray, points: np.ndarray, *, threshold: float,
                          radius: int) -> np.ndarray:
    """How unsure the detector's yes/no is at each candidate peak, over ``T`` stochastic
    heatmaps of one image (test-time flips/rotations or MC dropout).

    ``q`` = share of passes whose largest value within ``radius`` px of the point reaches
    the detection ``threshold`` (the pass would report a cell there); the score is the
    Bernoulli variance scaled to [0, 1]: ``4 q (1 - q)`` (0 when every pass agrees, 1 at
    an even split).

    Parameters
    ----------
    passes : ndarray of shape (T, H, W), float32
    points : ndarray of shape (N, 2), float64, (y, x) in the heatmaps' pixels
    threshold : float
        The detector's peak threshold.
    radius : int

    Returns
    -------
    ndarray of shape (N,), float64 in [0, 1]

    >>> p = np.zeros((4, 5, 5), np.float32); p[:2, 2, 2] = 0.9; p[2:, 2, 2] = 0.1
    >>> decision_disagreement(p, np.array([[2.0, 2.0]]), threshold=0.5, radius=1).tolist()
    [1.0]
    """
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if not len(pts) or not len(passes):
        return np.zeros(len(pts))
    h = np.stack([values_at(p, pts, radius) for p in passes]).astype(np.float64)
    q = (h >= threshold).mean(axis=0)
    return 4.0 * q * (1.0 - q)


def tile_scores(tiles: np.ndarray, points: np.ndarray, disagreement: np.ndarray,
                unresolved: np.ndarray, *, ranker_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """How much a review of each tile of one image would help.

    ``score = Σ disagreement of the candidate peaks in the tile + ranker_weight x (number
    of candidates the P-ranker left between its positive and negative cut-offs in the
    tile)``: the first term is the expected number of detector decisions in the tile
    that a flip of the input would change, the second the work the ranker could not do.

    Parameters
    ----------
    tiles : ndarray (n, 4), int
    points : ndarray (N, 2), candidate peaks (y, x)
    disagreement : ndarray (N,), :func:`decision_disagreement` of ``points``
    unresolved : ndarray (M, 2), (y, x) of the ranker's unresolved candidates
    ranker_weight : float >= 0

    Returns
    -------
    score : ndarray (n,), float64
    detector_part : ndarray (n,), float64 (the first term)

    >>> t = np.array([[0, 0, 4, 4], [0, 4, 4, 4]])
    >>> s, d = tile_scores(t, np.array([[1.0, 1.0], [1.0, 5.0]]), np.array([0.5, 0.0]),
    ...                    np.array([[2.0, 6.0]]), ranker_weight=0.1)
    >>> s.tolist(), d.tolist()
    ([0.5, 0.1], [0.5, 0.0])
    """
    tiles = np.asarray(tiles).reshape(-1, 4)
    dis = np.asarray(disagreement, np.float64)
    det = np.array([float(dis[in_box(points, t)].sum()) for t in tiles])
    unr = np.array([float(in_box(unresolved, t).sum()) for t in tiles])
    return det + ranker_weight * unr, det


def choose_tiles(scores: np.ndarray, image_index: np.ndarray, eligible: np.ndarray, *,
                 budget: int, per_image: int, audit_fraction: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The tiles to show a person: ``budget`` tiles, at most ``per_image`` per image,
    only ``eligible`` ones (never reviewed). ``round(audit_fraction x budget)`` of them
    (at least one when ``audit_fraction > 0`` and ``budget >= 2``) are drawn uniformly at
    random from the eligible tiles (the audit set: an unbiased estimate of the detector's
    quality), the rest are the highest scores (ties in random order).

    Returns
    -------
    chosen : ndarray (k,), int64 indices into ``scores`` (k <= budget), best first, the
        audit tiles last
    audit : ndarray (k,), bool

    >>> rng = np.random.default_rng(0)
    >>> c, a = choose_tiles(np.array([3.0, 2.0, 1.0, 0.5]), np.array([0, 0, 0, 1]),
    ...                     np.ones(4, bool), budget=2, per_image=1, audit_fraction=0.0,
    ...                     rng=rng)
    >>> c.tolist(), a.tolist()
    ([0, 3], [False, False])
    """
    scores = np.asarray(scores, np.float64)
    image_index = np.asarray(image_index)
    eligible = np.asarray(eligible, bool).copy()
    n_audit = int(round(audit_fraction * budget))
    if audit_fraction > 0 and budget >= 2:
        n_audit = max(n_audit, 1)
    n_audit = min(n_audit, budget)
    used: dict[int, int] = {}
    chosen: list[int] = []

    def take(order: np.ndarray, n: int) -> None:
        for i in order:
            if n <= 0:
                return
            img = int(image_index[i])
            if not eligible[i] or used.get(img, 0) >= per_image:
                continue
            chosen.append(int(i))
            eligible[i] = False
            used[img] = used.get(img, 0) + 1
            n -= 1

    tie = rng.permutation(len(scores))
    order = tie[np.argsort(-scores[tie], kind="stable")]
    take(order, budget - n_audit)
    n_ranked = len(chosen)
    take(rng.permutation(len(scores)), budget - n_ranked)
    audit = np.zeros(len(chosen), bool)
    audit[n_ranked:] = True
    return np.array(chosen, np.int64), audit


def merge_human(labels: dict[str, np.ndarray], human: dict[str, np.ndarray],
                reviewed: np.ndarray, reviewed_images: np.ndarray, *,
                radius: float) -> dict[str, np.ndarray]:
    """A round's labels with a person's answers in force.

    From ``labels`` (image_id, y, x, kind, round, score) drop: every earlier human row
    (they come back from ``human``, so merging twice changes nothing), every machine
    label (not ``annotated``) inside a reviewed tile (the person decided everything
    there) and every machine label within ``radius`` px of a human point (the person's
    answer there wins). Then append ``human`` (same columns; kinds from
    :data:`HUMAN_KINDS`).

    Parameters
    ----------
    labels, human : column dicts; ``human`` may be empty
    reviewed : ndarray (m, 4), the reviewed tiles (y0, x0, h, w)
    reviewed_images : ndarray (m,), object, the image id of each reviewed tile
    radius : float, px

    Returns
    -------
    column dict (image_id, y, x, kind, round, score), the human rows last

    >>> lab = {"image_id": np.array(["a", "a", "a"], object), "y": np.array([1.0, 9.0, 20.0]),
    ...        "x": np.array([1.0, 9.0, 20.0]),
    ...        "kind": np.array(["pseudo_pos", "annotated", "pseudo_neg"], object),
    ...        "round": np.array([0, -1, 0]), "score": np.zeros(3)}
    >>> hum = {"image_id": np.array(["a"], object), "y": np.array([20.5]),
    ...        "x": np.array([20.0]), "kind": np.array(["human_confirmed"], object),
    ...        "round": np.array([1]), "score": np.array([np.nan])}
    >>> m = merge_human(lab, hum, np.array([[0, 0, 4, 4]]), np.array(["a"], object),
    ...                 radius=2.0)
    >>> m["kind"].tolist()
    ['annotated', 'human_confirmed']
    """
    cols = ("image_id", "y", "x", "kind", "round", "score")
    ids = np.asarray(labels["image_id"]).astype(str)
    kinds = np.asarray(labels["kind"]).astype(str)
    yx = np.stack([np.asarray(labels["y"], np.float64), np.asarray(labels["x"], np.float64)],
                  axis=1).reshape(-1, 2)
    keep = ~np.isin(kinds, HUMAN_KINDS)
    machine = keep & (kinds != "annotated")
    h_ids = np.asarray(human["image_id"]).astype(str) if len(human["y"]) else np.zeros(0, str)
    h_yx = np.stack([np.asarray(human["y"], np.float64), np.asarray(human["x"], np.float64)],
                    axis=1).reshape(-1, 2)
    r_ids = np.asarray(reviewed_images).astype(str)
    for img in np.unique(ids[machine]):
        rows = np.flatnonzero(machine & (ids == img))
        inside = np.zeros(len(rows), bool)
        for box in np.asarray(reviewed).reshape(-1, 4)[r_ids == img]:
            inside |= in_box(yx[rows], box)
        near = near_any(yx[rows], h_yx[h_ids == img], radius)
        keep[rows[inside | near]] = False
    out = {}
    for c in cols:
        a = np.asarray(labels[c])[keep]
        b = np.asarray(human[c]) if len(human["y"]) else np.zeros(0, a.dtype)
        out[c] = np.concatenate([a, b.astype(a.dtype)]) if len(b) else a
    return out


def review_counts(status: np.ndarray) -> dict[str, int]:
    """True/false positives and misses of the detector in reviewed tiles, from the
    status of each point a person left there: ``proposed`` (left as proposed in a
    reviewed tile: accepted) and ``confirmed`` are true detections, ``rejected`` false
    ones, ``added`` missed cells.

    >>> review_counts(np.array(["confirmed", "proposed", "rejected", "added"]))
    {'tp': 2, 'fp': 1, 'fn': 1}
    """
    s = np.asarray(status).astype(str)
    return {"tp": int(np.isin(s, ("confirmed", "proposed")).sum()),
            "fp": int((s == "rejected").sum()), "fn": int((s == "added").sum())}
