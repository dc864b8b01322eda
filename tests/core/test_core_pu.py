"""nnPU risk (hand-computed), PUNet shapes, train_pu, pu_features."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pseudocell.core.pu import PUNet, default_prior, nnpu_risk, pu_features, train_pu



# sigmoid values written out as numbers
SIG0 = 0.5
SIG2 = 0.8807970779778823      # sigmoid(2)
SIGM2 = 0.11920292202211755    # sigmoid(-2)
SIG1 = 0.7310585786300049      # sigmoid(1)
SIGM1 = 0.2689414213699951     # sigmoid(-1)
SIG5 = 0.9933071490757153      # sigmoid(5)
SIGM5 = 0.0066928509242848554  # sigmoid(-5)


def _f(t):
    return float(t.detach())


def _t(xs):
    return torch.tensor(xs, dtype=torch.float64)


# ---------------------------------------------------------------- nnpu_risk, no correction
def test_nnpu_risk_nonnegative_branch_hand_values():
    out_p, out_u, prior = _t([0.0, 2.0]), _t([0.0, -1.0, 1.0]), 0.3
    r = nnpu_risk(out_p, out_u, prior)
    r_p_plus = (SIG0 + SIGM2) / 2          # mean sigmoid(-out_p) = 0.309601461...
    r_p_minus = (SIG0 + SIG2) / 2          # mean sigmoid(out_p)  = 0.690398538...
    r_u_minus = (SIG0 + SIGM1 + SIG1) / 3  # mean sigmoid(out_u)  = 0.5
    positive = 0.3 * r_p_plus              # 0.0928804383...
    negative = r_u_minus - 0.3 * r_p_minus  # 0.2928804383...
    assert positive == pytest.approx(0.09288043830331632, abs=1e-9)
    assert negative == pytest.approx(0.29288043830331632, abs=1e-9)
    assert _f(r.positive_risk) == pytest.approx(positive, abs=1e-6)
    assert _f(r.negative_risk) == pytest.approx(negative, abs=1e-6)
    assert _f(r.risk) == pytest.approx(positive + negative, abs=1e-6)
    assert _f(r.risk) == pytest.approx(0.38576087660663264, abs=1e-6)
    assert _f(r.objective) == pytest.approx(_f(r.risk), abs=1e-6)
    assert r.corrected is False


def test_nnpu_risk_docstring_case_and_gamma_irrelevant_without_correction():
    a = nnpu_risk(torch.tensor([0.0]), torch.tensor([0.0]), 0.4)
    b = nnpu_risk(torch.tensor([0.0]), torch.tensor([0.0]), 0.4, gamma=0.1)
    # 0.4 * 0.5 + (0.5 - 0.4 * 0.5) = 0.5
    assert float(a.risk) == pytest.approx(0.5, abs=1e-7)
    assert float(a.objective) == pytest.approx(0.5, abs=1e-7)
    assert float(b.objective) == pytest.approx(0.5, abs=1e-7)
    assert not a.corrected and not b.corrected


def test_nnpu_gradient_without_correction_is_unbiased_pu_gradient():
    out_p = _t([0.0, 2.0]).requires_grad_(True)
    out_u = _t([0.0, -1.0, 1.0]).requires_grad_(True)
    r = nnpu_risk(out_p, out_u, 0.3)
    r.objective.backward()
    # d/dz sigmoid(z) = s (1 - s)
    exp_gu = np.array([SIG0 * (1 - SIG0), SIGM1 * (1 - SIGM1), SIG1 * (1 - SIG1)]) / 3
    # objective = 0.3 * mean sigmoid(-p) + mean sigmoid(u) - 0.3 * mean sigmoid(p)
    exp_gp = 0.3 * (-np.array([SIG0 * (1 - SIG0), SIG2 * (1 - SIG2)]) / 2) \
        - 0.3 * np.array([SIG0 * (1 - SIG0), SIG2 * (1 - SIG2)]) / 2
    np.testing.assert_allclose(out_u.grad.numpy(), exp_gu, atol=1e-9)
    np.testing.assert_allclose(out_p.grad.numpy(), exp_gp, atol=1e-9)


# ---------------------------------------------------------------- nnpu_risk, correction
@pytest.mark.parametrize("gamma", [1.0, 0.5])
def test_nnpu_risk_correction_branch(gamma):
    out_p = _t([5.0]).requires_grad_(True)
    out_u = _t([-5.0]).requires_grad_(True)
    r = nnpu_risk(out_p, out_u, 0.5, gamma=gamma)
    positive = 0.5 * SIGM5                 # 0.00334642546...
    negative = SIGM5 - 0.5 * SIG5          # -0.48996072...
    assert negative < 0
    assert r.corrected is True
    assert _f(r.positive_risk) == pytest.approx(positive, abs=1e-6)
    assert _f(r.negative_risk) == pytest.approx(negative, abs=1e-6)
    # the reported risk clamps the negative part at 0
    assert _f(r.risk) == pytest.approx(positive, abs=1e-6)
    assert _f(r.risk) == pytest.approx(_f(r.positive_risk), abs=1e-12)
    assert _f(r.objective) == pytest.approx(-gamma * negative, abs=1e-6)
    assert _f(r.objective) > 0

    r.objective.backward()
    # objective = -gamma * (sigmoid(u) - 0.5 sigmoid(p))
    g_u = float(out_u.grad[0])
    g_p = float(out_p.grad[0])
    assert g_u < 0, "descending must raise out_u, i.e. raise the negative risk"
    assert g_u == pytest.approx(-gamma * SIGM5 * (1 - SIGM5), rel=1e-9)
    assert g_p == pytest.approx(gamma * 0.5 * SIG5 * (1 - SIG5), rel=1e-9)
    # one gradient step raises the negative risk
    with torch.no_grad():
        u2 = out_u - 10.0 * out_u.grad
        p2 = out_p - 10.0 * out_p.grad
    assert float(nnpu_risk(p2, u2, 0.5).negative_risk) > negative


def test_nnpu_risk_beta_tolerance():
    out_p, out_u = _t([5.0]), _t([-5.0])
    negative = SIGM5 - 0.5 * SIG5  # about -0.49
    positive = 0.5 * SIGM5
    # beta larger than |negative|: no correction, plain unbiased objective
    r = nnpu_risk(out_p, out_u, 0.5, beta=0.6, gamma=0.5)
    assert r.corrected is False
    assert _f(r.objective) == pytest.approx(positive + negative, abs=1e-6)
    assert _f(r.risk) == pytest.approx(positive, abs=1e-6)  # still clamped
    # beta smaller than |negative|: correction
    r2 = nnpu_risk(out_p, out_u, 0.5, beta=0.4, gamma=0.5)
    assert r2.corrected is True
    assert _f(r2.objective) == pytest.approx(-0.5 * negative, abs=1e-6)


def test_nnpu_risk_zero_negative_is_not_corrected():
    # R_u^- - pi R_p^- == 0 exactly: 0.5 - 1.0 * 0.5 with beta=0 -> not < 0
    r = nnpu_risk(_t([0.0]), _t([0.0]), 1.0)
    assert _f(r.negative_risk) == 0.0
    assert r.corrected is False


def test_default_prior_hand_cases():
    assert default_prior(10, 90) == pytest.approx(0.55)
    assert default_prior(20, 60) == pytest.approx((20 + 30) / 80)  # 0.625
    assert default_prior(1, 1) == pytest.approx(0.75)
    assert default_prior(0, 10) == pytest.approx(0.5)


# ---------------------------------------------------------------- PUNet
def test_punet_shapes():
    torch.manual_seed(0)
    net = PUNet(in_channels=2, feature_dim=16).eval()
    x = torch.randn(5, 2, 15, 15)
    f = net.features(x)
    out = net(x)
    assert tuple(f.shape) == (5, 16)
    assert tuple(out.shape) == (5,)
    assert torch.all(f >= 0)  # ReLU output
    torch.testing.assert_close(out, net.last(f)[:, 0])


# ---------------------------------------------------------------- train_pu on synthetic patches
S = 15


def _patches(n_pos, n_neg, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:S, :S] - S // 2
    blob = np.exp(-(yy**2 + xx**2) / (2 * 2.0**2)).astype(np.float32)
    pos = 2.0 * blob + 0.1 * rng.standard_normal((n_pos, S, S)).astype(np.float32)
    neg = 0.1 * rng.standard_normal((n_neg, S, S)).astype(np.float32)
    return pos[:, None].astype(np.float32), neg[:, None].astype(np.float32)


@pytest.fixture(scope="module")
def pu_data():
    p, _ = _patches(24, 0, seed=1)
    up, un = _patches(30, 30, seed=2)
    u = np.concatenate([up, un])
    truth = np.r_[np.ones(30, bool), np.zeros(30, bool)]
    perm = np.random.default_rng(3).permutation(60)
    return p, u[perm], truth[perm]


KW = dict(prior=0.5, epochs=8, lr=1e-3, weight_decay=0.0, batch=21, feature_dim=16, seed=7,
          device="cpu")


@pytest.fixture(scope="module")
def pu_trained(pu_data):
    p, u, _ = pu_data
    before = torch.random.get_rng_state().clone()
    seen = []
    res = train_pu(p, u, progress=lambda e, r: seen.append((e, r)), **KW)
    after = torch.random.get_rng_state()
    return res, seen, before, after


def test_train_pu_lowers_risk(pu_trained):
    res, seen, _, _ = pu_trained
    assert len(res.risks) == KW["epochs"]
    assert len(res.corrections) == KW["epochs"]
    assert res.prior == 0.5
    assert all(np.isfinite(res.risks))
    assert res.risks[-1] < res.risks[0]
    assert [e for e, _ in seen] == list(range(1, KW["epochs"] + 1))
    assert [r for _, r in seen] == res.risks
    # 60 + 24 samples, batch 21 -> 4 batches per epoch
    assert all(0 <= c <= 4 for c in res.corrections)


def test_train_pu_leaves_global_rng(pu_trained):
    _, _, before, after = pu_trained
    assert torch.equal(before, after)


def test_train_pu_deterministic(pu_data, pu_trained):
    p, u, _ = pu_data
    res = pu_trained[0]
    res2 = train_pu(p, u, **KW)
    assert res.risks == res2.risks
    assert res.state_dict.keys() == res2.state_dict.keys()
    for k in res.state_dict:
        assert torch.equal(res.state_dict[k], res2.state_dict[k]), k
        assert res.state_dict[k].device.type == "cpu"


def test_train_pu_default_prior_and_validation(pu_data):
    p, u, _ = pu_data
    res = train_pu(p[:4], u[:12], **{**KW, "prior": None, "epochs": 1})
    assert res.prior == pytest.approx(default_prior(4, 12))
    with pytest.raises(ValueError):
        train_pu(p[:0], u, **KW)
    with pytest.raises(ValueError):
        train_pu(p, u[:0], **KW)


def test_pu_features_shapes_and_scores(pu_data, pu_trained):
    p, u, truth = pu_data
    res = pu_trained[0]
    feats, scores = pu_features(res.state_dict, u, feature_dim=16, device="cpu", batch=7)
    assert feats.shape == (len(u), 16) and feats.dtype == np.float32
    assert scores.shape == (len(u),) and scores.dtype == np.float32
    assert np.all(feats >= 0)
    # batching does not change the result; scores == last layer of the features
    feats2, scores2 = pu_features(res.state_dict, u, feature_dim=16, device="cpu")
    np.testing.assert_allclose(feats, feats2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores, scores2, rtol=1e-5, atol=1e-5)
    net = PUNet(1, 16)
    net.load_state_dict(res.state_dict)
    net.eval()
    with torch.no_grad():
        ref = net(torch.from_numpy(u)).numpy()
    np.testing.assert_allclose(scores, ref, rtol=1e-5, atol=1e-5)
    # the trained classifier separates the blob patches from the noise patches
    assert scores[truth].mean() > scores[~truth].mean()


def test_pu_features_empty():
    net = PUNet(1, 16)
    sd = net.state_dict()
    feats, scores = pu_features(sd, np.zeros((0, 1, S, S), np.float32), feature_dim=16,
                                device="cpu")
    assert feats.shape == (0, 16) and feats.dtype == np.float32
    assert scores.shape == (0,) and scores.dtype == np.float32


def test_batchnorm_statistics_are_recalibrated_after_training():
    """Eval-mode BN statistics equal the data's, even after very few steps."""
    rng = np.random.default_rng(0)
    p = (rng.standard_normal((40, 1, 27, 27)) + 3.0).astype(np.float32)
    u = rng.standard_normal((60, 1, 27, 27)).astype(np.float32)
    res = train_pu(p, u, prior=0.3, epochs=1, lr=1e-3, weight_decay=0.0, batch=100,
                   feature_dim=8, seed=0, device="cpu")
    net = PUNet(1, 8)
    net.load_state_dict(res.state_dict)
    first_bn = net.body[1]
    conv_out = net.body[0](torch.from_numpy(np.concatenate([p, u]))).detach()
    np.testing.assert_allclose(first_bn.running_mean.numpy(),
                               conv_out.mean(dim=(0, 2, 3)).numpy(), rtol=1e-4, atol=1e-5)


def test_elkan_noto_prior_falls_back_to_the_reference_prior_on_tiny_sets():
    """Two labeled patches cannot be split into 3 folds with a positive in each: the
    reference prior (#P + 0.5 #U) / N is used instead of failing."""
    from pseudocell.core.pu import default_prior, estimate_prior_elkan_noto

    rng = np.random.default_rng(0)
    x_p, x_u = rng.normal(size=(2, 1, 5, 5)), rng.normal(size=(20, 1, 5, 5))
    assert estimate_prior_elkan_noto(x_p, x_u, 0) == default_prior(2, 20) == 12 / 22
