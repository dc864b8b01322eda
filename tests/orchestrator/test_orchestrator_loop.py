"""The whole loop on small real crops: outputs, resume after interruption, corruption."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import FailOnce, crop_inputs
from conftest import output_digests as _output_digests
from pseudocell.errors import StageError
from pseudocell.orchestrator.executors import LocalExecutor
from pseudocell.orchestrator.run import prepare_run, resume, run_loop
from pseudocell.storage import tables
from pseudocell.storage.manifest import read_manifest


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, small_crops, tiny_cfg):
    cfg = tiny_cfg
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    layout = prepare_run(run_dir, cfg, crop_inputs(small_crops))
    metrics = run_loop(layout, cfg, LocalExecutor())
    return cfg, layout, metrics


def test_one_round_writes_every_store_and_final_outputs(reference_run, small_crops):
    cfg, layout, metrics = reference_run
    root = Path(layout.root)
    for rel in ["config.toml", "inputs/images.zarr", "inputs/points.parquet",
                "round_000/predict/heatmaps.zarr", "round_000/extract_patches/patches.zarr",
                "round_000/extract_patches/patches.parquet", "round_000/train_pu/features.zarr",
                "round_000/rank/scores.parquet", "round_000/select/selected.parquet",
                "round_000/update_labels/points.parquet", "round_001/train_detector/model.pt",
                "final/model.pt", "final/detections.csv", "final/metrics.json"]:
        assert (root / rel).exists(), rel
    assert len(list((root / "final" / "overlays").glob("*.png"))) == 3
    # round rows: one per detector, with detection metrics at both radii, equal to an
    # independent matching of that round's detections against the full ground truth
    from pseudocell.core.metrics import match_points, pooled
    from pseudocell.data.points import points_by_image
    from pseudocell.results import RunResults

    assert [r["round"] for r in metrics["rounds"]] == [0, 1]
    res = RunResults(layout, cfg)
    images, gt = small_crops
    g = points_by_image(gt, images.ids)
    for r in metrics["rounds"]:
        for split, heldout in (("train", False), ("heldout", True)):
            d = points_by_image(res.detections(r["round"], heldout=heldout), images.ids)
            for radius in (15, 8):
                want = pooled([match_points(d[i], g[i], radius) for i in images.ids])
                for m in ("precision", "recall", "f1"):
                    assert r[f"{split}@{radius}/{m}"] == pytest.approx(want[m]), (split, m)
    # selection counts follow alpha/beta of |U| exactly
    ext = read_manifest(layout.manifest(0, "extract_patches"))["metrics"]
    sel = read_manifest(layout.manifest(0, "select"))["metrics"]
    scores = tables.read_table(layout.stage_dir(0, "rank") + "/scores.parquet")
    n_u = ext["n_U"]
    assert len(scores["patch_id"]) == n_u
    k = int(np.floor(0.1 * n_u + 0.5))  # alpha = beta = 0.1 of |U|, rounded half up
    top_pos = set(np.argsort(-scores["pos_score"], kind="stable")[:k])
    # negatives only among detections at or below the median peak (neg_peak_quantile=0.5)
    eligible = scores["peak"] <= np.quantile(scores["peak"], 0.5)
    by_n = np.argsort(-scores["neg_score"], kind="stable")
    top_neg = set(by_n[eligible[by_n]][:k])
    assert all(scores["peak"][sorted(top_neg)] <= np.median(scores["peak"]))
    assert sel["n_pseudo_pos"] == sel["n_pseudo_neg"] == k - len(top_pos & top_neg)
    # labels grow by exactly the selections and keep the annotated points
    labels = tables.read_table(layout.stage_dir(0, "update_labels") + "/points.parquet")
    kinds = labels["kind"].astype(str)
    assert (kinds == "annotated").sum() == len(crop_inputs(small_crops).points["y"])
    assert (kinds == "pseudo_pos").sum() == sel["n_pseudo_pos"]
    assert (kinds == "pseudo_neg").sum() == sel["n_pseudo_neg"]
    assert json.loads((root / "metrics.json").read_text())["rounds"] == metrics["rounds"]


def test_resume_after_interrupted_stage_gives_identical_outputs(reference_run, small_crops,
                                                                tmp_path):
    cfg, ref_layout, ref_metrics = reference_run
    layout = prepare_run(tmp_path / "run", cfg, crop_inputs(small_crops))
    with pytest.raises(StageError, match="train_pu"):
        run_loop(layout, cfg, FailOnce((0, "train_pu")))
    # the crashed stage left outputs but no manifest: it is unfinished
    assert Path(layout.stage_dir(0, "train_pu"), "features.zarr").exists()
    assert read_manifest(layout.manifest(0, "train_pu")) is None
    events = []
    metrics = resume(layout.root, LocalExecutor(), progress=events.append)
    skipped = {(e.round, e.stage) for e in events if e.status == "skipped"}
    assert skipped == {(0, "scale"), (0, "background"), (0, "train_detector"), (0, "predict"),
                       (0, "extract_patches")}
    assert _output_digests(layout, cfg) == _output_digests(ref_layout, cfg)
    assert metrics["rounds"] == ref_metrics["rounds"]


_KILLED_DRIVER = """
import sys
from pseudocell.orchestrator.executors import LocalExecutor
from pseudocell.orchestrator.run import resume
resume(sys.argv[1], LocalExecutor())
"""


def test_sigkilled_driver_then_resume_gives_identical_outputs(reference_run, small_crops,
                                                              tmp_path):
    """A driver SIGKILLed after round 0's train_pu wrote its outputs, before their
    manifest: nothing of it is trusted, resume reruns it and gives the reference bytes."""
    cfg, ref_layout, ref_metrics = reference_run
    layout = prepare_run(tmp_path / "run", cfg, crop_inputs(small_crops))
    env = {**os.environ, "PSEUDOCELL_FAULT": "kill_driver:0/train_pu"}
    proc = subprocess.run([sys.executable, "-c", _KILLED_DRIVER, layout.root], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    assert Path(layout.stage_dir(0, "train_pu"), "features.zarr").exists()
    assert read_manifest(layout.manifest(0, "train_pu")) is None
    assert read_manifest(layout.manifest(0, "extract_patches")) is not None
    events = []
    metrics = resume(layout.root, LocalExecutor(), progress=events.append)
    assert [(e.round, e.stage) for e in events if e.status == "done"][0] == (0, "train_pu")
    assert _output_digests(layout, cfg) == _output_digests(ref_layout, cfg)
    assert metrics["rounds"] == ref_metrics["rounds"]


def test_corrupted_store_is_detected_and_its_stage_reruns(reference_run, small_crops, tmp_path):
    cfg, ref_layout, _ = reference_run
    layout = prepare_run(tmp_path / "run", cfg, crop_inputs(small_crops))
    run_loop(layout, cfg, LocalExecutor())
    chunk = sorted(p for p in Path(layout.stage_dir(0, "train_pu"), "features.zarr").rglob("*")
                   if p.is_file() and p.name != "zarr.json")[0]
    chunk.write_bytes(chunk.read_bytes()[:5])  # truncate a chunk
    events = []
    resume(layout.root, LocalExecutor(), progress=events.append)
    rerun = [(e.round, e.stage) for e in events if e.status == "done"]
    assert rerun[0] == (0, "train_pu")
    assert _output_digests(layout, cfg) == _output_digests(ref_layout, cfg)


def test_rerun_of_finished_run_skips_everything(reference_run):
    cfg, layout, metrics = reference_run
    events = []
    again = run_loop(layout, cfg, LocalExecutor(), progress=events.append)
    assert events and all(e.status == "skipped" for e in events)
    assert again["rounds"] == metrics["rounds"]
