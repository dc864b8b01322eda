"""Speed/memory benchmark helpers: throughput figures and the per-child memory probe."""
from __future__ import annotations

import math

import numpy as np
import pytest

import _scripts  # noqa: F401 (puts benchmarks/ on the path)
import perf_lib as perf
from pseudocell.config import Config

THROUGHPUT_KEYS = {"ours_mpx_s", "bare_mpx_s", "ratio", "ratio_median", "overhead_pct", "ours_s", "bare_s",
                   "ours_all_s", "bare_all_s", "n_images", "image_shape", "megapixels",
                   "n_tiles", "tile_shapes", "tile_megapixels", "device", "device_name",
                   "torch_threads", "widths", "repeats"}


def _blobs(shape, centres, sigma=3.0):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.zeros(shape, np.float32)
    for y, x in centres:
        img += np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2)).astype(np.float32)
    return img


def _synthetic(n=2, shape=(48, 64), seed=0):
    """``n`` images of Gaussian blobs with noise; every other blob is annotated."""
    rng = np.random.default_rng(seed)
    ids, imgs, rows = [], [], []
    for k in range(n):
        centres = [(rng.uniform(6, shape[0] - 6), rng.uniform(6, shape[1] - 6))
                   for _ in range(8)]
        img = _blobs(shape, centres) + 0.05 * rng.standard_normal(shape).astype(np.float32)
        ids.append(f"syn{k}")
        imgs.append(img.astype(np.float32))
        rows += [(f"syn{k}", y, x) for y, x in centres[::2]]
    pts = {"image_id": np.array([r[0] for r in rows], object),
           "y": np.array([r[1] for r in rows]), "x": np.array([r[2] for r in rows])}
    return ids, imgs, pts


def _tiny_cfg(**kw):
    # peak_mode="reference" always yields peaks, so X_U is never empty on synthetic data
    base = dict(rounds=1, unet_widths=(4, 8), detector_iters=3, detector_batch=2,
                detector_crop=32, peak_mode="reference", pu_epochs=1, pu_batch=64,
                pu_feature_dim=8, alpha=0.2, beta=0.2, device="cpu", num_threads=1)
    return Config(**{**base, **kw})


def test_detector_throughput_reports_positive_finite_figures():
    _, imgs, _ = _synthetic(2, (40, 56))
    r = perf.detector_throughput(imgs, widths=(4, 8), device="cpu", repeats=2, num_threads=1)
    assert THROUGHPUT_KEYS <= set(r)
    for k in ("ours_mpx_s", "bare_mpx_s", "ratio", "ratio_median", "ours_s", "bare_s",
              "megapixels",
              "tile_megapixels"):
        assert math.isfinite(r[k]) and r[k] > 0, (k, r[k])
    assert r["n_images"] == 2 and r["image_shape"] == [40, 56]
    assert r["device"] == "cpu" and r["torch_threads"] == 1 and r["repeats"] == 2
    assert len(r["ours_all_s"]) == len(r["bare_all_s"]) == 2
    assert r["n_tiles"] == 2  # one tile per small image
    # the padded tiles hold at least the image pixels
    assert r["tile_megapixels"] >= r["megapixels"]


def test_detector_throughput_captures_every_tile_of_tiled_images():
    _, imgs, _ = _synthetic(2, (40, 56))
    r = perf.detector_throughput(imgs, widths=(4, 8), device="cpu", repeats=1, tile=16,
                                 margin=4, num_threads=1)
    assert r["n_tiles"] == 2 * 3 * 4  # ceil(40/16) * ceil(56/16) tiles per image
    assert math.isfinite(r["ratio"]) and r["ratio"] > 0


def test_detector_throughput_rejects_empty_input():
    with pytest.raises(ValueError, match="at least one image"):
        perf.detector_throughput([], widths=(4, 8), device="cpu")


def test_repeat_images_gives_distinct_ids_and_copies_points():
    ids, imgs, pts = _synthetic(2)
    rids, rimgs, rpts = perf.repeat_images(ids, imgs, pts, 3)
    assert rids == ["syn0", "syn1", "syn0_r2", "syn1_r2", "syn0_r3", "syn1_r3"]
    assert len(rimgs) == 6 and rimgs[4] is imgs[0]
    assert len(rpts["y"]) == 3 * len(pts["y"])
    assert set(rpts["image_id"]) == set(rids)


@pytest.mark.slow  # a child process runs two rounds (15 s); benchmark machinery, no fast twin
def test_round_memory_measures_a_child_round(tmp_path):
    ids, imgs, pts = _synthetic(2)
    r = perf.round_memory(2, tmp_path, _tiny_cfg(), images=imgs, points=pts, ids=ids,
                          timeout=120)
    assert r["scale"] == 2 and r["n_images"] == 4
    assert r["rss_source"] in ("VmHWM", "ru_maxrss")
    for k in ("peak_rss_mb", "wall_s", "prepare_peak_rss_mb", "run_dir_mb"):
        assert math.isfinite(r[k]) and r[k] > 0, (k, r[k])
    # the child is measured on its own: torch alone needs tens of MB, far below 10 GB
    assert 20 < r["peak_rss_mb"] < 10_000
    assert {"0/train_detector", "0/predict", "0/train_pu", "1/train_detector",
            "1/predict"} <= set(r["stage_seconds"])
    marks = list(r["peak_after_stage_mb"].values())
    assert marks == sorted(marks) and marks[-1] <= r["peak_rss_mb"]  # a high-water mark
    assert not (tmp_path / "scale_2").exists()  # run directory removed


def test_memory_scaling_summarises_scales(monkeypatch):
    calls = []

    def fake_round(scale, out_dir, cfg, data_dir=None, **kw):
        calls.append((scale, cfg.rounds))
        return {"scale": scale, "n_images": 4 * scale, "peak_rss_mb": 300.0 + 10 * scale,
                "wall_s": 2.0 * scale, "prepare_peak_rss_mb": 200.0 + scale,
                "prepare_wall_s": 1.0, "stage_seconds": {}, "run_dir_mb": 1.0,
                "rss_source": "VmHWM", "prepare": {}, "loop": {}}

    monkeypatch.setattr(perf, "round_memory", fake_round)
    monkeypatch.setattr(perf, "_run_child",
                        lambda args, timeout: {"peak_rss_mb": 250.0, "rss_source": "VmHWM"})
    r = perf.memory_scaling((1, 2, 4), cfg=_tiny_cfg(rounds=2), n_images=4)
    assert calls == [(1, 1), (2, 1), (4, 1)]  # always one round
    assert r["peak_ratio"] == pytest.approx(340 / 310)
    assert r["mb_per_image"] == pytest.approx(30 / 12)
    assert r["ratio_scales"] == [1, 4] and r["baseline_rss_mb"] == 250.0
    assert [row["scale"] for row in r["per_scale"]] == [1, 2, 4]
    assert "loop" not in r["per_scale"][0]


def test_round_memory_prepares_repeated_real_images(tmp_path, brightfield_dir):
    # the data-folder path of the prepare child only (the loop child is tested above)
    r = perf.round_memory(2, tmp_path, _tiny_cfg(), brightfield_dir, n_images=1, loop=False,
                          keep_run=True, timeout=120)
    assert r["n_images"] == 2 and r["peak_rss_mb"] is None
    assert r["prepare_peak_rss_mb"] > 0 and r["prepare"]["n_points"] >= 2
    from pseudocell.storage import arrays

    ids = arrays.stack_ids(str(tmp_path / "scale_2" / "run" / "inputs" / "images.zarr"))
    assert ids == ["001cells", "001cells_r2"]


@pytest.mark.gpu
def test_detector_throughput_on_cuda():
    _, imgs, _ = _synthetic(2, (64, 96))
    r = perf.detector_throughput(imgs, widths=(4, 8), device="cuda", repeats=2)
    assert r["device"].startswith("cuda") and r["device_name"] != "cpu"
    assert math.isfinite(r["ratio"]) and r["ours_mpx_s"] > 0 and r["bare_mpx_s"] > 0


def test_children_start_with_the_pseudocell_commands_malloc_settings(monkeypatch):
    """A benchmark child is not the pseudocell command (which restarts itself with them),
    so its environment carries them; the opt-out measures glibc's defaults."""
    from pseudocell.runtime import MALLOC_ENV, malloc_arena_env

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("PSEUDOCELL_MALLOC_ARENAS", raising=False)
    expected = malloc_arena_env()  # {} where glibc's malloc is not in use
    env = perf._child_env()
    assert {k: env.get(k) for k in expected} == expected
    if expected:
        assert env["MALLOC_ARENA_MAX"] == MALLOC_ENV["MALLOC_ARENA_MAX"]
    monkeypatch.setenv("PSEUDOCELL_MALLOC_ARENAS", "0")
    assert "MALLOC_ARENA_MAX" not in perf._child_env()
