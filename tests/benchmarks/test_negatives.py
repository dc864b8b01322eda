"""benchmarks/negatives.py: the per-round diagnosis of negative pseudo-labels."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import _scripts
from conftest import crop_inputs
from pseudocell.orchestrator.executors import LocalExecutor
from pseudocell.orchestrator.run import prepare_run, run_loop

neg = _scripts.load_script("negatives")


def test_auc_on_a_hand_computed_case():
    # positives score 0.35 and 0.8, negatives 0.1 and 0.4: 3 of the 4 pairs ordered
    assert neg._auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    assert neg._auc(np.array([1.0, 1.0]), np.array([0, 1])) == 0.5  # a tie counts half
    assert np.isnan(neg._auc(np.array([1.0, 2.0]), np.array([1, 1])))


def test_top_bg_takes_the_highest_scores_lower_index_first_on_ties():
    bg = np.array([True, False, True, False])
    assert neg._top_bg(np.array([3.0, 3.0, 1.0, 0.0]), bg, 1) == 1.0
    assert neg._top_bg(np.array([3.0, 3.0, 1.0, 0.0]), bg, 2) == 0.5
    assert np.isnan(neg._top_bg(np.zeros(4), bg, 0))


def test_a_finished_run_is_read_round_by_round(small_crops, tiny_cfg, tmp_path):
    cfg = tiny_cfg.replace(rounds=1)
    layout = prepare_run(tmp_path / "run", cfg, crop_inputs(small_crops))
    run_loop(layout, cfg, LocalExecutor())
    run = Path(layout.root)
    rows = neg.analyse(run)
    assert [r["round"] for r in rows] == [0]  # round 1 is the last: it ranks nothing
    r = rows[0]
    man = lambda stage: json.loads((run / "round_000" / stage / "_manifest.json").read_text())
    assert r["n_U"] == man("extract_patches")["metrics"]["n_U"]
    assert r["n_chosen"] == man("select")["metrics"]["n_pseudo_neg"]
    assert r["prior"] == man("train_pu")["metrics"]["pu_prior"]
    assert r["U_bg"] + r["U_cells"] == 1.0 and 0.0 < r["U_bg"] < 1.0
    assert r["k"] == int(np.floor(cfg.beta * r["n_U"] + 0.5))
    assert 0.0 <= r["prior_clicked"] <= 1.0
    assert set(r["top_bg"]) == set(r["auc_bg"]) == {"neg", "-peak", "-pu", "blend"}
    assert set(r["pos_top_bg"]) == {"pos", "pos&pu", "peak", "blend"}
    assert r["n_pos_chosen"] == man("select")["metrics"]["n_pseudo_pos"]
    assert r["k_pos"] == int(np.floor(cfg.alpha * r["n_U"] + 0.5))
    text = neg.table(run, rows)
    assert text.count("\n| 0 |") == 1


def test_pooled_weights_each_round_by_its_count():
    rows = [{"k": 1, "top_bg": {"neg": 1.0}, "k_pos": 2, "pos_top_bg": {"pos": 0.5}},
            {"k": 3, "top_bg": {"neg": 0.0}, "k_pos": 0, "pos_top_bg": {"pos": float("nan")}}]
    pool = neg.pooled(rows)
    assert pool["n_rounds"] == 2
    assert pool["top_bg/neg"] == {"mean": 0.5, "pooled": 0.25}
    assert pool["pos_top_bg/pos"] == {"mean": 0.5, "pooled": 0.5}  # nan: no positives
    text = neg.summary_table("x", pool)
    assert "| negatives | neg | 0.500 | 0.250 |" in text
    assert "| positives | pos | 0.500 | 0.500 |" in text
