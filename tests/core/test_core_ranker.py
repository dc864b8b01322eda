"""P-classification loss (value, gradient) and the fitted linear ranker."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pseudocell.core.ranker import LinearRanker, fit_ranker, pclass_loss


def _auc(s_pos, s_neg):
    """Mann-Whitney AUC (ties count 1/2)."""
    s_pos = np.asarray(s_pos)[:, None]
    s_neg = np.asarray(s_neg)[None, :]
    return float((s_pos > s_neg).mean() + 0.5 * (s_pos == s_neg).mean())


def test_pclass_loss_hand_case():
    w = np.array([0.5])
    b = -0.2
    zp = np.array([[1.0], [2.0]])
    zu = np.array([[0.0], [-1.0]])
    p, lam = 2.0, 0.1
    # f_pos = 0.3, 0.8 ; f_unl = -0.2, -0.7
    ep = [math.exp(-0.3), math.exp(-0.8)]
    eu = [math.exp(2 * -0.2), math.exp(2 * -0.7)]
    value = sum(ep) + sum(eu) / 2.0 + 0.1 * 0.25
    gw = -(ep[0] * 1.0 + ep[1] * 2.0) + (eu[0] * 0.0 + eu[1] * -1.0) + 2 * 0.1 * 0.5
    gb = -sum(ep) + sum(eu)
    v, g_w, g_b = pclass_loss(w, b, zp, zu, p, lam)
    assert v == pytest.approx(value, rel=1e-12)
    assert v == pytest.approx(1.6736056897875622, rel=1e-12)
    assert g_w.shape == (1,)
    assert g_w[0] == pytest.approx(gw, rel=1e-12)
    assert g_b == pytest.approx(gb, rel=1e-12)
    assert isinstance(v, float) and isinstance(g_b, float)


def test_pclass_loss_docstring_case():
    v, gw, gb = pclass_loss(np.zeros(1), 0.0, np.ones((2, 1)), np.ones((3, 1)), 4.0, 0.0)
    # 2 * e^0 + 3 * e^0 / 4
    assert v == pytest.approx(2.75)
    assert gw.tolist() == pytest.approx([1.0])
    assert gb == pytest.approx(1.0)


def test_pclass_loss_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    d = 3
    zp = 0.7 * rng.standard_normal((7, d))
    zu = 0.7 * rng.standard_normal((9, d))
    w = 0.3 * rng.standard_normal(d)
    b = 0.1
    p, lam = 4.0, 0.1
    _, gw, gb = pclass_loss(w, b, zp, zu, p, lam)
    h = 1e-6
    num_w = np.empty(d)
    for j in range(d):
        e = np.zeros(d)
        e[j] = h
        num_w[j] = (pclass_loss(w + e, b, zp, zu, p, lam)[0]
                    - pclass_loss(w - e, b, zp, zu, p, lam)[0]) / (2 * h)
    num_b = (pclass_loss(w, b + h, zp, zu, p, lam)[0]
             - pclass_loss(w, b - h, zp, zu, p, lam)[0]) / (2 * h)
    np.testing.assert_allclose(gw, num_w, rtol=1e-5)
    assert gb == pytest.approx(num_b, rel=1e-5)


def test_pclass_loss_large_p_emphasises_top_unlabeled():
    # the U sample with the highest score dominates the U gradient for large p
    zu = np.array([[1.0], [0.0], [-1.0]])
    zp = np.zeros((1, 1))
    _, gw, _ = pclass_loss(np.array([1.0]), 0.0, zp, zu, 8.0, 0.0)
    # -exp(0)*0 + exp(8)*1 + exp(0)*0 + exp(-8)*-1
    assert gw[0] == pytest.approx(math.exp(8) - math.exp(-8), rel=1e-12)


def _gauss_problem(seed, d=5, shift=1.5, n_p=60, n_up=100, n_un=100):
    rng = np.random.default_rng(seed)
    mu = np.full(d, shift)
    x_pos = rng.standard_normal((n_p, d)) + mu
    u_pos = rng.standard_normal((n_up, d)) + mu
    u_neg = rng.standard_normal((n_un, d))
    x_unl = np.concatenate([u_pos, u_neg])
    return x_pos, x_unl, mu


def test_fit_ranker_ranks_heldout_positives_first():
    x_pos, x_unl, mu = _gauss_problem(1)
    r = fit_ranker(x_pos, x_unl, p=4.0, lam=0.1)
    assert isinstance(r, LinearRanker)
    assert r.converged
    rng = np.random.default_rng(99)
    te_pos = rng.standard_normal((300, 5)) + mu
    te_neg = rng.standard_normal((300, 5))
    s_pos, s_neg = r.score(te_pos), r.score(te_neg)
    assert s_pos.dtype == np.float64 and s_pos.shape == (300,)
    assert _auc(s_pos, s_neg) > 0.9
    # and the learnt direction points along the shift
    assert np.all(r.w > 0)


def test_fit_ranker_standardisation_and_score_formula():
    x_pos, x_unl, _ = _gauss_problem(2)
    r = fit_ranker(x_pos, x_unl)
    both = np.concatenate([x_pos, x_unl])
    np.testing.assert_allclose(r.mean, both.mean(axis=0))
    np.testing.assert_allclose(r.std, both.std(axis=0))
    x = np.arange(10.0).reshape(2, 5)
    np.testing.assert_allclose(r.score(x), ((x - r.mean) / r.std) @ r.w + r.b)
    # the optimum has (near) zero gradient
    zp, zu = (x_pos - r.mean) / r.std, (x_unl - r.mean) / r.std
    _, gw, gb = pclass_loss(r.w, r.b, zp, zu, 4.0, 0.1)
    _, gw0, gb0 = pclass_loss(np.zeros(5), 0.0, zp, zu, 4.0, 0.1)
    g_opt = np.abs(np.append(gw, gb)).max()
    g_start = np.abs(np.append(gw0, gb0)).max()
    assert g_opt < 1e-3 * g_start


def test_fit_ranker_constant_feature_is_safe():
    x_pos, x_unl, _ = _gauss_problem(3, d=3)
    x_pos[:, 2] = 5.0
    x_unl[:, 2] = 5.0
    r = fit_ranker(x_pos, x_unl)
    assert r.std[2] == 1.0
    assert np.all(np.isfinite(r.w)) and np.isfinite(r.b)
    assert abs(r.w[2]) < 1e-8  # a constant feature carries no weight (ridge pulls it to 0)


def test_fit_ranker_deterministic():
    x_pos, x_unl, _ = _gauss_problem(4)
    a = fit_ranker(x_pos, x_unl, p=4.0, lam=0.1)
    b = fit_ranker(x_pos, x_unl, p=4.0, lam=0.1)
    np.testing.assert_array_equal(a.w, b.w)
    assert a.b == b.b


def test_fit_ranker_rejects_empty_class():
    x_pos, x_unl, _ = _gauss_problem(5)
    with pytest.raises(ValueError):
        fit_ranker(x_pos[:0], x_unl)
    with pytest.raises(ValueError):
        fit_ranker(x_pos, x_unl[:0])
