"""detector_head_init: validated, out of the hash when off, and reaching the detector."""
from __future__ import annotations

import pytest
import torch

from conftest import crop_inputs
from pseudocell.config import Config
from pseudocell.errors import InvalidConfigError
from pseudocell.orchestrator.executors import LocalExecutor
from pseudocell.orchestrator.run import prepare_run, run_loop
from pseudocell.stages.loop import load_model


def test_detector_head_init_is_validated_and_left_out_of_the_hash_when_off():
    with pytest.raises(InvalidConfigError, match="detector_head_init"):
        Config(detector_head_init="ones")
    assert "detector_head_init" not in Config().to_dict()  # as runs made before it
    assert Config(detector_head_init="zero").config_hash != Config().config_hash


def test_a_run_trains_from_a_zero_head(small_crops, tiny_cfg, tmp_path):
    # no training step: the saved detector is the initial one
    cfg = tiny_cfg.replace(rounds=0, detector_iters=1, detector_lr=1e-12,
                           detector_head_init="zero")
    layout = prepare_run(tmp_path / "run", cfg, crop_inputs(small_crops))
    run_loop(layout, cfg, LocalExecutor())
    state = load_model(str(tmp_path / "run" / "round_000" / "train_detector" / "model.pt"))
    head = state["state_dict"]["head.weight"]
    assert torch.count_nonzero(head) == 0 or float(head.abs().max()) < 1e-9
