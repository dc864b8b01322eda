"""CUDA checks (marked ``gpu``; skipped without CUDA, never required)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pseudocell.core.detector import load_unet, predict_heatmap, resolve_device, train_detector
from pseudocell.core.targets import make_target

pytestmark = pytest.mark.gpu


def _blobs():
    rng = np.random.default_rng(0)
    pts = rng.uniform(10, 86, size=(12, 2))
    img = make_target((96, 96), pts, None, 3.0, 6.0)[0] + 0.05 * rng.standard_normal((96, 96))
    tgt, msk = make_target((96, 96), pts, None, 3.0, 6.0)
    return img.astype(np.float32), tgt, msk


def test_auto_device_is_cuda():
    assert resolve_device("auto").type == "cuda"


def test_train_on_cuda_and_predict_on_cuda_matches_cpu():
    img, tgt, msk = _blobs()
    res = train_detector([img], [tgt], [msk], widths=(8, 16, 32), iters=60, batch=4, crop=64,
                         lr=1e-3, seed=0, device="cuda")
    assert res.losses[-1] < res.losses[0]
    h_gpu = predict_heatmap(load_unet(res.state_dict, (8, 16, 32), "cuda"), img)
    h_cpu = predict_heatmap(load_unet(res.state_dict, (8, 16, 32), "cpu"), img)
    # same weights: CUDA and CPU convolutions agree to float32 rounding (TF32 off)
    np.testing.assert_allclose(h_gpu, h_cpu, atol=2e-3)
