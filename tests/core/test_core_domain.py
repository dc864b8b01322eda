"""Domain-adaptation building blocks (issue 17): gradient reversal, Ganin's schedule,
intensity augmentation, DANN training, test-time passes, peak confidence, empty places,
the curriculum and the label-free target diameter."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pseudocell.core.detector import (DIHEDRAL, DomainTask, build_unet, heatmap_passes,
                                      predict_heatmap, train_detector)
from pseudocell.core.domain import DomainHead, augment_intensity, ganin_lambda, grad_reverse
from pseudocell.core.select import admit, curriculum_fraction, empty_points, peak_confidence
from pseudocell.core.targets import make_target


def test_gradient_reversal_flips_and_scales_the_gradient_only():
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = grad_reverse(x, 0.25)
    assert torch.equal(y.detach(), x.detach())
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert x.grad.tolist() == [-0.25, -0.5, -0.75]


@pytest.mark.parametrize("p,scale,want", [(0.0, 1.0, 0.0), (0.5, 1.0, 2 / (1 + math.exp(-5)) - 1),
                                          (1.0, 0.1, 0.1 * (2 / (1 + math.exp(-10)) - 1)),
                                          (2.0, 1.0, 2 / (1 + math.exp(-10)) - 1)])
def test_ganin_schedule(p, scale, want):
    assert ganin_lambda(p, scale) == pytest.approx(want, abs=1e-12)


def test_augmentation_changes_each_crop_and_keeps_it_normalised():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 1, 32, 32)).astype(np.float32)
    a = augment_intensity(x, np.random.default_rng(1))
    b = augment_intensity(x, np.random.default_rng(1))
    assert a.shape == x.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)  # seeded
    assert not np.allclose(a, x)
    np.testing.assert_allclose(a.mean(axis=(1, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(a.std(axis=(1, 2, 3)), 1.0, atol=1e-4)
    # a monotone transform: bright stays brighter than dark (gamma, gain, no inversion)
    ramp = np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 1, 8, 8).repeat(3, 0)
    out = augment_intensity(ramp, np.random.default_rng(2))
    for k in range(3):
        assert np.corrcoef(out[k].ravel(), ramp[k].ravel())[0, 1] > 0.8


def test_domain_head_gives_one_logit_per_crop():
    assert tuple(DomainHead(8)(torch.zeros(5, 8, 6, 6)).shape) == (5,)


def _blobs(n: int = 4, side: int = 64, seed: int = 0, bright: float = 1.0):
    rng = np.random.default_rng(seed)
    imgs, pts = [], []
    for _ in range(n):
        p = rng.uniform(8, side - 8, size=(6, 2))
        yy, xx = np.mgrid[:side, :side]
        im = sum(bright * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 8.0) for y, x in p)
        im = im + rng.normal(0, 0.05, im.shape)
        imgs.append(((im - im.mean()) / im.std()).astype(np.float32))
        pts.append(p)
    return imgs, pts


def test_dann_training_reports_the_domain_classifier():
    imgs, pts = _blobs()
    tgts, msks = zip(*(make_target(im.shape, p, None, 2.0, 4.0) for im, p in zip(imgs, pts)))
    target_imgs, _ = _blobs(seed=1, bright=0.3)
    kw = dict(widths=(4, 8), iters=60, batch=4, crop=32, lr=1e-3, seed=0, device="cpu")
    plain = train_detector(imgs, tgts, msks, **kw)
    dann = train_detector(imgs, tgts, msks, domain=DomainTask(target_imgs, level=-1,
                                                              grl_lambda=1.0), **kw)
    assert plain.domain_accuracy == [] and len(dann.domain_accuracy) == 2
    assert all(0.0 <= a <= 1.0 for a in dann.domain_accuracy)
    assert len(dann.domain_loss) == 2 and all(v > 0 for v in dann.domain_loss)
    # the same U-Net comes back (no domain head in it), trained differently
    assert set(dann.state_dict) == set(plain.state_dict)
    assert any(not torch.equal(dann.state_dict[k], plain.state_dict[k]) for k in plain.state_dict)
    aug = train_detector(imgs, tgts, msks, augment=True, **kw)
    assert any(not torch.equal(aug.state_dict[k], plain.state_dict[k]) for k in plain.state_dict)
    with pytest.raises(ValueError, match="target"):
        train_detector(imgs, tgts, msks, domain=DomainTask([], level=0), **kw)


def test_tta_passes_undo_their_flips_and_mc_dropout_is_seeded():
    torch.manual_seed(0)
    net = build_unet((4, 8), seed=0).eval()
    rng = np.random.default_rng(0)
    im = rng.normal(size=(24, 40)).astype(np.float32)
    p = heatmap_passes(net, im, method="tta", passes=8, seed=0)
    assert p.shape == (8, 24, 40)
    np.testing.assert_allclose(p[0], predict_heatmap(net, im), atol=1e-6)
    # pass t is the model on the turned image, turned back
    k, flip = DIHEDRAL[5]
    turned = np.rot90(im, k)[:, ::-1] if flip else np.rot90(im, k)
    back = predict_heatmap(net, np.ascontiguousarray(turned))
    back = np.rot90(back[:, ::-1] if flip else back, -k)
    np.testing.assert_allclose(p[5], back, atol=1e-6)
    with pytest.raises(ValueError, match="dropout"):
        heatmap_passes(net, im, method="mc-dropout", passes=3, seed=0)
    drop = build_unet((4, 8), seed=0, dropout=0.5).eval()
    a = heatmap_passes(drop, im, method="mc-dropout", passes=3, seed=7)
    b = heatmap_passes(drop, im, method="mc-dropout", passes=3, seed=7)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[0], a[1])
    # dropout is off again afterwards: plain predictions are deterministic
    np.testing.assert_array_equal(predict_heatmap(drop, im), predict_heatmap(drop, im))


def test_peak_confidence_on_a_hand_computed_case():
    passes = np.zeros((4, 20, 20), np.float32)
    passes[:, 5, 5] = [1.0, 0.8, 0.6, 1.0]      # peak A: in every pass
    passes[0, 14, 14] = 0.9                      # peak B: in one pass of four
    c = peak_confidence(passes, np.array([[5.0, 5.0], [14.0, 14.0]]), radius=1,
                        min_distance=1)
    h = np.array([1.0, 0.8, 0.6, 1.0])
    np.testing.assert_allclose(c["height"], [h.mean(), 0.225])
    np.testing.assert_allclose(c["spread"], [h.std(), np.std([0.9, 0, 0, 0])])
    np.testing.assert_allclose(c["freq"], [1.0, 0.25])
    np.testing.assert_allclose(c["confidence"], [h.mean() - h.std(), 0.0])
    empty = peak_confidence(passes, np.zeros((0, 2)), radius=1, min_distance=1)
    assert all(len(v) == 0 for v in empty.values())


def test_empty_places_keep_away_from_cells_and_candidates():
    passes = np.zeros((2, 30, 30), np.float32)
    passes[1, 10, 10] = 0.8
    pts, vals = empty_points(passes, np.array([[25.0, 25.0]]), spacing=5, clearance=8,
                             level=0.1)
    assert len(pts) and (vals < 0.1).all()
    assert (np.abs(pts - [10, 10]).max(axis=1) > 5).all()          # window of the signal
    assert (np.hypot(*(pts - [25, 25]).T) >= 8).all()              # candidate clearance


def test_curriculum_admits_the_confident_fraction():
    assert curriculum_fraction((0.2, 0.4, 0.6), 1) == 0.4
    assert curriculum_fraction((0.2, 0.4, 0.6), 9) == 0.6
    conf = np.array([0.5, 0.9, 0.0, 0.7, 0.1])
    assert admit(conf, 0.4).tolist() == [1, 3]
    assert admit(conf, 1.0).tolist() == [1, 3, 0, 4]               # never a zero
    assert admit(conf, 1.0, min_confidence=0.6).tolist() == [1, 3]
    assert admit(conf, 0.0).tolist() == []


def test_target_diameter_without_labels():
    from pseudocell.core.scale import estimate_diameter_unlabeled

    rng = np.random.default_rng(0)
    side, d = 160, 12.0
    yy, xx = np.mgrid[:side, :side]
    ims = []
    for _ in range(3):
        im = np.zeros((side, side))
        for y, x in rng.uniform(10, side - 10, size=(25, 2)):
            im += ((yy - y) ** 2 + (xx - x) ** 2 <= (d / 2) ** 2)
        ims.append(np.clip(im, 0, 1) + rng.normal(0, 0.05, im.shape))
    # from a guess 1.5 x too large, as from another cell line's size
    est = estimate_diameter_unlabeled(ims, 18.0)
    assert est["guesses"][0] == 18.0
    assert abs(est["diameter"] - d) / d < 0.2
