"""Gaussian heatmaps, disc masks and masked targets."""
from __future__ import annotations

import numpy as np
import pytest

from pseudocell.core.targets import disc_mask, gaussian_heatmap, make_target


def _explicit(shape, pts, sigma):
    H, W = shape
    out = np.zeros(shape)
    for y, x in pts:
        for i in range(H):
            for j in range(W):
                out[i, j] = max(out[i, j], np.exp(-((i - y) ** 2 + (j - x) ** 2) / (2 * sigma**2)))
    return out


def test_gaussian_heatmap_single_point_explicit():
    pts = np.array([[3.3, 4.6]])
    h = gaussian_heatmap((7, 9), pts, sigma=1.0)
    assert h.shape == (7, 9) and h.dtype == np.float32
    np.testing.assert_allclose(h, _explicit((7, 9), pts, 1.0), rtol=1e-6, atol=1e-7)


def test_gaussian_heatmap_two_points_is_max_not_sum():
    pts = np.array([[2.0, 2.0], [4.0, 5.0]])
    h = gaussian_heatmap((7, 8), pts, sigma=1.5)
    np.testing.assert_allclose(h, _explicit((7, 8), pts, 1.5), rtol=1e-6, atol=1e-7)
    assert h[2, 2] == 1.0 and h[4, 5] == 1.0
    assert h.max() == 1.0


def test_gaussian_heatmap_hand_values():
    h = gaussian_heatmap((5, 5), np.array([[2.0, 2.0]]), sigma=1.0)
    assert h[2, 2] == 1.0
    assert h[2, 3] == pytest.approx(np.exp(-0.5), rel=1e-6)   # 0.60653
    assert h[3, 3] == pytest.approx(np.exp(-1.0), rel=1e-6)
    assert h[0, 0] == pytest.approx(np.exp(-4.0), rel=1e-6)


def test_gaussian_heatmap_truncated_beyond_4_sigma():
    h = gaussian_heatmap((1, 30), np.array([[0.0, 0.0]]), sigma=1.0)
    assert h[0, 4] == pytest.approx(np.exp(-8.0), rel=1e-6)
    assert np.all(h[0, 6:] == 0.0)


def test_gaussian_heatmap_no_points():
    for pts in (None, np.zeros((0, 2))):
        h = gaussian_heatmap((4, 6), pts, 2.0)
        assert h.shape == (4, 6) and not h.any()


@pytest.mark.parametrize("radius, count", [(0.0, 1), (1.0, 5), (1.5, 9), (2.0, 13),
                                           (2.5, 21), (3.0, 29)])
def test_disc_mask_pixel_count(radius, count):
    m = disc_mask((15, 15), np.array([[7.0, 7.0]]), radius)
    assert m.dtype == bool and m.shape == (15, 15)
    assert int(m.sum()) == count
    yy, xx = np.mgrid[:15, :15]
    np.testing.assert_array_equal(m, (yy - 7) ** 2 + (xx - 7) ** 2 <= radius**2)


def test_disc_mask_subpixel_centre_and_union():
    pts = np.array([[3.5, 3.5], [3.5, 5.5]])
    m = disc_mask((8, 10), pts, 1.0)
    yy, xx = np.mgrid[:8, :10]
    exp = np.zeros((8, 10), bool)
    for y, x in pts:
        exp |= (yy - y) ** 2 + (xx - x) ** 2 <= 1.0
    np.testing.assert_array_equal(m, exp)
    assert int(m.sum()) == 8  # two 2x2 blocks


def test_make_target_negative_disc_and_mask_union():
    pos = np.array([[3.0, 3.0]])
    neg = np.array([[3.0, 10.0]])
    t, m = make_target((8, 16), pos, neg, sigma=2.0, mask_radius=2.0)
    assert t.dtype == np.float32 and m.dtype == bool
    np.testing.assert_array_equal(m, disc_mask((8, 16), pos, 2.0) | disc_mask((8, 16), neg, 2.0))
    nd = disc_mask((8, 16), neg, 2.0)
    # the positive Gaussian still reaches x=10 with exp(-49/8) > 0, but the negative disc zeroes it
    assert gaussian_heatmap((8, 16), pos, 2.0)[3, 10] > 0
    assert np.all(t[nd] == 0.0)
    # outside the negative disc the target is the positive heatmap
    np.testing.assert_array_equal(t[~nd], gaussian_heatmap((8, 16), pos, 2.0)[~nd])
    assert t[3, 3] == 1.0


def test_make_target_overlap_keeps_positive():
    pos = np.array([[5.0, 5.0]])
    neg = np.array([[5.0, 7.0]])  # discs of radius 2 overlap on x in [5, 7]
    t, m = make_target((11, 13), pos, neg, sigma=1.5, mask_radius=2.0)
    g = gaussian_heatmap((11, 13), pos, 1.5)
    pd = disc_mask((11, 13), pos, 2.0)
    nd = disc_mask((11, 13), neg, 2.0)
    assert (pd & nd).any()
    np.testing.assert_array_equal(t[pd], g[pd])          # incl. the overlap
    assert np.all(t[nd & ~pd] == 0.0)
    assert t[5, 6] == pytest.approx(np.exp(-1 / (2 * 1.5**2)), rel=1e-6)
    assert t[5, 7] == pytest.approx(np.exp(-4 / (2 * 1.5**2)), rel=1e-6)  # neg centre, in pos disc
    assert t[5, 8] == 0.0
    np.testing.assert_array_equal(m, pd | nd)


def test_make_target_none_inputs():
    t, m = make_target((6, 6), None, np.array([[2.0, 2.0]]), 1.0, 1.0)
    assert not t.any() and int(m.sum()) == 5
    t, m = make_target((6, 6), np.array([[2.0, 2.0]]), None, 1.0, 1.0)
    assert t[2, 2] == 1.0 and int(m.sum()) == 5
    t, m = make_target((6, 6), None, None, 1.0, 1.0)
    assert not t.any() and not m.any()


@pytest.mark.parametrize("pt", [[0.0, 0.0], [9.0, 11.0], [0.4, 11.6], [-1.5, 3.0],
                                [10.2, -0.7], [-30.0, -30.0], [100.0, 5.0]])
def test_border_points_clip(pt):
    shape = (10, 12)
    pts = np.array([pt])
    h = gaussian_heatmap(shape, pts, 1.5)
    assert h.shape == shape
    np.testing.assert_allclose(h, _explicit(shape, pts, 1.5) * _box(shape, pt, 1.5),
                               rtol=1e-6, atol=1e-7)
    m = disc_mask(shape, pts, 2.0)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    np.testing.assert_array_equal(m, (yy - pt[0]) ** 2 + (xx - pt[1]) ** 2 <= 4.0)
    t, mm = make_target(shape, pts, np.array([[5.0, 6.0]]), 1.5, 2.0)
    assert t.shape == shape and mm.shape == shape


def _box(shape, pt, sigma):
    """The support gaussian_heatmap evaluates: a box of ceil(4 sigma) around the point."""
    r = int(np.ceil(4 * sigma))
    y, x = pt
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy >= np.floor(y) - r) & (yy <= np.ceil(y) + r)
            & (xx >= np.floor(x) - r) & (xx <= np.ceil(x) + r)).astype(float)
