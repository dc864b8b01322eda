"""The label-free mode on real bright-field crops: seeds from PSM with no click, the loop
after them, clicks mixed in, resume, the Ray executor's bytes, MLflow artefacts and the
refusals of bad input (issue 16)."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import output_digests
from pseudocell.config import Config
from pseudocell.data.points import hide_points
from pseudocell.errors import InvalidConfigError, InvalidInputError
from pseudocell.orchestrator.executors import LocalExecutor
from pseudocell.orchestrator.run import prepare_run, run_loop
from pseudocell.results.reader import RunResults
from pseudocell.storage import tables
from pseudocell.storage.manifest import read_manifest
from pseudocell.validation import ImageSet, RunInputs


def lf_config(**kw) -> Config:
    """The tiny test config in label-free mode (32 px activation tiles: the crops hold
    61 440 pixels, 16 tiles of 32 x 32 need 16 384)."""
    from conftest import tiny_config

    return tiny_config().replace(mode="label-free", psm_iters=10, psm_batch=4, psm_crop=32,
                                 cell_diameter=16.0, **kw)


@pytest.fixture(scope="module")
def lf_run(tmp_path_factory, small_crops):
    images, gt = small_crops
    cfg = lf_config()
    layout = prepare_run(tmp_path_factory.mktemp("lf") / "run", cfg,
                         RunInputs(images, None, gt, images, gt))
    metrics = run_loop(layout, cfg, LocalExecutor())
    return layout, cfg, metrics


def test_no_label_free_stage_reads_a_field_it_ignores(tmp_path, small_crops):
    from conftest import RecordingExecutor, assert_ignored_fields_unread

    images, gt = small_crops
    cfg = lf_config()
    layout = prepare_run(tmp_path / "run", cfg, RunInputs(images, None, gt, images, gt))
    ex = RecordingExecutor()
    run_loop(layout, cfg, ex)
    assert_ignored_fields_unread(ex, layout, cfg)
    assert "fusion_beta" in ex.reads[(0, "bootstrap_points")]  # the proxy sees reads


def test_seeds_are_the_most_confident_psm_points(lf_run):
    layout, cfg, metrics = lf_run
    res = RunResults(layout, cfg)
    labels = res.training_labels(0)
    kinds = labels["kind"].astype(str)
    cand = res._table(res.store_uri(0, res.mode.products["seeds"]))
    n_seed = int(np.ceil(cfg.seed_fraction * len(cand["y"])))
    assert (kinds == "seed").sum() == n_seed and "annotated" not in kinds
    seed_scores = np.sort(labels["score"][kinds == "seed"])
    assert seed_scores.min() >= np.sort(cand["value"])[::-1][n_seed - 1]
    # background a cell diameter from every cell pixel: none fits in these dense crops
    n_neg = (kinds == "pseudo_neg").sum()
    assert n_neg <= cfg.seed_negatives * n_seed
    assert (labels["round"] == -1).all()
    row0 = metrics["rounds"][0]
    assert row0["seeds"] == n_seed and row0["labels_pos"] == n_seed
    # the seeds are mostly cells on these real crops (no label was used to find them)
    assert res.annotated_recall(0) is not None


def test_psm_points_are_cells_and_the_loop_runs(lf_run, small_crops):
    from pseudocell.core.metrics import match_points, pooled
    from pseudocell.data.points import points_by_image

    layout, cfg, metrics = lf_run
    images, gt = small_crops
    res = RunResults(layout, cfg)
    seeds = points_by_image(res.training_labels(0), images.ids, ("seed",))
    g = points_by_image(gt, images.ids)
    prec = pooled([match_points(seeds[i], g[i], cfg.radius) for i in images.ids])["precision"]
    assert prec > 0.6
    assert [r["round"] for r in metrics["rounds"]] == [0, 1]
    assert res.detections(1, heldout=True) is not None
    assert (layout_final := layout.final) and (res.layout.final)


def test_maps_and_panels_are_artefacts_of_round_0(lf_run):
    layout, cfg, _ = lf_run
    res = RunResults(layout, cfg)
    arts = res.stage_artifacts(0)
    assert [name for name, _ in arts] == ["bootstrap_points"]
    from pathlib import Path

    pngs = sorted(p.name for p in Path(arts[0][1]).glob("*.png"))
    assert pngs == [f"{i}.png" for i in res.image_ids[:3]]
    m = read_manifest(layout.manifest(0, "activation_map"))
    assert {"model", "maps", "eval_maps"} <= set(m["outputs"])
    assert res.stage_artifacts(1) == []


def test_rerun_of_bootstrap_gives_the_same_bytes(lf_run, tmp_path, small_crops):
    """Resume from the last finished stage: delete everything from bootstrap_points on,
    run again, same outputs."""
    import shutil

    layout, cfg, _ = lf_run
    ref = output_digests(layout, cfg)
    copy = tmp_path / "copy"
    shutil.copytree(layout.root, copy)
    from pseudocell.storage.layout import RunLayout

    lay2 = RunLayout(str(copy))
    for p in sorted(copy.glob("round_*")):
        if p.name != "round_000":
            shutil.rmtree(p)
    for stage in ("bootstrap_points", "scale", "train_detector", "predict", "extract_patches",
                  "train_pu", "rank", "select", "update_labels", "evaluate"):
        shutil.rmtree(copy / "round_000" / stage, ignore_errors=True)
    run_loop(lay2, cfg, LocalExecutor())
    assert output_digests(lay2, cfg) == ref


def test_bootstrap_shards_in_any_number_and_order_give_the_stage_bytes(lf_run, tmp_path):
    """How the Ray executor runs the sharded stage (plan, shards, merge), without Ray."""
    from conftest import assert_shards_give_the_stage_bytes
    from pseudocell.stages.modes import get_mode

    layout, cfg, _ = lf_run
    spec = next(s for s in get_mode(cfg.mode).before if s.name == "bootstrap_points")
    assert assert_shards_give_the_stage_bytes(layout, spec, cfg, tmp_path) > 1


def test_clicks_join_the_seeds(tmp_path, small_crops):
    images, gt = small_crops
    clicks = hide_points(gt, 0.2, seed=1)
    cfg = lf_config(rounds=0).replace(cell_diameter=None)  # measured at first-pass points
    layout = prepare_run(tmp_path / "run", cfg, RunInputs(images, clicks, None, None, None))
    metrics = run_loop(layout, cfg, LocalExecutor())
    # the bright interior of these cells: 9.3-9.5 px at the clicks (issue 15's estimate)
    d = metrics["rounds"][0]["psm_diameter"]
    assert 7.0 < d < 13.0
    labels = RunResults(layout, cfg).training_labels(0)
    kinds = labels["kind"].astype(str)
    assert (kinds == "annotated").sum() == len(clicks["y"])
    ann = np.stack([labels["y"][kinds == "annotated"], labels["x"][kinds == "annotated"]], 1)
    seed = np.stack([labels["y"][kinds == "seed"], labels["x"][kinds == "seed"]], 1)
    from pseudocell.core.metrics import near_any

    same = labels["image_id"].astype(str)
    for i in images.ids:
        a = ann[same[kinds == "annotated"] == i]
        s = seed[same[kinds == "seed"] == i]
        if len(a) and len(s):
            assert not near_any(s, a, d / 2 - 1e-6).any()  # no seed doubles a click


def test_bad_inputs_are_refused_before_anything_is_written(tmp_path, small_crops):
    images, gt = small_crops
    cfg = lf_config()
    blank = ImageSet(images.ids[:1] + ["black"], images.images[:1] +
                     [np.zeros((128, 160), np.float32)], images.paths[:1] + ["black.png"])
    with pytest.raises(InvalidInputError, match="blank.*black.png"):
        prepare_run(tmp_path / "a", cfg, RunInputs(blank, None, None, None, None))
    one = ImageSet(images.ids[:1], images.images[:1], images.paths[:1])
    with pytest.raises(InvalidInputError, match="16 tiles of 64x64"):
        prepare_run(tmp_path / "b", cfg.replace(psm_crop=64), RunInputs(one, None, None, None,
                                                                          None))
    with pytest.raises(InvalidInputError, match="smaller than psm_crop=200"):
        prepare_run(tmp_path / "c", cfg.replace(psm_crop=200),
                    RunInputs(images, None, None, None, None))
    with pytest.raises(InvalidConfigError, match="fusion_beta"):
        cfg.replace(fusion_beta=-1.0)
    assert not any(tmp_path.iterdir())


def test_label_free_fields_stay_out_of_partial_hashes():
    base = Config()
    assert base.replace(fusion_beta=4.0).config_hash == base.config_hash
    lf = Config(mode="label-free")
    assert lf.replace(fusion_beta=4.0).config_hash != lf.config_hash


def test_tune_space_of_label_free_fields_needs_that_mode():
    from pseudocell.tune_spaces import SPACES, check_space

    space = {"fusion_beta": {"type": "uniform", "low": 1.0, "high": 4.0}}
    assert check_space(space, mode="label-free") == space
    with pytest.raises(InvalidConfigError, match="'fusion_beta' is a setting of mode "
                                                 "'label-free'"):
        check_space(space, mode="partial")
    check_space(SPACES["label-free"], mode="label-free")


# slow (42 s): the fast tier runs the partial mode on Ray, through the same executor and
# actor code as this mode's stages;
# its sharded bootstrap_points runs as Ray runs it (plan, shards, merge) in a fast test above
@pytest.mark.slow
@pytest.mark.ray
def test_ray_executor_gives_the_local_bytes(tmp_path, small_crops, ray_address):
    """The label-free stages (training, sharded bootstrap over a pool of 2) and the final
    detector on Ray give the local executor's bytes (rounds=0 keeps it short; the
    partial loop's rounds are proven in tests/orchestrator/test_ray_executor.py)."""
    from pseudocell.orchestrator.ray_executor import RayExecutor, RayOptions

    images, gt = small_crops
    cfg = lf_config(rounds=0)
    local = prepare_run(tmp_path / "local", cfg, RunInputs(images, None, gt, images, gt))
    run_loop(local, cfg, LocalExecutor())
    lay2 = prepare_run(tmp_path / "ray", cfg, RunInputs(images, None, gt, images, gt))
    with RayExecutor(RayOptions(address=ray_address, train="actor", pool_size=2,
                                shards_per_actor=2)) as ex:
        run_loop(lay2, cfg, ex)
    assert output_digests(lay2, cfg) == output_digests(local, cfg)
