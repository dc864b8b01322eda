"""Human in the loop on real crops: suggest → a (simulated) person edits the files →
ingest → one more round that keeps every finished stage and trains on the answers."""
from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import crop_inputs, write_run_inputs

from pseudocell.bench.annotator import annotate_review
from pseudocell.cli import app
from pseudocell.config import dump_toml
from pseudocell.errors import InvalidInputError
from pseudocell.human.files import read_manifest_csv, read_napari_points
from pseudocell.human.ingest import ingest
from pseudocell.human.suggest import SuggestOptions, suggest
from pseudocell.orchestrator.executors import LocalExecutor
from pseudocell.orchestrator.run import prepare_run, run_loop
from pseudocell.results.reader import RunResults
from pseudocell.stages.base import Prepared
from pseudocell.stages.loop import detector_data
from pseudocell.storage import tables

OPTS = SuggestOptions(budget=3, tile=64, per_image=1, audit=0.34)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, small_crops, tiny_cfg):
    """A finished one-round run of the crops (copied per test)."""
    out = tmp_path_factory.mktemp("human") / "run"
    layout = prepare_run(out, tiny_cfg, crop_inputs(small_crops))
    run_loop(layout, tiny_cfg, LocalExecutor())
    return out


@pytest.fixture
def run(tmp_path, finished_run):
    dst = tmp_path / "run"
    shutil.copytree(finished_run, dst)
    return dst


def test_suggest_writes_a_review_folder_of_the_latest_detector(run, small_crops):
    folder, tiles = suggest(run, OPTS)
    assert folder == run / "review" / "round_001"
    assert len(tiles) == 3 and len({t.image for t in tiles}) == 3   # one per image
    assert [t.reason for t in tiles][-1] == "audit"
    assert all(t.score >= tiles[1].score for t in tiles[:1])
    det = RunResults.open(run).detections(1)
    for t in tiles:
        png = folder / "tiles" / f"{t.tile_id}.png"
        assert png.exists()
        yx, st = read_napari_points(folder / "points" / f"{t.tile_id}.csv", t)
        mine = det["image_id"].astype(str) == t.image
        inside = ((det["y"] >= t.y0) & (det["y"] < t.y0 + t.h) & (det["x"] >= t.x0)
                  & (det["x"] < t.x0 + t.w) & mine)
        assert len(yx) == int(inside.sum()) and set(st) <= {"proposed"}
        gj = json.loads((folder / "points" / f"{t.tile_id}.geojson").read_text())
        assert len(gj["features"]) == len(yx)
        assert all(f["properties"]["classification"]["name"] == "proposed" for f in gj["features"])
    with pytest.raises(InvalidInputError, match="already holds a review"):
        suggest(run, OPTS)


def test_ingest_then_one_more_round_keeps_finished_stages(run, small_crops, tiny_cfg):
    folder, tiles = suggest(run, OPTS)
    answers = annotate_review(folder, small_crops[1], radius=5.0)
    rep = ingest(run, folder)
    assert rep.counts == {"human_added": answers["added"],
                          "human_confirmed": answers["confirmed"],
                          "human_rejected": answers["rejected"]}
    assert rep.n_reviewed == 3 and len(rep.stores) == 1
    store = run / "human" / "after_001"
    before = (store / "_manifest.json").read_bytes()
    assert ingest(run, folder).stores == []                 # idempotent: nothing rewritten
    assert (store / "_manifest.json").read_bytes() == before

    cfg = tiny_cfg.replace(rounds=2)
    (run / "config.toml").write_text(dump_toml(cfg))
    events = []
    layout = RunResults.open(run).layout
    run_loop(layout, cfg, LocalExecutor(),
             progress=lambda e: events.append((e.round, e.stage, e.status))
             if e.status in ("done", "skipped") else None)
    done = {(r, s) for r, s, st in events if st == "done"}
    assert all(st == "skipped" for r, s, st in events if r == 0)
    assert (1, "train_detector") not in done and (1, "predict") not in done
    assert {(1, "extract_patches"), (2, "human_labels"), (2, "train_detector")} <= done
    res = RunResults.open(run)
    labels = res.training_labels(2)
    kinds = labels["kind"].astype(str)
    assert int((kinds == "human_added").sum()) == answers["added"]
    assert int((kinds == "human_rejected").sum()) == answers["rejected"]
    # no machine label is left inside a reviewed tile
    for t in tiles:
        inside = ((labels["image_id"].astype(str) == t.image) & (labels["y"] >= t.y0)
                  & (labels["y"] < t.y0 + t.h) & (labels["x"] >= t.x0)
                  & (labels["x"] < t.x0 + t.w))
        assert set(kinds[inside]) <= {"annotated", "human_added", "human_confirmed",
                                      "human_rejected"}
    row = res.round_row(2)
    assert row["human_added"] == answers["added"] and row["reviewed_tiles"] == 3
    audit = [t for t in tiles if t.reason == "audit"]
    assert audit, "OPTS draws an audit tile"
    n_points = sum(rep.audit.values())  # tp + fp + fn on the reviewed audit tiles
    assert row["audit_points"] == n_points
    # an F1 only where the audit tiles held something to judge (0/0/0 is not a score)
    assert ("audit_f1" in row) == (n_points > 0)


def test_reviewed_tiles_open_the_whole_loss_mask(run, small_crops, tiny_cfg):
    folder, tiles = suggest(run, OPTS)
    annotate_review(folder, small_crops[1], radius=5.0)
    ingest(run, folder)
    res = RunResults.open(run)
    tt = tables.read_table(str(run / "human" / "after_001" / "tiles.parquet"))
    sc = res.scale_info()
    images = res.store_uri(0, Prepared("scale", "images"))
    labels = res.labels(1)
    _, _, closed, *_ = detector_data(images, sc, labels, tiny_cfg)
    _, _, opened, *_ = detector_data(images, sc, labels, tiny_cfg, reviewed=tt)
    ids = res.image_ids
    for t in tiles:
        k = ids.index(t.image)
        (a, b), (c, d) = sc.to_scaled(t.image, np.array([[t.y0, t.x0], [t.y0 + t.h, t.x0 + t.w]]))
        win = opened[k][int(a):int(c), int(b):int(d)]
        assert win.all() and not closed[k][int(a):int(c), int(b):int(d)].all()


def test_ingest_refuses_bad_reviews_and_writes_nothing(run, small_crops, caplog):
    folder, tiles = suggest(run, OPTS)
    annotate_review(folder, small_crops[1], radius=5.0)
    t = tiles[0]
    csv = folder / "points" / f"{t.tile_id}.csv"
    good = csv.read_text()

    csv.write_text(good + f"99,{t.h + 5},1.0,added\n")          # outside its tile
    with pytest.raises(InvalidInputError, match="outside tile"):
        ingest(run, folder)
    csv.write_text(good + "99,1.0,1.0,maybe\n")                   # unknown status
    with pytest.raises(InvalidInputError, match="status 'maybe'"):
        ingest(run, folder)
    csv.write_text(good)
    man = folder / "manifest.csv"
    text = man.read_text()
    man.write_text(text + "ghost_y0_x0,001crop,0,0,64,64,1,uncertain,x,yes\n")
    with pytest.raises(InvalidInputError, match="ghost_y0_x0"):
        ingest(run, folder)
    man.write_text(text)
    rec = json.loads((folder / "review.json").read_text())
    (folder / "review.json").write_text(json.dumps({**rec, "run_id": "0" * 16}))
    with pytest.raises(InvalidInputError, match="another run"):
        ingest(run, folder)
    assert not (run / "human").exists()                          # nothing written

    (folder / "review.json").write_text(json.dumps({**rec, "model_run_id": "f" * 16}))
    with caplog.at_level(logging.WARNING):
        ingest(run, folder)
    assert "another detector" in caplog.text


def test_proposed_points_count_only_in_reviewed_tiles(run):
    folder, tiles = suggest(run, OPTS)
    man = folder / "manifest.csv"
    lines = man.read_text().splitlines()
    lines[1] += "yes"                                            # only the first tile
    man.write_text("\n".join(lines) + "\n")
    rep = ingest(run, folder)
    first = read_manifest_csv(man)[0]
    n_first = len(read_napari_points(folder / "points" / f"{first.tile_id}.csv", first)[0])
    assert rep.n_reviewed == 1
    assert rep.counts == {"human_added": 0, "human_confirmed": n_first, "human_rejected": 0}


def test_cli_suggest_edit_ingest_resume(tmp_path, small_crops, tiny_cfg):
    runner = CliRunner()
    img_dir = write_run_inputs(tmp_path, small_crops)
    (tmp_path / "cfg.toml").write_text(dump_toml(tiny_cfg))
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", "--images", str(img_dir), "--points",
                              str(tmp_path / "points.csv"), "--out", str(out), "--config",
                              str(tmp_path / "cfg.toml"), "--no-track"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["suggest", str(out), "--budget", "2", "--tile", "64"])
    assert res.exit_code == 0, res.output
    folder = out / "review" / "round_001"
    t = read_manifest_csv(folder / "manifest.csv")[0]
    # the person: rejects everything proposed in the first tile, adds one cell, marks it
    csv = folder / "points" / f"{t.tile_id}.csv"
    rows = csv.read_text().splitlines()
    rows = [rows[0]] + [r.rsplit(",", 1)[0] + ",rejected" for r in rows[1:]]
    rows.append(f"{len(rows)},10.0,12.0,added")
    csv.write_text("\n".join(rows) + "\n")
    man = folder / "manifest.csv"
    lines = man.read_text().splitlines()
    lines[1] += "yes"
    man.write_text("\n".join(lines) + "\n")
    res = runner.invoke(app, ["ingest", str(out), "review/round_001"])
    assert res.exit_code == 0, res.output
    assert "1 added" in res.output and f"{len(rows) - 2} rejected" in res.output
    res = runner.invoke(app, ["resume", str(out), "--rounds", "+1", "--no-track"])
    assert res.exit_code == 0, res.output
    kinds = RunResults.open(out).training_labels(2)["kind"].astype(str)
    assert (kinds == "human_added").sum() == 1
    res = runner.invoke(app, ["resume", str(out), "--rounds", "1"])
    assert res.exit_code != 0 and "cannot lose" in res.output
