"""Cell size: estimation at the clicks, resizing, and the point maps between scales."""
from __future__ import annotations

import numpy as np
import pytest

from pseudocell.core.scale import (CANONICAL_DIAMETER, estimate_diameter, from_scaled,
                                   resize_image, scale_factor, scaled_shape, to_scaled)


def _discs(shape, centres, radius, value=1.0, background=0.0):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    im = np.full(shape, background, np.float32)
    for y, x in centres:
        im[(yy - y) ** 2 + (xx - x) ** 2 <= radius**2] = value
    return im


@pytest.mark.parametrize("diameter", [8.0, 16.0, 30.0, 60.0])
@pytest.mark.parametrize("bright", [True, False])
def test_the_diameter_of_uniform_discs_is_found_within_ten_percent(diameter, bright):
    r = diameter / 2
    step = int(3 * diameter)
    centres = [(y, x) for y in range(step // 2, 6 * step, step)
               for x in range(step // 2, 6 * step, step)]
    im = _discs((6 * step, 6 * step), centres, r, *((1.0, 0.0) if bright else (0.0, 1.0)))
    est = estimate_diameter([im], [np.array(centres[::3], float)])
    assert est["diameter"] == pytest.approx(diameter, rel=0.1)
    assert est["polarity"] == ("bright" if bright else "dark")


def test_estimates_on_real_images_follow_the_cell_size(brightfield_dir):
    """Real bright-field cells (bright interior ~9-10 px) and the same cells shown
    twice as large: the estimate doubles."""
    from pseudocell.data.images import points_from_dots, read_raw

    im = read_raw(brightfield_dir / "001cells.png")
    im = (im if im.ndim == 2 else im[..., 0]).astype(np.float32) / 255
    pts = points_from_dots(read_raw(brightfield_dir / "001dots.png"))[::3]
    d1 = estimate_diameter([im], [pts])["diameter"]
    big = resize_image(im, 2.0)
    d2 = estimate_diameter([big], [to_scaled(pts, im.shape, 2.0)])["diameter"]
    assert 8.0 < d1 < 12.0
    assert d2 / d1 == pytest.approx(2.0, rel=0.1)


def test_no_clicks_is_an_error():
    with pytest.raises(ValueError, match="at least one clicked cell"):
        estimate_diameter([np.zeros((32, 32), np.float32)], [np.zeros((0, 2))])


def test_tiny_images_do_not_break_the_search():
    im = _discs((24, 24), [(12, 12)], 4)
    est = estimate_diameter([im], [np.array([[12.0, 12.0]])])
    assert est["diameter"] == pytest.approx(8.0, rel=0.15)


def test_scale_factor_band_and_value():
    assert scale_factor(CANONICAL_DIAMETER) == 1.0
    assert scale_factor(CANONICAL_DIAMETER * 1.3) == 1.0   # inside the tolerance band
    assert scale_factor(4 * CANONICAL_DIAMETER) == pytest.approx(0.25)
    assert scale_factor(CANONICAL_DIAMETER / 3) == pytest.approx(3.0)


def test_point_maps_are_exact_inverses_and_keep_pixel_centres():
    shape, s = (515, 674), 0.229
    pts = np.array([[0.0, 0.0], [514.0, 673.0], [202.25, 673.25], [100.5, 3.7]])
    back = from_scaled(to_scaled(pts, shape, s), shape, s)
    np.testing.assert_allclose(back, pts, atol=1e-9)
    H, W = scaled_shape(shape, s)
    assert (H, W) == (118, 154)
    # the outer edges (-0.5 and H - 0.5) map onto each other
    edges = to_scaled(np.array([[-0.5, -0.5], [shape[0] - 0.5, shape[1] - 0.5]]), shape, s)
    np.testing.assert_allclose(edges, [[-0.5, -0.5], [H - 0.5, W - 0.5]], atol=1e-9)
    assert to_scaled(pts, shape, 1.0) is not None
    np.testing.assert_array_equal(to_scaled(pts, shape, 1.0), pts)


def test_resize_keeps_a_blob_where_the_point_map_says():
    im = _discs((200, 300), [(120.0, 70.0)], 20)
    s = 0.3
    small = resize_image(im, s)
    assert small.shape == scaled_shape(im.shape, s) and small.dtype == np.float32
    y, x = np.unravel_index(np.argmax(resize_image(small, 1.0)), small.shape)
    cy, cx = np.argwhere(small > 0.5 * small.max()).mean(axis=0)
    np.testing.assert_allclose(to_scaled(np.array([[120.0, 70.0]]), im.shape, s)[0],
                               [cy, cx], atol=0.5)
    assert resize_image(im, 1.0) is im
