"""detector_warm_start: round r's detector starts from round r - 1's weights; off, the
runs, manifests and hashes are those made before the field."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import crop_inputs
from pseudocell.config import Config
from pseudocell.errors import InvalidConfigError
from pseudocell.orchestrator.executors import LocalExecutor
from pseudocell.orchestrator.run import prepare_run, run_loop
from pseudocell.stages.base import Output, StageSpec
from pseudocell.stages.loop import train_detector


def test_detector_warm_start_is_validated_and_off_leaves_the_hash():
    for bad in ("yes", 1, 0.0):
        with pytest.raises(InvalidConfigError, match="detector_warm_start"):
            Config(detector_warm_start=bad)
    assert "detector_warm_start" not in Config().to_dict()
    assert Config(detector_warm_start=False).config_hash == Config().config_hash
    assert Config(detector_warm_start=True).config_hash != Config().config_hash


def test_a_gated_input_must_be_optional_and_gated_by_a_config_field():
    ref = {"init": Output("train_detector", "model", -1)}
    with pytest.raises(ValueError, match="must be optional"):
        StageSpec("s", train_detector, "A", inputs=ref, gated={"init": "detector_warm_start"})
    with pytest.raises(ValueError, match="config fields"):
        StageSpec("s", train_detector, "A", inputs=ref, optional=frozenset({"init"}),
                  gated={"init": "no_such_field"})


def _manifest(run: Path, rnd: int, stage: str) -> dict:
    return json.loads((run / f"round_{rnd:03d}" / stage / "_manifest.json").read_text())


def test_round_1_trains_from_round_0s_model_only_when_asked(small_crops, tiny_cfg, tmp_path):
    runs = {}
    for name, on in (("off", False), ("on", True)):
        cfg = tiny_cfg.replace(detector_warm_start=on)
        layout = prepare_run(tmp_path / name, cfg, crop_inputs(small_crops))
        run_loop(layout, cfg, LocalExecutor())
        runs[name] = Path(layout.root)
    off0, on0 = (_manifest(runs[n], 0, "train_detector") for n in ("off", "on"))
    off1, on1 = (_manifest(runs[n], 1, "train_detector") for n in ("off", "on"))
    # round 0 has nothing to start from: the same inputs and the same model
    assert "init" not in on0["inputs"] and on0["inputs"].keys() == off0["inputs"].keys()
    assert on0["outputs"]["model"]["sha256"] == off0["outputs"]["model"]["sha256"]
    # off: no trace of the field; on: round 1 reads round 0's model (by its checksum)
    assert "init" not in off1["inputs"]
    assert on1["inputs"]["init"]["uri"].endswith("round_000/train_detector/model.pt")
    assert on1["inputs"]["init"]["manifest_sha256"] is not None
    assert on1["outputs"]["model"]["sha256"] != off1["outputs"]["model"]["sha256"]
    # the first window's loss starts where round 0's model stands, not from scratch
    assert on1["metrics"]["detector_loss"][0] < off1["metrics"]["detector_loss"][0]
    m0 = torch.load(runs["on"] / "round_000/train_detector/model.pt", weights_only=True)
    m1 = torch.load(runs["on"] / "round_001/train_detector/model.pt", weights_only=True)
    assert m0["meta"] == m1["meta"]


def test_every_modes_detector_can_start_from_the_previous_round():
    from pseudocell.stages.loop import WARM_START
    from pseudocell.stages.modes import MODES

    for mode in MODES.values():
        specs = [s for s in mode.round_stages + mode.final_stages if s.name == "train_detector"]
        assert specs, mode.name
        for s in specs:
            assert s.inputs["init"] == WARM_START and WARM_START.offset == -1
            assert s.gated == {"init": "detector_warm_start"}
