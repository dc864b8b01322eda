"""Modes are data: a new mode is a stage function and a ``Mode`` entry, and the engine,
resume, the run reader and finalize follow without any edit.

The throwaway mode here seeds round 0 with a Laplacian-of-Gaussian detector instead of
clicks (no points at all), then runs the partial loop's rounds on those labels.
"""
from __future__ import annotations

import numpy as np
import pytest

from pseudocell.core.classical import log_detect
from pseudocell.errors import InvalidConfigError, InvalidInputError
from pseudocell.orchestrator.executors import LocalExecutor
from pseudocell.orchestrator.run import planned_stages, prepare_run, run_loop
from pseudocell.results import RunResults
from pseudocell.stages.base import Input, Mode, Output, StageInputs, StageOutputs, StageSpec
from pseudocell.stages.loop import PARTIAL, scale_stage
from pseudocell.stages.modes import MODES, get_mode
from pseudocell.storage import arrays, tables
from pseudocell.storage.layout import join
from pseudocell.validation import RunInputs


def log_points(inp: StageInputs, cfg) -> StageOutputs:
    """Round 0's labels: LoG blobs (dark cells, sigma 4 px) of every training image."""
    ids = arrays.stack_ids(inp.uris["images"])
    rows = {"image_id": [], "y": [], "x": []}
    for k, i in enumerate(ids):
        pts = log_detect(arrays.read_stack_item(inp.uris["images"], k), sigma=4.0,
                         threshold=0.05, polarity="dark", min_distance=8)
        rows["image_id"] += [i] * len(pts)
        rows["y"] += pts[:, 0].tolist()
        rows["x"] += pts[:, 1].tolist()
    n = len(rows["y"])
    uri = join(inp.out_dir, "points.parquet")
    tables.write_table(uri, {"image_id": np.array(rows["image_id"], object),
                             "y": np.array(rows["y"]), "x": np.array(rows["x"]),
                             "kind": np.array(["annotated"] * n, object),
                             "round": np.full(n, -1, np.int64), "score": np.full(n, np.nan)})
    return StageOutputs({"points": uri}, {"n_points": n})


LOG_SEEDED = Mode(
    name="log-seeded",
    before=(StageSpec("log_points", log_points, "LabelSelector", uses_gpu=False,
                      inputs={"images": Input("images")}),
            scale_stage(Output("log_points", "points"))),
    round_stages=PARTIAL.round_stages,
    final_stages=PARTIAL.final_stages,
    initial_labels=Output("log_points", "points"),
    labels=PARTIAL.labels,
    products=PARTIAL.products,
    required_inputs=("images",),
)


@pytest.fixture
def log_mode(monkeypatch):
    monkeypatch.setitem(MODES, LOG_SEEDED.name, LOG_SEEDED)
    return LOG_SEEDED


def test_a_new_mode_runs_end_to_end_without_engine_changes(log_mode, small_crops, tiny_cfg,
                                                           tmp_path):
    images, gt = small_crops
    cfg = tiny_cfg.replace(mode="log-seeded")
    layout = prepare_run(tmp_path / "run", cfg, RunInputs(images, None, gt, images, gt))
    events = []
    metrics = run_loop(layout, cfg, LocalExecutor(), progress=events.append)

    done = [(e.round, e.stage) for e in events if e.status == "done"]
    assert done[0] == (0, "log_points")
    assert done == [(r, s.name) for r, s in planned_stages(layout, cfg)]
    assert done[1] == (0, "scale")
    assert len(done) == 2 + len(PARTIAL.round_stages) + len(PARTIAL.final_stages)
    res = RunResults(layout, cfg)
    seeds = tables.read_table(join(layout.stage_dir(0, "log_points"), "points.parquet"))
    assert len(seeds["y"]) > 0
    # round 0 trained on the LoG points; round 1 on them plus round 0's pseudo-labels
    assert res.training_labels(0)["y"].tolist() == seeds["y"].tolist()
    r1 = res.training_labels(1)
    assert set(r1["kind"].astype(str)) <= {"annotated", "pseudo_pos", "pseudo_neg"}
    assert len(r1["y"]) == len(seeds["y"]) + metrics["rounds"][0]["n_pseudo_pos"] + \
        metrics["rounds"][0]["n_pseudo_neg"]
    assert metrics["rounds"][-1]["labels_pos"] == int((r1["kind"] != "pseudo_neg").sum())
    assert (tmp_path / "run" / "final" / "detections.csv").exists()
    # resume: nothing runs again
    again = []
    run_loop(layout, cfg, LocalExecutor(), progress=again.append)
    assert {e.status for e in again if e.status in ("done", "skipped")} == {"skipped"}


def test_a_mode_refuses_runs_without_its_inputs(small_crops, tiny_cfg, tmp_path):
    images, gt = small_crops
    with pytest.raises(InvalidInputError, match="mode 'partial' needs points"):
        prepare_run(tmp_path / "run", tiny_cfg, RunInputs(images, None, gt))
    assert not (tmp_path / "run").exists()
    with pytest.raises(InvalidConfigError, match="mode='nope' is not a pseudocell mode; use "
                                                 "one of adapt, adapt-ranker, label-free, partial"):
        get_mode("nope")


def test_precision_is_ignored_exactly_by_the_stages_before_any_prediction():
    """The forward pass's arithmetic (``precision``) changes predictions, so the stages
    that predict keep it in their hash; the stages before them run no prediction and
    ignore it, so a bfloat16 rerun of a sweep shares their outputs with float32's."""
    from pseudocell.stages.modes import MODES

    predicting = {"predict", "uncertainty"}
    before_prediction = {"scale", "background", "train_detector", "activation_map",
                         "bootstrap_points"}
    seen = set()
    for mode in MODES.values():
        for spec in (*mode.before, *mode.round_stages, *mode.final_stages):
            seen.add(spec.name)
            if spec.name in predicting:
                assert "precision" not in spec.ignores, (mode.name, spec.name)
            if spec.name in before_prediction:
                assert "precision" in spec.ignores, (mode.name, spec.name)
    assert predicting | before_prediction <= seen
