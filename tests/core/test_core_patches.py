"""crop_patches: slices in the interior, reflect padding at the border."""
from __future__ import annotations

import numpy as np
import pytest

from pseudocell.core.patches import crop_patches


@pytest.fixture()
def img():
    return np.random.default_rng(0).standard_normal((20, 25)).astype(np.float32)


def test_interior_patch_equals_slice(img):
    out = crop_patches(img, np.array([[10.0, 12.0]]), 7)
    assert out.shape == (1, 1, 7, 7) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0, 0], img[7:14, 9:16])


def test_rounding_to_nearest_pixel(img):
    out = crop_patches(img, np.array([[9.6, 12.4]]), 5)
    np.testing.assert_array_equal(out[0, 0], img[8:13, 10:15])


def test_corner_and_bottom_right_match_numpy_reflect(img):
    s, r = 9, 4
    padded = np.pad(img, r, mode="reflect")
    pts = np.array([[0.0, 0.0], [19.0, 24.0], [0.0, 24.0], [19.0, 0.0], [2.0, 23.0]])
    out = crop_patches(img, pts, s)
    assert out.shape == (5, 1, s, s)
    for k, (y, x) in enumerate(pts.astype(int)):
        np.testing.assert_array_equal(out[k, 0], padded[y:y + s, x:x + s])
    # mirror without repeating the edge pixel
    np.testing.assert_array_equal(out[0, 0, r, r:], img[0, :r + 1])
    np.testing.assert_array_equal(out[0, 0, r, :r], img[0, r:0:-1])


def test_docstring_example():
    im = np.arange(25, dtype=np.float32).reshape(5, 5)
    assert crop_patches(im, np.array([[0.0, 0.0]]), 3)[0, 0].tolist() == \
        [[6.0, 5.0, 6.0], [1.0, 0.0, 1.0], [6.0, 5.0, 6.0]]


def test_channels_kept():
    rng = np.random.default_rng(1)
    im = rng.standard_normal((3, 12, 14))
    pts = np.array([[6.0, 7.0], [0.0, 13.0]])
    out = crop_patches(im, pts, 5)
    assert out.shape == (2, 3, 5, 5) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], im[:, 4:9, 5:10].astype(np.float32))
    padded = np.pad(im, ((0, 0), (2, 2), (2, 2)), mode="reflect").astype(np.float32)
    np.testing.assert_array_equal(out[1], padded[:, 0:5, 13:18])
    for c in range(3):
        np.testing.assert_array_equal(out[:, c], crop_patches(im[c], pts, 5)[:, 0])


def test_no_points():
    out = crop_patches(np.zeros((8, 8)), np.zeros((0, 2)), 3)
    assert out.shape == (0, 1, 3, 3) and out.dtype == np.float32


def test_even_size_rejected(img):
    with pytest.raises(ValueError):
        crop_patches(img, np.array([[5.0, 5.0]]), 6)


def test_patch_larger_than_image_uses_symmetric():
    im = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = crop_patches(im, np.array([[1.0, 1.0]]), 9)
    padded = np.pad(im, 4, mode="symmetric")
    assert out.shape == (1, 1, 9, 9)
    np.testing.assert_array_equal(out[0, 0], padded[1:10, 1:10])
