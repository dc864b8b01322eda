"""core.psm: label-free seed points (activation network, Grad-CAM map, fusion, K-means,
clean-up, points), on hand-made cases with exact answers and on a real DSB2018 crop."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pseudocell.core import psm
from pseudocell.core.metrics import match_points

from tests.conftest import SHARED, require_data


def _disc(shape, centre, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= r ** 2


@pytest.fixture(scope="module")
def dsb_crop():
    """A 160x160 crop of the DSB2018 fluorescence image and its nuclei centres."""
    import tifffile

    from pseudocell.data.images import points_from_labels
    from pseudocell.validation import check_image

    folder = require_data(SHARED / "stardist-dsb2018-2d" / "img2d.tif").parent
    img = check_image(tifffile.imread(folder / "img2d.tif")[:160, :160], name="dsb")
    gt = points_from_labels(tifffile.imread(folder / "mask2d.tif")[:160, :160])
    return img, gt


def test_fuse_is_the_papers_formula_with_cells_bright():
    amap = np.array([[0.0, 0.5], [1.0, 0.25]], np.float32)
    img = np.array([[0.0, 1.0], [0.5, 1.5]], np.float32)  # 1.5 is clipped to 1
    assert psm.fuse(amap, img, 2.0, "bright").tolist() == [[0.0, 2.5], [2.0, 2.25]]
    # "dark": raw = 1 - image; the map correlates negatively with it, so it is turned too
    assert psm.fuse(amap, img, 2.0, "dark").tolist() == [[3.0, 0.5], [1.0, 0.75]]
    with pytest.raises(ValueError, match="auto"):
        psm.fuse(amap, img, 2.0, "auto")


def test_kmeans_numbers_clusters_by_centre():
    img = np.zeros((30, 30), np.float32)
    img[:, 10:20] = 0.5
    img[:, 20:] = 1.0
    cl = psm.kmeans_clusters(img + np.float32(0.01) * (np.arange(30) % 3)[:, None], 3, seed=0)
    assert (cl[:, :10] == 0).all() and (cl[:, 10:20] == 1).all() and (cl[:, 20:] == 2).all()
    with pytest.raises(ValueError, match="distinct"):
        psm.kmeans_clusters(np.zeros((10, 10), np.float32), 3)


def test_component_diameter_ignores_specks():
    m = _disc((80, 80), (20, 20), 8) | _disc((80, 80), (55, 55), 8)
    m[2, 2] = m[70, 5] = True
    area = _disc((80, 80), (40, 40), 8).sum()
    assert psm.component_diameter(m) == pytest.approx(2 * np.sqrt(area / np.pi))
    assert psm.component_diameter(np.zeros((5, 5), bool)) is None


def test_seed_points_find_each_disc_and_rate_fragments_lower():
    shape = (100, 140)
    m = _disc(shape, (25, 25), 8) | _disc(shape, (70, 60), 8)
    m |= _disc(shape, (50, 100), 8) | _disc(shape, (50, 113), 8)  # a touching pair
    m |= _disc(shape, (85, 125), 5)  # a fragment (5 px radius for 8 px cells)
    m |= _disc(shape, (10, 130), 2)  # a speck: thinner than a quarter cell, no point
    pts, conf = psm.seed_points(m, 16.0)
    want = np.array([[25, 25], [70, 60], [50, 100], [50, 113], [85, 125]], float)
    res = match_points(pts, want, 2.0)
    assert res.tp == 5 and len(pts) == 5
    order = np.argsort(conf)
    lowest = pts[order[0]]
    assert np.hypot(*(lowest - [85, 125])) <= 2  # the fragment is the least confident
    single = [conf[np.argmin(np.hypot(*(pts - c).T))] for c in ([25, 25], [70, 60])]
    assert min(single) > 0.8 and conf.max() <= 1.0


def test_background_points_keep_a_cell_away_from_foreground():
    m = _disc((60, 60), (30, 30), 6)
    bg = psm.background_points(m, 10.0)
    assert len(bg) > 0
    assert (np.hypot(bg[:, 0] - 30, bg[:, 1] - 30) >= 6 + 10 - 1).all()
    assert len(psm.background_points(np.ones((20, 20), bool), 5.0)) == 0


def test_polarity_on_real_fluorescence_and_its_inverse(dsb_crop):
    img, _ = dsb_crop
    assert psm.stain_polarity([img]) == "bright"
    assert psm.stain_polarity([1.0 - img]) == "dark"


def test_grad_cam_ignores_the_arbitrary_sign_of_the_output(dsb_crop):
    img, _ = dsb_crop
    net = psm.build_activation_net(8, seed=0).eval()
    a = psm.activation_map(net, img)
    with torch.no_grad():
        net.head.weight.neg_()
        net.head.bias.neg_()
    b = psm.activation_map(net, img)
    assert a.shape == img.shape and a.dtype == np.float32
    assert a.min() == 0.0 and a.max() == pytest.approx(1.0)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_training_is_seeded_and_the_margin_objective_learns(dsb_crop):
    img, _ = dsb_crop
    kw = dict(iters=30, batch=4, crop=32, width=4, log_every=10)
    r1 = psm.train_activation_net([img, img[::-1].copy()], seed=3, **kw)
    r2 = psm.train_activation_net([img, img[::-1].copy()], seed=3, **kw)
    for k in r1.state_dict:
        assert torch.equal(r1.state_dict[k], r2.state_dict[k])
    assert len(r1.losses) == 3 and r1.losses[-1] < r1.losses[0]
    with pytest.raises(ValueError, match="objective"):
        psm.train_activation_net([img], objective="rotation", **kw)
    with pytest.raises(ValueError, match="crop=32"):
        psm.train_activation_net([img[:20, :20]], **kw)


def test_psm_points_find_real_nuclei(dsb_crop):
    """The whole per-image chain with no label on a real crop: the points are nuclei.
    This crop has nuclei of very different brightness: K = 3 puts the dim ones with the
    background haze (few points, all right), K = 2 finds about half of them."""
    img, gt = dsb_crop
    net = psm.load_activation_net(
        psm.train_activation_net([img], iters=20, batch=4, crop=32, width=8, seed=0).state_dict,
        8)
    fused = psm.fuse(psm.activation_map(net, img), img, 2.5, psm.stain_polarity([img]))
    found = {}
    for k in (2, 3):
        mask = psm.foreground(psm.kmeans_clusters(fused, k, seed=0), k)
        d = psm.component_diameter(mask)
        pts, conf = psm.seed_points(psm.clean_mask(mask, d), d)
        found[k] = match_points(pts, gt, 8.0)
        assert found[k].precision >= 0.9, (k, found[k])
    assert found[2].recall >= 0.4 and found[2].tp > found[3].tp >= 2


def test_foreground_joins_a_lower_level_only_while_it_stays_blob_like():
    shape = (90, 90)
    bright = _disc(shape, (20, 20), 7) | _disc(shape, (20, 60), 7)
    dim = _disc(shape, (60, 20), 7) | _disc(shape, (60, 60), 7)
    cl = np.zeros(shape, np.uint8)
    cl[dim] = 1
    cl[bright] = 2
    assert (psm.foreground(cl, 3) == (bright | dim)).all()  # dim nuclei are cells too
    haze = np.zeros(shape, np.uint8)
    haze[:, :] = 1  # the middle level is one sheet with holes around the blobs
    for y in range(0, 90, 6):
        for x in range(0, 90, 6):
            haze[y:y + 3, x:x + 3] = 0
    haze[bright] = 2
    assert (psm.foreground(haze, 3) == bright).all()
