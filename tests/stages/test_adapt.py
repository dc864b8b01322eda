"""The adapt modes on real Hoechst crops (issue 17): a detector trained on U2OS nuclei
(source, every cell annotated) adapts to NIH3T3 nuclei (target, unlabeled): the
source-only round 0, the uncertainty and curriculum labels, the P-ranker variant, the
baselines' training options, resume, the Ray executor's bytes and the refusals of bad
input."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED, output_digests, require_data
from pseudocell.config import Config
from pseudocell.errors import InvalidConfigError, InvalidInputError
from pseudocell.orchestrator.executors import LocalExecutor
from pseudocell.orchestrator.run import prepare_run, run_loop
from pseudocell.results.reader import RunResults
from pseudocell.storage import tables
from pseudocell.storage.layout import RunLayout, source_id
from pseudocell.validation import ImageSet, RunInputs

COELHO = SHARED / "coelho-u2os-nih3t3"
#: (folder, images) of the crops: 3 U2OS source images, 2 NIH3T3 target, 1 held out.
SOURCE = ("u2os_gnf", ("gnf_dna0", "gnf_dna1", "gnf_dna10"))
TARGET = ("nih3t3_ic100", ("ic100_dna0", "ic100_dna13"))
HELDOUT = ("nih3t3_ic100", ("ic100_dna14",))
CROP = (slice(0, 320), slice(0, 384))


def _crops(folder: str, names: tuple[str, ...]) -> tuple[ImageSet, dict]:
    from pseudocell.data.images import read_raw
    from pseudocell.validation import check_image

    base = require_data(COELHO / folder / "points.csv").parent
    ims, ids, paths = [], [], []
    for n in names:
        raw = read_raw(base / "images" / f"{n}.png")[CROP]
        ims.append(check_image(raw, name=n)), ids.append(n), paths.append(str(base / n))
    rows = []
    with open(base / "points.csv") as f:
        for r in csv.DictReader(f):
            i, y, x = Path(r["image"]).stem, float(r["y"]), float(r["x"])
            if i in names and y < CROP[0].stop - 0.5 and x < CROP[1].stop - 0.5:
                rows.append((i, y, x))
    gt = {"image_id": np.array([r[0] for r in rows], object),
          "y": np.array([r[1] for r in rows]), "x": np.array([r[2] for r in rows])}
    return ImageSet(ids, ims, paths, (1,) * len(ids)), gt


@pytest.fixture(scope="module")
def domains():
    return _crops(*SOURCE), _crops(*TARGET), _crops(*HELDOUT)


def adapt_config(**kw) -> Config:
    from conftest import tiny_config

    base = dict(mode="adapt", rounds=2, peak_threshold=None, radius=20.0, adapt_negatives=1.0,
                adapt_schedule=(0.3, 0.6))
    return tiny_config().replace(**{**base, **kw})


def _inputs(domains) -> RunInputs:
    (src, sgt), (tgt, tgt_gt), (ev, ev_gt) = domains
    return RunInputs(tgt, None, tgt_gt, ev, ev_gt, src, sgt)


@pytest.fixture(scope="module")
def adapt_run(tmp_path_factory, domains):
    cfg = adapt_config()
    layout = prepare_run(tmp_path_factory.mktemp("adapt") / "run", cfg, _inputs(domains))
    metrics = run_loop(layout, cfg, LocalExecutor())
    return layout, cfg, metrics


def test_no_adapt_stage_reads_a_field_it_ignores(tmp_path, domains):
    from conftest import RecordingExecutor, assert_ignored_fields_unread

    for mode in ("adapt", "adapt-ranker"):
        cfg = adapt_config(rounds=1, mode=mode)
        layout = prepare_run(tmp_path / mode, cfg, _inputs(domains))
        ex = RecordingExecutor()
        run_loop(layout, cfg, ex)
        assert_ignored_fields_unread(ex, layout, cfg)
        assert "adapt_schedule" in ex.reads[(0, "curriculum")]  # the proxy sees reads


def test_each_domain_gets_its_own_scale(adapt_run, domains):
    import json

    layout, cfg, metrics = adapt_run
    info = json.loads((Path(layout.stage_dir(0, "scale")) / "scale.json").read_text())
    # U2OS nuclei ~ 51 px, NIH3T3 ~ 39 px (README: 55 and 44 at the segmentation masks)
    assert 40 < info["source_diameter"] < 62
    assert 30 < info["diameter"] < 48 and info["diameter"] < info["source_diameter"]
    assert info["source"] == "estimated without labels"
    (src, _), _, _ = domains
    assert set(info["image_scales"]) == {source_id(i) for i in src.ids}
    assert metrics["rounds"][0]["cell_diameter"] == pytest.approx(info["diameter"])


def test_curriculum_admits_the_scheduled_share_as_labels(adapt_run):
    layout, cfg, metrics = adapt_run
    res = RunResults(layout, cfg)
    rows = metrics["rounds"]
    assert [r["round"] for r in rows] == [0, 1, 2]
    for rnd, q in ((0, 0.3), (1, 0.6)):
        labels = res.training_labels(rnd + 1)  # the labels round rnd + 1 trains on
        kinds = labels["kind"].astype(str)
        scored = tables.read_table(str(Path(layout.stage_dir(rnd, "uncertainty"))
                                       / "scored.parquet"))
        n_pos = int((kinds == "pseudo_pos").sum())
        assert n_pos + int((kinds == "uncertain").sum()) == len(scored["y"])
        assert (labels["round"] == rnd).all() and "annotated" not in kinds
        # per image: the scheduled share, the most confident peaks
        li, si = labels["image_id"].astype(str), scored["image_id"].astype(str)
        for i in set(si):
            n_i = int((si == i).sum())
            pos_conf = labels["score"][(li == i) & (kinds == "pseudo_pos")]
            unsure = labels["score"][(li == i) & (kinds == "uncertain")]
            assert len(pos_conf) == int(np.floor(q * n_i + 0.5))
            assert not len(unsure) or pos_conf.min() >= unsure.max()
        assert rows[rnd]["admitted_fraction"] == pytest.approx(n_pos / len(scored["y"]))
        assert rows[rnd]["n_admitted"] == n_pos
        # negatives: at most adapt_negatives per admitted peak of their image
        assert (kinds == "pseudo_neg").sum() <= cfg.adapt_negatives * n_pos
    # round 0 trains on the source alone: no target label
    assert rows[0]["labels_pos"] == 0 and rows[1]["labels_pos"] > 0
    # evaluation: target F1 in every round and the precision of the admitted labels
    assert all("heldout@20/f1" in r and "train@20/f1" in r for r in rows)
    from pseudocell.core.metrics import match_points
    from pseudocell.data.points import points_by_image

    tgt_gt = tables.read_table(str(Path(layout.inputs) / "gt.parquet"))
    labels = res.training_labels(1)
    ids = sorted(set(labels["image_id"].astype(str)))
    pos = points_by_image(labels, ids, ("pseudo_pos",))
    g = points_by_image(tgt_gt, ids)
    tp = sum(match_points(pos[i], g[i], cfg.radius).tp for i in ids)
    assert rows[0]["pseudo_pos_precision"] == pytest.approx(
        tp / sum(len(p) for p in pos.values()))


def test_rerun_of_uncertainty_gives_the_same_bytes(adapt_run, tmp_path):
    layout, cfg, _ = adapt_run
    ref = output_digests(layout, cfg)
    copy = tmp_path / "copy"
    shutil.copytree(layout.root, copy)
    for p in copy.glob("round_00[12]"):
        shutil.rmtree(p)
    for stage in ("uncertainty", "curriculum", "evaluate"):
        shutil.rmtree(copy / "round_000" / stage)
    run_loop(RunLayout(str(copy)), cfg, LocalExecutor())
    assert output_digests(RunLayout(str(copy)), cfg) == ref


def test_ranker_variant_adds_pu_selections(tmp_path, domains):
    cfg = adapt_config(rounds=1).replace(mode="adapt-ranker")
    layout = prepare_run(tmp_path / "run", cfg, _inputs(domains))
    metrics = run_loop(layout, cfg, LocalExecutor())
    res = RunResults(layout, cfg)
    labels = res.training_labels(1)
    admitted = tables.read_table(str(Path(layout.stage_dir(0, "curriculum")) / "points.parquet"))
    kinds = labels["kind"].astype(str)
    row = metrics["rounds"][0]
    n_adm = int((admitted["kind"].astype(str) == "pseudo_pos").sum())
    assert (kinds == "pseudo_pos").sum() == n_adm + row["n_pseudo_pos"]
    assert Path(layout.stage_dir(0, "train_pu")).is_dir()


@pytest.mark.parametrize("training", ["augment", "dann"])
def test_baselines_train_the_source_detector_otherwise(tmp_path, domains, adapt_run, training):
    layout0, cfg0, _ = adapt_run
    cfg = adapt_config(rounds=0, source_training=training)
    layout = prepare_run(tmp_path / "run", cfg, _inputs(domains))
    metrics = run_loop(layout, cfg, LocalExecutor())
    a = Path(layout.stage_dir(0, "train_detector")) / "model.pt"
    b = Path(layout0.stage_dir(0, "train_detector")) / "model.pt"
    assert a.read_bytes() != b.read_bytes()
    if training == "dann":
        assert 0.0 <= metrics["rounds"][0]["domain_accuracy"] <= 1.0
    else:
        assert "domain_accuracy" not in metrics["rounds"][0]


@pytest.mark.parametrize("rnd,same_as", [(0, "augment"), (1, "plain")])
def test_augment_round0_jitters_round_0_only(adapt_run, tmp_path, rnd, same_as):
    """On a finished run's own inputs of a round, ``augment-round0`` trains round 0's
    detector as ``augment`` does and round 1's as ``plain`` does, byte for byte (and
    ``augment`` trains otherwise than ``plain``:
    test_baselines_train_the_source_detector_otherwise)."""
    from pseudocell.stages.adapt import train_adapt_detector
    from pseudocell.stages.base import StageInputs
    from pseudocell.storage.manifest import read_manifest

    layout, cfg, _ = adapt_run
    m = read_manifest(layout.manifest(rnd, "train_detector"))
    models = {}
    for training in (same_as, "augment-round0"):
        inp = StageInputs(out_dir=str(tmp_path / training), round=rnd, seed=m["seed"],
                          uris={k: layout.uri(v["uri"]) for k, v in m["inputs"].items()})
        Path(inp.out_dir).mkdir()
        out = train_adapt_detector(inp, cfg.replace(source_training=training))
        models[training] = Path(out.uris["model"]).read_bytes()
    assert models["augment-round0"] == models[same_as]


def test_predict_shards_of_both_domains_in_any_order_give_the_stage_bytes(adapt_run, tmp_path):
    """How the Ray executor runs the adapt modes' predict (target, held-out and source
    images: plan, shards, merge), without Ray."""
    from conftest import assert_shards_give_the_stage_bytes
    from pseudocell.stages.modes import get_mode

    layout, cfg, _ = adapt_run
    spec = next(s for s in get_mode(cfg.mode).round_stages if s.name == "predict")
    # 2 target + 1 held-out + 3 source images, one shard each
    assert assert_shards_give_the_stage_bytes(layout, spec, cfg, tmp_path, rnd=1) == 6


def test_adapt_fields_stay_out_of_other_hashes():
    assert Config().config_hash == Config(grl_lambda=3.0, adapt_schedule=(0.5,)).config_hash
    assert Config(mode="label-free").config_hash == \
        Config(mode="label-free", source_training="dann").config_hash
    a = Config(mode="adapt")
    assert a.config_hash != a.replace(grl_lambda=0.5).config_hash
    assert a.replace(mode="adapt-ranker").config_hash != \
        a.replace(mode="adapt-ranker", uncertainty="mc-dropout",
                  detector_dropout=0.2).config_hash


@pytest.mark.parametrize("bad,match", [
    ({"grl_lambda": -0.1}, "grl_lambda"),
    ({"adapt_schedule": (0.4, 0.2)}, "adapt_schedule"),
    ({"adapt_schedule": (0.2, 0.2)}, "adapt_schedule"),
    ({"adapt_schedule": (0.5, 1.5)}, "adapt_schedule"),
    ({"uncertainty": "mc-dropout"}, "detector_dropout"),
    ({"mc_passes": 9}, "mc_passes"),
    ({"grl_level": 4}, "grl_level"),
    ({"source_training": "both"}, "source_training"),
])
def test_bad_settings_are_refused(bad, match):
    with pytest.raises(InvalidConfigError, match=match):
        Config(mode="adapt", **bad)


def test_bad_inputs_are_refused_before_anything_is_written(tmp_path, domains):
    (src, sgt), (tgt, tgt_gt), (ev, ev_gt) = domains
    cfg = adapt_config()

    def refused(inputs, match):
        with pytest.raises(InvalidInputError, match=match):
            prepare_run(tmp_path / "run", cfg, inputs)
        assert not (tmp_path / "run").exists()

    # the same images (here renamed) as source and target
    renamed = ImageSet([f"x{i}" for i in src.ids], src.images, [p + "x" for p in src.paths],
                       src.channels)
    refused(RunInputs(renamed, None, None, None, None, src, sgt), "share")
    # no source at all, or no source points
    refused(RunInputs(tgt, None, None, None, None), "source")
    empty = {k: v[:0] for k, v in sgt.items()}
    refused(RunInputs(tgt, None, None, None, None, src, empty), "no points")
    # grey source, RGB target
    rgb = ImageSet(tgt.ids, tgt.images, tgt.paths, (3,) * len(tgt.ids))
    refused(RunInputs(rgb, None, None, None, None, src, sgt), "channels")
    # held-out images that are target training images
    refused(RunInputs(tgt, None, None, tgt, tgt_gt, src, sgt), "share")


@pytest.mark.parametrize("rounds, warned", [(0, False), (1, True), (2, False), (5, False)])
def test_a_curriculum_cut_short_by_rounds_is_warned(domains, caplog, rounds, warned):
    from pseudocell.validation import check_adapt_inputs

    caplog.set_level("WARNING", logger="pseudocell.validation")
    # adapt_schedule (0.3, 0.6): one round admits 0.3 and the last detector never sees 0.6
    check_adapt_inputs(adapt_config(rounds=rounds), _inputs(domains))
    said = [r.getMessage() for r in caplog.records if "curriculum stops" in r.getMessage()]
    assert len(said) == int(warned)
    if warned:
        assert "before adapt_schedule's 0.6" in said[0] and "trains on 0.3" in said[0]
        assert "--rounds 2 or more" in said[0]


def test_cli_refuses_a_source_without_points_and_an_empty_target(tmp_path, domains):
    from typer.testing import CliRunner

    from pseudocell.cli.app import app

    (src, _), _, _ = domains
    empty = tmp_path / "empty"
    empty.mkdir()
    r = CliRunner().invoke(app, ["run", "--mode", "adapt", "--images", str(empty),
                                 "--source-images", str(Path(src.paths[0]).parent / "images"),
                                 "--out", str(tmp_path / "out")])
    assert r.exit_code != 0 and "--source-points" in r.output
    r = CliRunner().invoke(app, ["run", "--mode", "adapt", "--images", str(empty),
                                 "--source-images", str(Path(src.paths[0]).parent / "images"),
                                 "--source-points",
                                 str(Path(src.paths[0]).parent / "points.csv"),
                                 "--out", str(tmp_path / "out")])
    assert r.exit_code != 0 and "holds no image" in r.output
    assert not (tmp_path / "out").exists()


# slow (29 s): the fast tier runs the partial mode on Ray, through the same executor and
# actor code as this mode's stages;
# its sharded predict runs as Ray runs it (plan, shards, merge) in a fast test above
@pytest.mark.slow
@pytest.mark.ray
def test_ray_executor_gives_the_local_bytes(tmp_path, domains, ray_address):
    """The adapt stages (scale, detector with DANN, predict shards, uncertainty,
    curriculum) on Ray give the local executor's bytes (one round keeps it short)."""
    from pseudocell.orchestrator.ray_executor import RayExecutor, RayOptions

    cfg = adapt_config(rounds=1, source_training="dann")
    lay1 = prepare_run(tmp_path / "local", cfg, _inputs(domains))
    run_loop(lay1, cfg, LocalExecutor())
    lay2 = prepare_run(tmp_path / "ray", cfg, _inputs(domains))
    with RayExecutor(RayOptions(address=ray_address, train="actor", pool_size=2,
                                shards_per_actor=2)) as ex:
        run_loop(lay2, cfg, ex)
    assert output_digests(lay1, cfg) == output_digests(lay2, cfg)


def test_tune_spaces_of_adapt_fields_need_an_adapt_mode():
    from pseudocell.tune_spaces.spaces import check_space, describe

    for mode in ("adapt", "adapt-ranker"):
        assert check_space(describe("adapt"), mode=mode)
        assert check_space(describe("adapt-dann"), mode=mode)
    with pytest.raises(InvalidConfigError, match="'grl_lambda' is a setting of mode 'adapt'"):
        check_space(describe("adapt-dann"), mode="partial")
