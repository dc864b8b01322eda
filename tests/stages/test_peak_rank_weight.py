"""peak_rank_weight: the pseudo-labels' order blends the rankers' scores with the
detector's peak height."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import crop_inputs
from pseudocell.config import Config
from pseudocell.errors import InvalidConfigError
from pseudocell.orchestrator.executors import LocalExecutor
from pseudocell.orchestrator.run import prepare_run, run_loop
from pseudocell.storage import tables


def test_peak_rank_weight_is_validated_and_left_out_of_the_hash_when_off():
    for bad in (-0.1, 1.5):
        with pytest.raises(InvalidConfigError, match="peak_rank_weight"):
            Config(peak_rank_weight=bad)
    assert "peak_rank_weight" not in Config().to_dict()  # None: as runs made before it
    assert Config(peak_rank_weight=0.5).config_hash != Config().config_hash
    assert Config(peak_rank_weight=0.0).config_hash != Config().config_hash


def _round0(run: Path, stage: str) -> dict:
    return json.loads((run / "round_000" / stage / "_manifest.json").read_text())


def _selected(run: Path) -> tuple[list[int], list[int]]:
    sel = tables.read_table(str(run / "round_000" / "select" / "selected.parquet"))
    kind = sel["kind"].astype(str)
    return sel["patch_id"][kind == "pos"].tolist(), sel["patch_id"][kind == "neg"].tolist()


def test_weights_0_and_1_order_by_the_ranker_and_by_the_peak(small_crops, tiny_cfg,
                                                               tmp_path):
    base = tiny_cfg.replace(pu_agree=False, neg_peak_quantile=1.0)
    runs = {}
    for name, w in (("off", None), ("peak", 1.0)):
        cfg = base.replace(peak_rank_weight=w)
        layout = prepare_run(tmp_path / name, cfg, crop_inputs(small_crops))
        run_loop(layout, cfg, LocalExecutor())
        runs[name] = Path(layout.root)
    # everything before select is shared: the same U, the same scores
    sha = {n: _round0(r, "rank")["outputs"]["scores"]["sha256"] for n, r in runs.items()}
    assert len(set(sha.values())) == 1
    s = tables.read_table(str(runs["off"] / "round_000/rank/scores.parquet"))
    n = len(s["patch_id"])
    k = int(np.floor(base.alpha * n + 0.5))
    assert 0 < 2 * k < n
    # weight 1: the k highest peaks are the positives, the k lowest the negatives
    pos, neg = _selected(runs["peak"])
    order = np.lexsort((np.arange(n), -s["peak"]))
    want_pos = s["patch_id"][order[:k]]
    want_neg = s["patch_id"][np.lexsort((np.arange(n), s["peak"]))[:k]]
    assert sorted(pos) == sorted(want_pos.tolist())
    assert sorted(neg) == sorted(want_neg.tolist())
    # and that is not what the rankers chose on these crops
    assert _selected(runs["peak"]) != _selected(runs["off"])
