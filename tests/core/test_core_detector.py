"""UNet shapes, tiled prediction, and masked-MSE detector training."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pseudocell.core.detector import (build_unet, load_unet, predict_heatmap, resolve_device,
                                      train_detector)
from pseudocell.core.targets import make_target
from pseudocell.core.unet import UNet


def _eval_net(widths, seed=0):
    net = build_unet(widths, seed)
    # non-trivial BatchNorm running stats so eval mode is not an identity normalisation
    net.train()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        for _ in range(3):
            net(torch.randn(2, 1, 32, 32))
    return net.eval()


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")


def test_unet_forward_shape_and_multiple():
    net = UNet(widths=(4, 8, 16))
    assert net.multiple == 4
    assert tuple(net(torch.zeros(2, 1, 16, 24)).shape) == (2, 1, 16, 24)
    assert UNet(widths=(4,)).multiple == 1
    assert tuple(UNet(widths=(4,))(torch.zeros(1, 1, 5, 7)).shape) == (1, 1, 5, 7)


def test_build_unet_seeded_and_rng_untouched():
    before = torch.random.get_rng_state().clone()
    a, b, c = build_unet((4, 8), 3), build_unet((4, 8), 3), build_unet((4, 8), 4)
    assert torch.equal(before, torch.random.get_rng_state())
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


@pytest.mark.parametrize("shape", [(50, 70), (33, 17), (8, 9)])
def test_predict_heatmap_any_size(shape):
    net = _eval_net((4, 8))
    img = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    out = predict_heatmap(net, img, tile=512, margin=16)
    assert out.shape == shape and out.dtype == np.float32
    assert np.all(np.isfinite(out))


def test_predict_heatmap_single_tile_equals_direct_forward():
    net = _eval_net((4, 8))
    img = np.random.default_rng(1).standard_normal((24, 40)).astype(np.float32)
    out = predict_heatmap(net, img, tile=512, margin=8)
    padded = np.pad(img, 8, mode="reflect")  # 40 x 56: already a multiple of 2
    with torch.no_grad():
        ref = net(torch.from_numpy(padded)[None, None])[0, 0].numpy()[8:-8, 8:-8]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def _host_tiled(net, img, tile, margin):
    """The tiled prediction as it was written on the host (numpy padding, one tile per
    forward pass): the device-side version must give the same bytes on the CPU."""
    H, W = img.shape
    mult = net.multiple
    tile = int(np.ceil(tile / mult) * mult)
    th, tw = min(tile, H), min(tile, W)
    out = np.zeros((H, W), np.float32)
    padded = np.pad(img, margin, mode="reflect" if min(H, W) > margin else "symmetric")
    for y0 in range(0, H, th):
        for x0 in range(0, W, tw):
            y1, x1 = min(y0 + th, H), min(x0 + tw, W)
            win = padded[y0: y1 + 2 * margin, x0: x1 + 2 * margin]
            win = np.pad(win, ((0, (-win.shape[0]) % mult), (0, (-win.shape[1]) % mult)),
                         mode="symmetric")
            with torch.no_grad():
                pred = net(torch.from_numpy(np.ascontiguousarray(win))[None, None])[0, 0]
            out[y0:y1, x0:x1] = pred.numpy()[margin: margin + y1 - y0, margin: margin + x1 - x0]
    return out


@pytest.mark.parametrize("shape,tile,margin", [((70, 90), 24, 32), ((61, 45), 512, 16),
                                               ((9, 13), 512, 16), ((100, 37), 40, 8)])
def test_device_side_tiling_gives_the_host_bytes_and_batches_agree(shape, tile, margin):
    net = _eval_net((4, 8, 16))
    img = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    out = predict_heatmap(net, img, tile=tile, margin=margin)
    np.testing.assert_array_equal(out, _host_tiled(net, img, tile, margin))
    batched = predict_heatmap(net, img, tile=tile, margin=margin, batch=4)
    np.testing.assert_allclose(batched, out, atol=1e-5, rtol=0)


def test_predict_heatmap_tiled_equals_single_tile():
    net = _eval_net((4, 8, 16))
    img = np.random.default_rng(2).standard_normal((70, 90)).astype(np.float32)
    whole = predict_heatmap(net, img, tile=512, margin=32)
    tiled = predict_heatmap(net, img, tile=24, margin=32)
    assert tiled.shape == whole.shape == (70, 90)
    np.testing.assert_allclose(tiled[16:-16, 16:-16], whole[16:-16, 16:-16], atol=1e-4, rtol=0)
    # with tiles aligned to the pooling grid and a margin beyond the receptive field the
    # seams vanish everywhere, image border included
    np.testing.assert_allclose(tiled, whole, atol=1e-4, rtol=0)
    # a tile side that is not a multiple of model.multiple is rounded up (23 -> 24)
    np.testing.assert_allclose(predict_heatmap(net, img, tile=23, margin=32), tiled, atol=1e-4)


def test_predict_heatmap_small_margin_changes_result():
    """Sanity check of the previous test: too little context does leave seams."""
    net = _eval_net((4, 8, 16))
    img = np.random.default_rng(2).standard_normal((70, 90)).astype(np.float32)
    whole = predict_heatmap(net, img, tile=512, margin=32)
    tiled = predict_heatmap(net, img, tile=24, margin=0)
    assert np.abs(tiled - whole).max() > 1e-3


# ---------------------------------------------------------------- training
def _blob_image(seed=0, shape=(64, 64)):
    rng = np.random.default_rng(seed)
    pos = np.array([[12.0, 14.0], [40.0, 20.0], [22.0, 48.0], [50.0, 50.0]])
    neg = np.array([[10.0, 40.0], [54.0, 8.0], [32.0, 32.0]])
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.zeros(shape)
    for y, x in pos:
        img += np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 3.0**2))
    img = (img + 0.05 * rng.standard_normal(shape)).astype(np.float32)
    tgt, msk = make_target(shape, pos, neg, sigma=3.0, mask_radius=6.0)
    return img, tgt, msk


TRAIN_KW = dict(widths=(4, 8), iters=60, batch=4, crop=32, lr=1e-2, seed=5, device="cpu")


@pytest.fixture(scope="module")
def trained():
    img, tgt, msk = _blob_image()
    before = torch.random.get_rng_state().clone()
    np_before = np.random.get_state()[1].copy()
    calls = []
    res = train_detector([img], [tgt], [msk], progress=lambda s, l: calls.append((s, l)),
                         **TRAIN_KW)
    after = torch.random.get_rng_state()
    np_after = np.random.get_state()[1]
    return res, calls, before, after, np_before, np_after, (img, tgt, msk)


def test_train_detector_lowers_loss(trained):
    res, calls, *_ = trained
    # logged every 50 steps and at the last one
    assert len(res.losses) == 2
    assert [s for s, _ in calls] == [50, 60]
    assert [l for _, l in calls] == res.losses
    assert all(np.isfinite(res.losses))
    assert res.losses[-1] < res.losses[0]


def test_train_detector_leaves_global_rng_untouched(trained):
    _, _, before, after, np_before, np_after, _ = trained
    assert torch.equal(before, after)
    np.testing.assert_array_equal(np_before, np_after)


def test_train_detector_deterministic(trained):
    res, *_, data = trained
    img, tgt, msk = data
    res2 = train_detector([img], [tgt], [msk], **TRAIN_KW)
    assert res.losses == res2.losses
    assert res.state_dict.keys() == res2.state_dict.keys()
    for k in res.state_dict:
        assert torch.equal(res.state_dict[k], res2.state_dict[k]), k
        assert res.state_dict[k].device.type == "cpu"


def test_train_detector_other_seed_differs(trained):
    res, *_, data = trained
    img, tgt, msk = data
    res2 = train_detector([img], [tgt], [msk], **{**TRAIN_KW, "iters": 2, "seed": 6})
    res3 = train_detector([img], [tgt], [msk], **{**TRAIN_KW, "iters": 2})
    k = next(iter(res.state_dict))
    assert not torch.equal(res2.state_dict[k], res3.state_dict[k])


def test_trained_detector_loads_and_predicts(trained):
    res, *_, data = trained
    img = data[0]
    net = load_unet(res.state_dict, (4, 8), device="cpu")
    assert not net.training
    out = predict_heatmap(net, img, tile=64, margin=16)
    assert out.shape == img.shape and np.all(np.isfinite(out))


def test_train_detector_small_image_and_multiple_images():
    img, tgt, msk = _blob_image(seed=1, shape=(20, 26))  # smaller than the crop
    img2, tgt2, msk2 = _blob_image(seed=2)
    res = train_detector([img, img2], [tgt, tgt2], [msk, msk2],
                         **{**TRAIN_KW, "iters": 3})
    assert len(res.losses) == 1 and np.isfinite(res.losses[0])


def test_train_detector_empty_masks_raise():
    img = np.zeros((32, 32), np.float32)
    empty = np.zeros((32, 32), bool)
    with pytest.raises(ValueError):
        train_detector([img, img], [img, img], [empty, empty], **TRAIN_KW)
    with pytest.raises(ValueError):
        train_detector([], [], [], **TRAIN_KW)


# ---------------------------------------------------------------- precision
@pytest.fixture(scope="module")
def crop_detector(small_crops):
    """A detector trained on the bright-field crops with all their points, and the crops."""
    images, gt = small_crops
    tgts, msks, pts = [], [], []
    for i, im in zip(images.ids, images.images):
        p = np.stack([gt["y"][gt["image_id"] == i], gt["x"][gt["image_id"] == i]], 1)
        t, m = make_target(im.shape, p, np.zeros((0, 2)), sigma=3.0, mask_radius=1e4)
        tgts.append(t)
        msks.append(m)
        pts.append(p)
    res = train_detector(images.images, tgts, msks, widths=(8, 16), iters=150, batch=4,
                         crop=64, lr=1e-2, seed=0, device="cpu")
    return load_unet(res.state_dict, (8, 16), "cpu"), images.images, pts


def test_bfloat16_prediction_moves_the_heatmap_a_little_and_finds_the_same_cells(crop_detector):
    from pseudocell.core.metrics import match_points
    from pseudocell.core.peaks import find_peaks

    net, images, gts = crop_detector
    agree, n32, n16, f1 = 0, 0, 0, {"float32": [], "bfloat16": []}
    for im, gt in zip(images, gts):
        h32 = predict_heatmap(net, im)
        h16 = predict_heatmap(net, im, precision="bfloat16")
        assert h16.dtype == np.float32 and h16.shape == im.shape
        # autocast really ran (bfloat16 keeps 8 mantissa bits) and moved values by ~1e-2
        assert 0 < np.abs(h16 - h32).max() < 0.05 * max(1.0, float(h32.max()))
        p32 = find_peaks(h32, threshold=0.3, min_distance=4)[0]
        p16 = find_peaks(h16, threshold=0.3, min_distance=4)[0]
        agree += match_points(p16, p32, 2.0).tp
        n32, n16 = n32 + len(p32), n16 + len(p16)
        for name, p in (("float32", p32), ("bfloat16", p16)):
            f1[name].append(match_points(p, gt, 6.0).f1)
    assert n32 > 50 and np.mean(f1["float32"]) > 0.7  # a detector worth comparing
    assert agree >= 0.95 * max(n32, n16)  # a peak near the threshold may flip, no more
    assert abs(np.mean(f1["bfloat16"]) - np.mean(f1["float32"])) <= 0.03


def test_unknown_precision_is_refused():
    net = _eval_net((4, 8))
    with pytest.raises(ValueError, match="precision='float16'.*bfloat16"):
        predict_heatmap(net, np.zeros((32, 32), np.float32), precision="float16")


def test_config_precisions_are_the_detectors():
    from pseudocell.config import PRECISIONS as CONFIG_PRECISIONS
    from pseudocell.core.detector import PRECISIONS

    assert CONFIG_PRECISIONS == PRECISIONS


def test_zero_head_outputs_no_cell_before_training_and_learns():
    net = build_unet((4, 8), 3, head_init="zero").eval()
    assert torch.count_nonzero(net(torch.randn(2, 1, 16, 16))) == 0
    # only the head differs from the default initialisation of the same seed
    a, b = build_unet((4, 8), 3).state_dict(), net.state_dict()
    assert {k for k in a if not torch.equal(a[k], b[k])} == {"head.weight", "head.bias"}
    with pytest.raises(ValueError, match="head_init"):
        build_unet((4, 8), 3, head_init="ones")
    img, tgt, msk = _blob_image()
    kw = {**TRAIN_KW, "iters": 1}
    # the first step's loss is exactly that of an all-zero prediction on its crops
    from pseudocell.core.detector import _anchors, _sample_crops
    for seed in (1, 2):
        _, tb, mb = _sample_crops([img], [tgt], [msk], _anchors([msk]), kw["crop"],
                                  kw["batch"], np.random.default_rng(seed))
        want = float((tb.astype(np.float64) ** 2 * mb).sum() / mb.sum())
        got = train_detector([img], [tgt], [msk], **{**kw, "seed": seed},
                             head_init="zero").losses[0]
        assert got == pytest.approx(want, rel=1e-5)
    res = train_detector([img], [tgt], [msk], **TRAIN_KW, head_init="zero")
    assert res.losses[-1] < res.losses[0]


def test_init_state_starts_training_from_the_given_weights(trained):
    res, *_, (img, tgt, msk) = trained
    prev = res.state_dict
    from pseudocell.core.detector import _anchors, _sample_crops
    kw = {**TRAIN_KW, "iters": 1, "seed": 7}
    xb, tb, mb = _sample_crops([img], [tgt], [msk], _anchors([msk]), kw["crop"], kw["batch"],
                               np.random.default_rng(7))
    net = build_unet(kw["widths"], 0)
    net.load_state_dict(prev)
    net.train()  # as training does: BatchNorm on the batch's statistics
    with torch.no_grad():
        out = net(torch.from_numpy(xb)).numpy().astype(np.float64)
    want = float(((out - tb) ** 2 * mb).sum() / mb.sum())
    got = train_detector([img], [tgt], [msk], **kw, init_state=prev).losses[0]
    # the first step's loss is the previous model's on its crops, far below a fresh start's
    assert got == pytest.approx(want, rel=1e-4)
    assert got < 0.5 * train_detector([img], [tgt], [msk], **kw).losses[0]
    # the given weights win over head_init
    assert train_detector([img], [tgt], [msk], **kw, init_state=prev,
                          head_init="zero").losses[0] == pytest.approx(got, rel=1e-6)
    with pytest.raises(ValueError, match="init_state does not fit"):
        train_detector([img], [tgt], [msk], **{**kw, "widths": (4, 8, 16)}, init_state=prev)
