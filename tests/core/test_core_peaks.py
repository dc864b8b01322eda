"""find_peaks on known heatmaps."""
from __future__ import annotations

import numpy as np
import pytest

from pseudocell.core.peaks import find_peaks


def _three_gaussians():
    yy, xx = np.mgrid[:64, :80].astype(np.float64)
    centres = [((15, 20), 0.8), ((45, 60), 1.0), ((48, 15), 0.2)]
    h = np.zeros((64, 80))
    for (cy, cx), a in centres:
        h += a * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.5**2))
    return h.astype(np.float32)


def test_absolute_threshold_keeps_two_exact_centres_sorted():
    h = _three_gaussians()
    pts, vals = find_peaks(h, threshold=0.3, min_distance=6, mode="absolute")
    assert pts.dtype == np.float64 and pts.shape == (2, 2)
    assert vals.dtype == np.float32 and vals.shape == (2,)
    assert pts.tolist() == [[45.0, 60.0], [15.0, 20.0]]
    np.testing.assert_allclose(vals, [1.0, 0.8], atol=1e-6)
    # lower threshold picks up the third one, still sorted by value
    pts, vals = find_peaks(h, threshold=0.1, min_distance=6)
    assert pts.tolist() == [[45.0, 60.0], [15.0, 20.0], [48.0, 15.0]]
    np.testing.assert_allclose(vals, [1.0, 0.8, 0.2], atol=1e-6)


def test_values_are_unscaled_heatmap_values():
    h = _three_gaussians() * 0.5 + 0.1
    pts, vals = find_peaks(h, mode="reference")
    np.testing.assert_array_equal(vals, h[pts[:, 0].astype(int), pts[:, 1].astype(int)])
    # reference: (v - min) / (max - min) * 255 >= 128 -> only the 1.0 and 0.8 peaks
    assert pts.tolist() == [[45.0, 60.0], [15.0, 20.0]]


def test_reference_mode_finds_peaks_on_blank_heatmap_absolute_does_not():
    rng = np.random.default_rng(0)
    h = (0.01 + 1e-4 * rng.standard_normal((40, 40))).astype(np.float32)
    pts_a, vals_a = find_peaks(h, threshold=0.3, min_distance=3, mode="absolute")
    assert pts_a.shape == (0, 2) and vals_a.shape == (0,)
    assert vals_a.dtype == np.float32
    pts_r, vals_r = find_peaks(h, min_distance=3, mode="reference")
    assert len(pts_r) > 0
    assert np.all(vals_r < 0.02)
    # the global maximum is always kept in reference mode, and comes first
    gy, gx = np.unravel_index(np.argmax(h), h.shape)
    assert np.rint(pts_r[0]).tolist() == [float(gy), float(gx)]  # sub-pixel: within 0.5
    assert np.all(np.diff(vals_r) <= 0)


def test_constant_heatmap():
    h = np.full((10, 10), 0.5, np.float32)
    pts, vals = find_peaks(h, mode="reference")
    assert pts.shape == (0, 2) and vals.shape == (0,)
    pts, vals = find_peaks(np.zeros((10, 10), np.float32), threshold=0.3)
    assert pts.shape == (0, 2)


def test_min_distance_suppresses_close_neighbour():
    h = np.zeros((30, 30), np.float32)
    h[10, 10] = 1.0
    h[10, 13] = 0.9   # 3 px away
    h[25, 25] = 0.5   # far away
    pts, vals = find_peaks(h, threshold=0.3, min_distance=5)
    assert pts.tolist() == [[10.0, 10.0], [25.0, 25.0]]
    np.testing.assert_allclose(vals, [1.0, 0.5])
    pts, vals = find_peaks(h, threshold=0.3, min_distance=2)
    assert pts.tolist() == [[10.0, 10.0], [10.0, 13.0], [25.0, 25.0]]
    np.testing.assert_allclose(vals, [1.0, 0.9, 0.5])


def test_peak_on_border_kept():
    h = np.zeros((20, 20), np.float32)
    h[0, 0] = 0.7
    h[19, 10] = 0.9
    pts, vals = find_peaks(h, threshold=0.3, min_distance=3)
    assert pts.tolist() == [[19.0, 10.0], [0.0, 0.0]]


def test_equal_values_sorted_by_position():
    h = np.zeros((20, 20), np.float32)
    for y, x in [(15, 3), (3, 15), (3, 4)]:
        h[y, x] = 0.6
    pts, _ = find_peaks(h, threshold=0.3, min_distance=2)
    assert pts.tolist() == [[3.0, 4.0], [3.0, 15.0], [15.0, 3.0]]


def test_bad_mode():
    with pytest.raises(ValueError):
        find_peaks(np.zeros((5, 5)), mode="relative")


def test_calibrated_threshold_splits_cells_from_clutter_and_keeps_known_cells():
    from pseudocell.core.peaks import calibrate_threshold

    rng = np.random.default_rng(0)
    clutter = rng.uniform(0.25, 0.45, 300)      # a detector firing on background
    cells = rng.uniform(0.8, 1.1, 200)
    t = calibrate_threshold(np.r_[clutter, cells], cells[:50])
    assert clutter.max() < t < cells.min()
    # known cells with weak peaks pull it down: at most 10 % of them may be cut
    weak = np.r_[cells[:40], np.full(10, 0.3)]
    t2 = calibrate_threshold(np.r_[clutter, cells], weak, recall=0.9)
    assert (weak >= t2).mean() >= 0.9
    assert t2 <= 0.3
    # a collapsed heatmap (everything x 0.2) gets a threshold x 0.2: it follows the scale
    t3 = calibrate_threshold(0.2 * np.r_[clutter, cells], 0.2 * cells[:50])
    assert 0.2 * clutter.max() < t3 < 0.2 * cells.min()
    # never below the floor, also with nothing to split
    assert calibrate_threshold(np.zeros(0), np.zeros(0)) == pytest.approx(0.05)


def test_values_at_takes_the_window_maximum():
    from pseudocell.core.peaks import values_at

    h = np.zeros((10, 10), np.float32)
    h[4, 6] = 0.7
    v = values_at(h, np.array([[4.0, 4.0], [0.0, 0.0], [9.4, 9.4]]), 2)
    np.testing.assert_allclose(v, [0.7, 0.0, 0.0])


def test_subpixel_peaks_recover_off_grid_gaussian_centres():
    yy, xx = np.mgrid[:48, :64].astype(np.float64)
    centres = [(10.3, 20.8), (30.5, 40.0), (25.9, 9.2)]
    h = sum(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.0**2)) for cy, cx in centres)
    pts, _ = find_peaks(h.astype(np.float32), threshold=0.3, min_distance=4)
    got = sorted(map(tuple, pts.round(2)))
    want = sorted(centres)
    np.testing.assert_allclose(got, want, atol=0.02)
    whole, _ = find_peaks(h.astype(np.float32), threshold=0.3, min_distance=4, subpixel=False)
    assert np.all(whole == np.rint(whole))


@pytest.mark.filterwarnings("ignore:When min_distance < 1")  # scikit-image's, at 0
@pytest.mark.parametrize("min_distance", [0, 1, 2, 3, 6])
@pytest.mark.parametrize("levels", [4, 16, 0])  # few levels: plateaus and ties everywhere
def test_local_maxima_are_scikit_images_peaks(min_distance, levels):
    """The same peaks, in the same order, as ``peak_local_max`` (ties included)."""
    from scipy import ndimage
    from skimage.feature import peak_local_max

    from pseudocell.core.peaks import local_maxima

    rng = np.random.default_rng(min_distance * 100 + levels)
    for k in range(12):
        h = ndimage.gaussian_filter(rng.random((40 + k, 57)), rng.uniform(0.5, 3))
        h = (h - h.min()) / (h.max() - h.min())
        if levels:
            h = np.round(h * levels) / levels
        h = h.astype(np.float32)
        thr = float(rng.uniform(0.0, 0.6))
        want = peak_local_max(h, min_distance=min_distance, threshold_abs=thr,
                              exclude_border=False)
        got = local_maxima(h, min_distance=min_distance, threshold=thr)
        np.testing.assert_array_equal(got, want.reshape(-1, 2))


def test_local_maxima_of_a_constant_or_flat_topped_image():
    from pseudocell.core.peaks import local_maxima

    assert local_maxima(np.ones((8, 8)), min_distance=2, threshold=0.0).shape == (0, 2)
    h = np.zeros((12, 12), np.float32)
    h[3:6, 3:9] = 1.0  # one plateau wider than min_distance: peaks every 2 px along it
    got = local_maxima(h, min_distance=2, threshold=0.5)
    assert got.tolist() == [[3, 3], [3, 5], [3, 7], [5, 3], [5, 5], [5, 7]]


def test_local_maxima_on_saturated_blobs_are_scikit_images_peaks():
    """Flat tops (a heatmap clipped at 1, as a model applied at the wrong scale gives):
    many maxima closer than min_distance, thinned as scikit-image thins them."""
    from scipy import ndimage
    from skimage.feature import peak_local_max

    from pseudocell.core.peaks import local_maxima

    rng = np.random.default_rng(7)
    h = np.zeros((120, 150), np.float32)
    h[rng.integers(0, 120, 25), rng.integers(0, 150, 25)] = 1.0
    h = np.clip(ndimage.gaussian_filter(h, 6) * 400, 0, 1).astype(np.float32)
    assert (h == 1).sum() > 2000  # wide plateaus
    want = peak_local_max(h, min_distance=6, threshold_abs=0.05, exclude_border=False)
    np.testing.assert_array_equal(local_maxima(h, min_distance=6, threshold=0.05), want)
    assert len(want) > 25
