"""top_fraction, rank_unlabeled and choose: what the ``select`` stage composes."""
from __future__ import annotations

import numpy as np
import pytest

from types import SimpleNamespace

from pseudocell.core.select import choose, rank_unlabeled, top_fraction


@pytest.mark.parametrize(
    "n, fraction, k",
    [
        (10, 0.25, 3),    # 2.5 -> 3 (half rounds up, not to even)
        (10, 0.5, 5),
        (5, 0.5, 3),      # 2.5 -> 3
        (4, 0.125, 1),    # 0.5 -> 1
        (8, 0.0625, 1),   # 0.5 -> 1
        (4, 0.375, 2),    # 1.5 -> 2
        (4, 0.0625, 0),   # 0.25 -> 0
        (200, 0.05, 10),
        (201, 0.05, 10),  # 10.05
        (10, 0.15, 2),    # decimal fractions: 1.5 -> 2
        (30, 0.05, 2),
        (100, 0.005, 1),
        (50, 0.05, 3),    # 2.5 -> 3
        (7, 1.0, 7),
        (7, 0.0, 0),
        (0, 0.5, 0),
    ],
)
def test_top_fraction_counts(n, fraction, k):
    scores = np.random.default_rng(n).permutation(n).astype(float)
    idx = top_fraction(scores, fraction)
    assert len(idx) == k
    # they are the k largest, in descending order
    np.testing.assert_array_equal(idx, np.argsort(-scores, kind="stable")[:k])


def test_top_fraction_ties_lower_index_first():
    s = np.array([0.1, 0.9, 0.5, 0.9, 0.5, 0.9])
    assert top_fraction(s, 0.5).tolist() == [1, 3, 5]
    assert top_fraction(s, 4 / 6).tolist() == [1, 3, 5, 2]
    assert top_fraction(s, 1.0).tolist() == [1, 3, 5, 2, 4, 0]
    assert top_fraction(np.array([0.1, 0.9, 0.5, 0.9]), 0.5).tolist() == [1, 3]
    assert top_fraction(np.zeros(4), 0.5).tolist() == [0, 1]


def _synthetic(seed=0, d=4, shift=2.5, n_p=40, n_u_pos=100, n_u_neg=100):
    rng = np.random.default_rng(seed)
    mu = np.full(d, shift)
    feat_p = rng.standard_normal((n_p, d)) + mu
    u = np.concatenate([rng.standard_normal((n_u_pos, d)) + mu,
                        rng.standard_normal((n_u_neg, d))])
    truth = np.r_[np.ones(n_u_pos, bool), np.zeros(n_u_neg, bool)]
    perm = rng.permutation(len(u))
    return feat_p, u[perm], truth[perm]


def select_pseudo_labels(feat_p, feat_u, *, alpha, beta, p, lam, **kw):
    """What the ``select`` stage does with the ranker scores of ``rank``."""
    s_pos, s_neg = rank_unlabeled(feat_p, feat_u, p=p, lam=lam, **kw)
    pos, neg = choose(s_pos, s_neg, alpha=alpha, beta=beta)
    return SimpleNamespace(pos_idx=pos, neg_idx=neg, pos_scores=s_pos, neg_scores=s_neg)


@pytest.fixture(scope="module", params=["flip", "provisional"])
def selection(request):
    feat_p, feat_u, truth = _synthetic()
    sel = select_pseudo_labels(feat_p, feat_u, alpha=0.05, beta=0.05, p=4.0, lam=0.1,
                               neg_ranker=request.param)
    return sel, feat_p, feat_u, truth, request.param


def test_unknown_neg_ranker_is_refused():
    feat_p, feat_u, _ = _synthetic()
    with pytest.raises(ValueError, match="neg_ranker"):
        select_pseudo_labels(feat_p, feat_u, alpha=0.05, beta=0.05, p=4.0, lam=0.1,
                             neg_ranker="nope")


def test_select_counts_and_disjoint(selection):
    sel, _, feat_u, _, _ = selection
    assert len(sel.pos_idx) == 10
    assert len(sel.neg_idx) == 10
    assert len(np.intersect1d(sel.pos_idx, sel.neg_idx)) == 0
    assert len(np.unique(sel.pos_idx)) == 10 and len(np.unique(sel.neg_idx)) == 10
    assert sel.pos_scores.shape == (200,) and sel.neg_scores.shape == (200,)
    assert np.all((sel.pos_idx >= 0) & (sel.pos_idx < 200))
    assert np.all((sel.neg_idx >= 0) & (sel.neg_idx < 200))


def test_select_picks_top_scores_in_order(selection):
    sel, _, _, _, _ = selection
    ps = sel.pos_scores[sel.pos_idx]
    ns = sel.neg_scores[sel.neg_idx]
    assert np.all(np.diff(ps) <= 0)
    assert np.all(np.diff(ns) <= 0)
    # nothing outside the selection beats the selection (no overlap was dropped here)
    rest_p = np.setdiff1d(np.arange(200), sel.pos_idx)
    rest_n = np.setdiff1d(np.arange(200), sel.neg_idx)
    assert sel.pos_scores[rest_p].max() <= ps.min()
    assert sel.neg_scores[rest_n].max() <= ns.min()


def test_select_is_mostly_right(selection):
    sel, _, _, truth, _ = selection
    assert truth[sel.pos_idx].mean() > 0.8
    assert (~truth[sel.neg_idx]).mean() > 0.8


def test_select_scores_rank_truth(selection):
    sel, _, _, truth, _ = selection
    # P-score higher for true positives, N-score higher for true negatives, on average
    assert sel.pos_scores[truth].mean() > sel.pos_scores[~truth].mean()
    assert sel.neg_scores[~truth].mean() > sel.neg_scores[truth].mean()


def test_select_deterministic(selection):
    sel, feat_p, feat_u, _, neg_ranker = selection
    sel2 = select_pseudo_labels(feat_p, feat_u, alpha=0.05, beta=0.05, p=4.0, lam=0.1,
                                neg_ranker=neg_ranker)
    np.testing.assert_array_equal(sel.pos_idx, sel2.pos_idx)
    np.testing.assert_array_equal(sel.neg_idx, sel2.neg_idx)
    np.testing.assert_array_equal(sel.pos_scores, sel2.pos_scores)
    np.testing.assert_array_equal(sel.neg_scores, sel2.neg_scores)


def test_select_overlap_dropped_from_both():
    feat_p, feat_u, _ = _synthetic(seed=1, n_u_pos=10, n_u_neg=10)
    sel = select_pseudo_labels(feat_p, feat_u, alpha=1.0, beta=1.0, p=4.0, lam=0.1)
    # every U sample is in both top lists -> all dropped
    assert len(sel.pos_idx) == 0 and len(sel.neg_idx) == 0
    sel = select_pseudo_labels(feat_p, feat_u, alpha=0.5, beta=0.75, p=4.0, lam=0.1)
    # 10 + 15 picks among 20 samples: at least 5 overlap and are removed from both
    assert len(np.intersect1d(sel.pos_idx, sel.neg_idx)) == 0
    n_overlap = 10 - len(sel.pos_idx)
    assert n_overlap >= 5
    assert 15 - len(sel.neg_idx) == n_overlap


def test_select_rejects_unsplittable_u():
    feat_p, feat_u, _ = _synthetic(seed=2, n_u_pos=3, n_u_neg=3)
    with pytest.raises(ValueError):
        select_pseudo_labels(feat_p, feat_u, alpha=0.1, beta=0.1, p=4.0, lam=0.1,
                             neg_ranker="provisional", provisional_top=1.0)
    with pytest.raises(ValueError):
        select_pseudo_labels(feat_p, feat_u, alpha=0.1, beta=0.1, p=4.0, lam=0.1,
                             neg_ranker="provisional", provisional_top=0.0)


def test_negatives_restricted_to_eligible_keep_the_count():
    pos_s = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.0, -1.0, -2.0])
    neg_s = -pos_s
    eligible = np.array([True, True, True, True, True, False, False, True])
    # beta = 0.25 of 8 → 2 negatives: the best eligible ones by N-score are 7 and 4
    pos, neg = choose(pos_s, neg_s, alpha=0.25, beta=0.25, neg_eligible=eligible)
    assert pos.tolist() == [0, 1]
    assert neg.tolist() == [7, 4]
    # without the restriction the top N-scores win
    assert choose(pos_s, neg_s, alpha=0.25, beta=0.25)[1].tolist() == [7, 6]


def test_blend_ranks_on_a_hand_computed_case():
    from pseudocell.core.select import blend_ranks
    scores = np.array([10.0, -3.0, 0.5, 0.5, 7.0])   # ranks 4, 0, 1.5, 1.5, 3 of 4
    peak = np.array([0.2, 0.9, 0.1, 0.4, 0.3])       # ranks 1, 4, 0, 3, 2 of 4
    np.testing.assert_allclose(blend_ranks(scores, peak, 0.0), [1, 0, 0.375, 0.375, 0.75])
    np.testing.assert_allclose(blend_ranks(scores, peak, 1.0), [0.25, 1, 0, 0.75, 0.5])
    # equal weights: (4+1)/8, (0+4)/8, (1.5+0)/8, (1.5+3)/8, (3+2)/8
    np.testing.assert_allclose(blend_ranks(scores, peak, 0.5),
                               [0.625, 0.5, 0.1875, 0.5625, 0.625])
    # the scale of either input does not matter, only its order
    np.testing.assert_allclose(blend_ranks(scores * 1e6, np.exp(peak), 0.5),
                               blend_ranks(scores, peak, 0.5))
    assert blend_ranks(np.zeros(1), np.zeros(1), 0.5).tolist() == [0.0]
    with pytest.raises(ValueError, match="shape"):
        blend_ranks(np.zeros(3), np.zeros(2), 0.5)


def test_blend_weight_0_chooses_as_the_ranker_alone():
    from pseudocell.core.select import blend_ranks
    rng = np.random.default_rng(0)
    pos_s, neg_s = rng.normal(size=50), rng.normal(size=50)
    pos_s[:4] = pos_s[4]  # ties are broken the same way (lower index first)
    peak = rng.random(50)
    want = choose(pos_s, neg_s, alpha=0.1, beta=0.1)
    got = choose(blend_ranks(pos_s, peak, 0.0), blend_ranks(neg_s, -peak, 0.0),
                 alpha=0.1, beta=0.1)
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)
