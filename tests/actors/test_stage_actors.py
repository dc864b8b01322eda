"""Actor classes without Ray: they run their stages, refuse others, and sharded stages give
the same bytes whatever the number and order of shards."""
from __future__ import annotations

import pytest

from conftest import assert_shards_give_the_stage_bytes
from pseudocell.actors.stage_actors import actor_class
from pseudocell.data.points import hide_points
from pseudocell.orchestrator.executors import LocalExecutor
from pseudocell.orchestrator.run import prepare_run, run_loop
from pseudocell.stages.base import SHARDED, StageInputs
from pseudocell.stages.loop import PARTIAL
from pseudocell.validation import RunInputs
from pseudocell.storage import fs
from pseudocell.storage.manifest import checksum, read_manifest


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, small_crops, tiny_cfg):
    images, gt = small_crops
    layout = prepare_run(tmp_path_factory.mktemp("act") / "run", tiny_cfg,
                         RunInputs(images, hide_points(gt, 0.3, seed=0), gt, images, gt))
    run_loop(layout, tiny_cfg, LocalExecutor())
    return layout


SPECS = {s.name: s for s in PARTIAL.round_stages}


def test_actor_kinds_are_named_classes_one_per_kind():
    assert actor_class("Predictor").__name__ == "Predictor"
    assert actor_class("Predictor") is actor_class("Predictor")
    assert actor_class("Predictor") is not actor_class("PRanker")
    assert [s.name for s in PARTIAL.round_stages if s.kind == SHARDED] == \
        ["predict", "extract_patches"]


def test_an_actor_refuses_a_stage_of_another_kind(tiny_cfg, tmp_path):
    with pytest.raises(ValueError, match="LabelSelector does not run stage 'predict'"):
        actor_class("LabelSelector")().run(SPECS["predict"], StageInputs(str(tmp_path), 0, 0),
                                           tiny_cfg)


@pytest.mark.parametrize("stage,n_items", [("predict", 6), ("extract_patches", 1)])
def test_shards_in_any_number_and_order_give_the_stage_bytes(stage, n_items, finished_run,
                                                             tiny_cfg, tmp_path):
    # 3 training + 3 held-out images → 6 predict shards; the few patches fill one chunk
    assert assert_shards_give_the_stage_bytes(finished_run, SPECS[stage], tiny_cfg,
                                              tmp_path) == n_items


def test_patch_shards_of_many_chunks_write_the_same_array(finished_run, tiny_cfg, tmp_path,
                                                          monkeypatch):
    import pseudocell.stages.loop as loop

    monkeypatch.setattr(loop, "PATCH_CHUNK", 16)  # many chunks on a small crop set
    m = read_manifest(finished_run.manifest(0, "extract_patches"))
    sums = []
    for n_shards, order in ((1, 1), (5, -1)):
        inp = StageInputs(out_dir=str(tmp_path / f"s{n_shards}"), round=0, seed=m["seed"],
                          uris={k: finished_run.uri(v["uri"]) for k, v in m["inputs"].items()})
        fs.makedirs(inp.out_dir)
        items = loop.extract_patches_plan(inp, tiny_cfg, n_shards)
        assert len(items) == n_shards
        assert all(it["rows"][0] % 16 == 0 for it in items)
        res = [loop.extract_patches_shard(inp, tiny_cfg, it) for it in items[::order]]
        out = loop.extract_patches_merge(inp, tiny_cfg, res)
        sums.append(checksum(out.uris["patches"]))
    assert sums[0] == sums[1]


def test_training_actor_exposes_its_progress(finished_run, tiny_cfg, tmp_path):
    """What the Ray executor polls: the last (epoch, epochs, risk) of the running stage."""
    m = read_manifest(finished_run.manifest(0, "train_pu"))
    inp = StageInputs(out_dir=str(tmp_path / "pu"), round=0, seed=m["seed"],
                      uris={k: finished_run.uri(v["uri"]) for k, v in m["inputs"].items()})
    fs.makedirs(inp.out_dir)
    actor = actor_class("PUFeatureLearner")(threads=1)
    assert actor.progress() is None
    out = actor.run(SPECS["train_pu"], inp, tiny_cfg)
    assert actor.progress() == (tiny_cfg.pu_epochs, tiny_cfg.pu_epochs, out.metrics["pu_risk"][-1])
    assert out.metrics == m["metrics"]


def test_predict_runs_the_network_in_the_configured_precision(finished_run, tiny_cfg,
                                                              tmp_path):
    """``precision = "bfloat16"`` reaches the predict stage's network: its heatmaps move
    by ~1e-2 from the run's float32 ones (which a float32 re-run gives byte for byte)."""
    import numpy as np

    import pseudocell.stages.loop as loop
    from pseudocell.storage import arrays

    m = read_manifest(finished_run.manifest(0, "predict"))
    maps = {}
    for precision in ("float32", "bfloat16"):
        inp = StageInputs(out_dir=str(tmp_path / precision), round=0, seed=m["seed"],
                          uris={k: finished_run.uri(v["uri"]) for k, v in m["inputs"].items()})
        fs.makedirs(inp.out_dir)
        out = loop.predict(inp, tiny_cfg.replace(precision=precision))
        maps[precision] = out.uris["heatmaps"]
    assert checksum(maps["float32"]) == m["outputs"]["heatmaps"]["sha256"]
    n = len(arrays.stack_ids(maps["float32"]))
    diffs = [np.abs(arrays.read_stack_item(maps["bfloat16"], k).astype(np.float32)
                    - arrays.read_stack_item(maps["float32"], k)).max() for k in range(n)]
    assert 0 < max(diffs) < 0.05
