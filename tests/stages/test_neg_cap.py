"""neg_cap: a round's negative pseudo-labels are capped at a share of the background the
detector's own calibration expects among the unlabeled detections."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import crop_inputs
from pseudocell.config import Config
from pseudocell.core.select import background_estimate
from pseudocell.errors import InvalidConfigError
from pseudocell.orchestrator.executors import LocalExecutor
from pseudocell.orchestrator.run import prepare_run, run_loop
from pseudocell.storage import tables


def test_background_estimate_counts_the_band_below_the_threshold():
    assert background_estimate(np.array([0.9, 0.8]), 0.5, 0.9) == 0.0  # all detections
    assert background_estimate(np.array([0.2, 0.3, 0.1]), 0.5, 0.9) == 3.0  # none
    assert background_estimate(np.zeros(0), 0.5, 0.9) == 0.0
    assert background_estimate(np.array([0.2, 0.3]), np.inf, 0.5) == 2.0
    # 4 above at recall 0.5 bring 4 cells below; 10 below: 6 background
    u = np.r_[np.full(4, 0.8), np.full(10, 0.3)]
    assert background_estimate(u, 0.5, 0.5) == 6.0
    assert background_estimate(u, 0.5, 1.0) == 10.0


def test_neg_cap_is_validated_and_left_out_of_the_hash_when_off():
    with pytest.raises(InvalidConfigError, match="neg_cap"):
        Config(neg_cap=0.0)
    with pytest.raises(InvalidConfigError, match="neg_cap.*unlabeled_ratio"):
        Config(neg_cap=0.5, unlabeled_ratio=1.0)
    with pytest.raises(InvalidConfigError, match="neg_cap"):
        Config(neg_cap=0.5, peak_mode="reference")
    Config(neg_cap=0.5, peak_mode="reference", peak_threshold=0.3)  # a fixed threshold
    assert "neg_cap" not in Config().to_dict()  # None: as runs made before the field
    assert Config(neg_cap=0.5).config_hash != Config().config_hash


def _round0(run: Path, stage: str) -> dict:
    return json.loads((run / "round_000" / stage / "_manifest.json").read_text())


def _negatives(run: Path) -> np.ndarray:
    sel = tables.read_table(str(run / "round_000" / "select" / "selected.parquet"))
    return sel["patch_id"][sel["kind"].astype(str) == "neg"]


def test_the_capped_negatives_are_the_first_of_the_uncapped_ones(small_crops, tiny_cfg,
                                                                 tmp_path):
    # the tiny detector's peaks lie in a narrow range: a threshold at their upper
    # quartile (read from a first run) leaves a band of candidates below it
    probe = prepare_run(tmp_path / "probe", tiny_cfg.replace(rounds=0), crop_inputs(small_crops))
    run_loop(probe, tiny_cfg.replace(rounds=0), LocalExecutor())
    values = tables.read_table(str(Path(probe.root) / "round_000/predict/candidates.parquet"))
    threshold = float(np.quantile(values["value"], 0.75))
    runs = {}
    for name, cap in (("off", None), ("on", 0.25)):
        cfg = tiny_cfg.replace(neg_cap=cap, beta=0.5, pu_agree=False, peak_threshold=threshold)
        layout = prepare_run(tmp_path / name, cfg, crop_inputs(small_crops))
        run_loop(layout, cfg, LocalExecutor())
        runs[name] = Path(layout.root)
    off, on = _negatives(runs["off"]), _negatives(runs["on"])
    # the estimate, recomputed from the round's tables: U's peaks against the threshold
    patches = tables.read_table(str(runs["on"] / "round_000/extract_patches/patches.parquet"))
    u_peak = patches["peak"][patches["set"].astype(str) == "U"]
    n_above = int((u_peak >= threshold).sum())
    want = max(0.0, len(u_peak) - n_above - n_above * (1 - 0.9) / 0.9)
    est = _round0(runs["on"], "select")["metrics"]["neg_background_estimate"]
    assert est == pytest.approx(want)
    assert "neg_background_estimate" not in _round0(runs["off"], "select")["metrics"]
    k = int(np.floor(0.25 * est))
    assert 0 < k < len(off), (k, len(off))  # the cap binds on these crops
    np.testing.assert_array_equal(on, off[:k])
    # everything before select is shared: the same U, the same scores
    assert (_round0(runs["on"], "rank")["outputs"]["scores"]["sha256"]
            == _round0(runs["off"], "rank")["outputs"]["scores"]["sha256"])
