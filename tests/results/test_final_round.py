"""A collapsed last detector is never the silent final result: final/ keeps the best
earlier round's detector (judged on the annotated points only) and says why."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import crop_inputs
from pseudocell.orchestrator.executors import LocalExecutor
from pseudocell.orchestrator.run import prepare_run, run_loop
from pseudocell.results import RunResults
from pseudocell.results.finalize import choose_final_round
from pseudocell.stages.base import Mode
from pseudocell.stages.loop import PARTIAL, predict
from pseudocell.stages.modes import MODES
from pseudocell.storage import tables


def _collapsed_predict(inp, cfg):
    """The real predict, then the detector 'finds' nothing on the training images."""
    out = predict(inp, cfg)
    t = tables.read_table(out.uris["peaks"])
    tables.write_table(out.uris["peaks"], {k: v[:0] for k, v in t.items()})
    return out


def test_choose_final_round():
    assert choose_final_round([0.9, 0.8], 0.5) == (1, None)
    assert choose_final_round([0.9, 0.3], 0.0) == (1, None)  # guard off
    assert choose_final_round([None, 0.1], 0.5) == (1, None)  # nothing to compare with
    rnd, why = choose_final_round([0.9, 0.95, 0.95, 0.4], 0.5)
    assert rnd == 2 and "round 3" in why and "40%" in why and "95%" in why


@pytest.fixture
def collapsing_mode(monkeypatch):
    final = tuple(s if s.name != "predict" else
                  type(s)(**{**s.__dict__, "fn": _collapsed_predict, "kind": "plain",
                             "shards": None}) for s in PARTIAL.final_stages)
    mode = Mode(**{**PARTIAL.__dict__, "name": "collapsing", "final_stages": final})
    monkeypatch.setitem(MODES, mode.name, mode)
    return mode


def test_a_collapsed_last_round_leaves_the_best_earlier_round_in_final(
        collapsing_mode, small_crops, tiny_cfg, tmp_path, caplog):
    cfg = tiny_cfg.replace(mode="collapsing")
    layout = prepare_run(tmp_path / "run", cfg, crop_inputs(small_crops))
    metrics = run_loop(layout, cfg, LocalExecutor())
    res = RunResults(layout, cfg)
    assert len(res.detections(1)["y"]) == 0 and len(res.detections(0)["y"]) > 0
    assert metrics["final_round"] == 0
    assert "collapsed" in metrics["final_reason"]
    assert "collapsed" in caplog.text
    assert [r["annotated_recall"] for r in metrics["rounds"]][1] == 0.0
    final = Path(layout.root) / "final"
    got, want = (torch.load(p, weights_only=True) for p in (final / "model.pt",
                                                            res.model_uri(0)))
    assert got["state_dict"].keys() == want["state_dict"].keys()
    assert all(torch.equal(got["state_dict"][k], want["state_dict"][k])
               for k in want["state_dict"])
    # the threshold round 0 used travels with its model (None: the run fixed it)
    assert got["meta"].get("peak_threshold") == metrics["rounds"][0].get("peak_threshold")
    n_rows = len((final / "detections_table.csv").read_text().splitlines()) - 1
    assert n_rows == len(res.detections(0)["y"])
    assert json.loads((final / "metrics.json").read_text())["final_round"] == 0


def test_a_healthy_last_round_is_final(small_crops, tiny_cfg, tmp_path):
    layout = prepare_run(tmp_path / "run", tiny_cfg, crop_inputs(small_crops))
    metrics = run_loop(layout, tiny_cfg, LocalExecutor())
    assert metrics["final_round"] == tiny_cfg.rounds and metrics["final_reason"] is None
    recalls = [r["annotated_recall"] for r in metrics["rounds"]]
    assert all(0.0 < v <= 1.0 for v in recalls) and np.isfinite(recalls).all()
