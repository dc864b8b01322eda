"""Optimal one-to-one point matching and P/R/F."""
from __future__ import annotations

import numpy as np
import pytest

from pseudocell.core.metrics import MatchResult, match_points, pooled, prf


def _pairs(r):
    return sorted(map(tuple, r.pairs.tolist()))


def test_greedy_nearest_first_would_lose_a_match():
    # distances: p0-g0 = 1.0, p0-g1 = 1.5, p1-g0 = 1.2, p1-g1 = 3.7 (> radius 1.6)
    # greedy (shortest pair first, or p0 first) takes p0-g0 and leaves p1, g1 unmatched: 1 TP.
    # optimal: p0-g1 and p1-g0: 2 TP.
    pred = np.array([[0.0, 0.0], [0.0, 2.2]])
    gt = np.array([[0.0, 1.0], [0.0, -1.5]])
    r = match_points(pred, gt, 1.6)
    assert (r.tp, r.fp, r.fn) == (2, 0, 0)
    assert _pairs(r) == [(0, 1), (1, 0)]
    assert r.pairs.dtype.kind == "i" and r.pairs.shape == (2, 2)


def test_brief_case_two_matches():
    # distances: p0-g0 = 3, p0-g1 = 2.5, p1-g0 = 1, p1-g1 = 6.5 (forbidden at 3.5)
    pred = np.array([[0.0, 0.0], [0.0, 4.0]])
    gt = np.array([[0.0, 3.0], [0.0, -2.5]])
    r = match_points(pred, gt, 3.5)
    assert (r.tp, r.fp, r.fn) == (2, 0, 0)
    assert _pairs(r) == [(0, 1), (1, 0)]


def test_more_matches_beat_shorter_distance():
    # matching p0-g0 (0.1) alone is cheapest, but p0-g1 (2.9) + p1-g0 (2.9) gives 2 TPs
    pred = np.array([[0.0, 0.0], [0.0, 3.0]])
    gt = np.array([[0.0, 0.1], [0.0, -2.9]])
    r = match_points(pred, gt, 3.0)
    assert (r.tp, r.fp, r.fn) == (2, 0, 0)
    assert _pairs(r) == [(0, 1), (1, 0)]


def test_least_total_distance_among_max_matchings():
    pred = np.array([[0.0, 0.0], [0.0, 1.0]])
    gt = np.array([[0.0, 1.1], [0.0, 0.1]])
    r = match_points(pred, gt, 5.0)
    assert (r.tp, r.fp, r.fn) == (2, 0, 0)
    assert _pairs(r) == [(0, 1), (1, 0)]


def test_radius_is_inclusive_and_beyond_is_forbidden():
    pred = np.array([[0.0, 0.0]])
    assert match_points(pred, np.array([[3.0, 4.0]]), 5.0).tp == 1      # exactly 5
    r = match_points(pred, np.array([[3.0, 4.0001]]), 5.0)
    assert (r.tp, r.fp, r.fn) == (0, 1, 1)
    assert r.pairs.shape == (0, 2)


def test_only_forbidden_pairs_even_when_hungarian_would_pair():
    pred = np.array([[0.0, 0.0], [10.0, 10.0], [20.0, 20.0]])
    gt = np.array([[0.0, 1.0], [50.0, 50.0]])
    r = match_points(pred, gt, 2.0)
    assert (r.tp, r.fp, r.fn) == (1, 2, 1)
    assert _pairs(r) == [(0, 0)]


def test_one_to_one():
    pred = np.array([[0.0, 0.0], [0.0, 0.5], [0.0, 1.0]])
    gt = np.array([[0.0, 0.4]])
    r = match_points(pred, gt, 2.0)
    assert (r.tp, r.fp, r.fn) == (1, 2, 0)
    assert _pairs(r) == [(1, 0)]
    r = match_points(gt, pred, 2.0)
    assert (r.tp, r.fp, r.fn) == (1, 0, 2)
    assert _pairs(r) == [(0, 1)]


def test_empty_inputs():
    pts = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    r = match_points(np.zeros((0, 2)), pts, 3.0)
    assert (r.tp, r.fp, r.fn) == (0, 0, 3)
    assert (r.precision, r.recall, r.f1) == (0.0, 0.0, 0.0)
    r = match_points(pts, np.zeros((0, 2)), 3.0)
    assert (r.tp, r.fp, r.fn) == (0, 3, 0)
    assert (r.precision, r.recall, r.f1) == (0.0, 0.0, 0.0)
    r = match_points(np.zeros((0, 2)), np.zeros((0, 2)), 3.0)
    assert (r.tp, r.fp, r.fn) == (0, 0, 0)
    assert (r.precision, r.recall, r.f1) == (1.0, 1.0, 1.0)
    assert r.pairs.shape == (0, 2)


def test_random_against_brute_force():
    from itertools import permutations

    rng = np.random.default_rng(0)
    for _ in range(30):
        pred = rng.uniform(0, 10, (4, 2))
        gt = rng.uniform(0, 10, (5, 2))
        radius = 3.0
        d = np.linalg.norm(pred[:, None] - gt[None], axis=-1)
        best = 0
        for perm in permutations(range(5), 4):
            best = max(best, sum(d[i, j] <= radius for i, j in enumerate(perm)))
        r = match_points(pred, gt, radius)
        assert r.tp == best
        assert r.fp == 4 - best and r.fn == 5 - best
        for i, j in r.pairs:
            assert d[i, j] <= radius
        assert len(set(r.pairs[:, 0])) == r.tp and len(set(r.pairs[:, 1])) == r.tp


def test_prf_values():
    assert prf(8, 2, 0) == (0.8, 1.0, pytest.approx(16 / 18))
    p, r, f = prf(3, 1, 2)
    assert (p, r) == (0.75, 0.6)
    assert f == pytest.approx(2 * 0.75 * 0.6 / (0.75 + 0.6))
    assert prf(0, 0, 0) == (1.0, 1.0, 1.0)
    assert prf(0, 5, 0) == (0.0, 0.0, 0.0)   # predictions on an empty image
    assert prf(0, 0, 5) == (0.0, 0.0, 0.0)   # nothing predicted
    assert prf(0, 2, 3) == (0.0, 0.0, 0.0)
    assert prf(4, 0, 0) == (1.0, 1.0, 1.0)


def test_match_result_properties_and_dict():
    r = MatchResult(3, 1, 2, np.zeros((3, 2), int))
    assert r.precision == 0.75 and r.recall == 0.6
    d = r.to_dict()
    assert "pairs" not in d
    assert d["tp"] == 3 and d["fp"] == 1 and d["fn"] == 2
    assert d["f1"] == pytest.approx(6 / 9)


def test_pooled_sums_counts_not_means():
    rs = [MatchResult(3, 1, 0, np.zeros((3, 2), int)),
          MatchResult(0, 0, 4, np.zeros((0, 2), int)),
          MatchResult(1, 3, 1, np.zeros((1, 2), int))]
    out = pooled(rs)
    assert (out["tp"], out["fp"], out["fn"]) == (4, 4, 5)
    assert out["precision"] == pytest.approx(0.5)
    assert out["recall"] == pytest.approx(4 / 9)
    assert out["f1"] == pytest.approx(8 / 17)
    assert pooled([]) == {"tp": 0, "fp": 0, "fn": 0, "precision": 1.0, "recall": 1.0,
                          "f1": 1.0}
