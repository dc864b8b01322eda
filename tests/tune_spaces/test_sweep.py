"""`pseudocell tune`: a tiny real sweep, its best config, MLflow record, and resume after
the driver is SIGKILLed; overlapping validation and test images are refused."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import _descendants, kill_pids, save_png, write_points_file
from pseudocell.cli import app
from pseudocell.config import dump_toml, load_config
from pseudocell.data.points import hide_points
from pseudocell.tune_spaces.sweep import OBJECTIVE, SweepOptions, prepare_sweep, run_sweep
from pseudocell.storage.layout import RunLayout
from pseudocell.storage.manifest import read_manifest

runner = CliRunner()
SPACE = {"alpha": {"type": "choice", "values": [0.05, 0.2]},
         "p": {"type": "uniform", "low": 2.0, "high": 8.0}}


def _write(tmp: Path, small_crops) -> dict[str, Path]:
    """Crops 001/003 train (30 % of points), 005 validates (full ground truth)."""
    images, gt = small_crops
    paths = {k: tmp / k for k in ("train", "val")}
    for d in paths.values():
        d.mkdir()
    for i, im in zip(images.ids, images.images):
        save_png((paths["val"] if i == "005crop" else paths["train"]) / f"{i}.png", im)
    ids = gt["image_id"].astype(str)
    train = {k: v[ids != "005crop"] for k, v in gt.items()}
    write_points_file(tmp / "points.csv", hide_points(train, 0.3, seed=0))
    write_points_file(tmp / "val.csv", {k: v[ids == "005crop"] for k, v in gt.items()})
    (tmp / "space.toml").write_text(
        '[alpha]\ntype = "choice"\nvalues = [0.05, 0.2]\n'
        '[p]\ntype = "uniform"\nlow = 2.0\nhigh = 8.0\n')
    return {**paths, "points": tmp / "points.csv", "val_gt": tmp / "val.csv",
            "space": tmp / "space.toml"}


def _tune_args(files, out, cfg_file, samples=2):
    return ["tune", "--images", str(files["train"]), "--points", str(files["points"]),
            "--val-images", str(files["val"]), "--val-gt", str(files["val_gt"]),
            "--config", str(cfg_file), "--space", str(files["space"]), "--samples",
            str(samples), "--out", str(out)]


def test_the_base_config_is_the_first_trial_when_the_space_holds_it():
    from pseudocell.config import Config
    from pseudocell.tune_spaces.sweep import base_point
    from pseudocell.tune_spaces import describe

    base = Config()
    assert base_point(base, describe("default")) == {"alpha": 0.05, "beta": 0.05, "p": 4.0,
                                                     "lam": 0.1}
    assert base_point(base.replace(peak_threshold=0.3), describe("wide"))["rounds"] == 2
    assert base_point(base, describe("wide")) is None  # a calibrated threshold: no point
    assert base_point(base.replace(alpha=0.5), describe("default")) is None  # outside
    assert base_point(base, SPACE) == {"alpha": 0.05, "p": 4.0}
    assert base_point(base.replace(alpha=0.1), SPACE) is None  # not one of the choices


def test_asha_starts_at_round_1_when_the_trials_share_round_0():
    from pseudocell.config import Config
    from pseudocell.tune_spaces import describe
    from pseudocell.tune_spaces.sweep import first_rung, round0_shared

    base = Config()
    # selection settings: round 0's detector (hence its validation F1) is every trial's
    assert round0_shared(base, describe("default"))
    assert first_rung(base, SweepOptions(space=describe("default"))) == 2
    assert first_rung(base, SweepOptions(space=describe("default"), share=False)) == 1
    assert round0_shared(base, {"rounds": {"type": "randint", "low": 1, "high": 3}})
    # the detector's target, the PSM seeds, the matching radius: round 0 differs
    assert not round0_shared(base, describe("wide"))
    assert not round0_shared(base.replace(mode="label-free"), describe("label-free"))
    assert not round0_shared(base, {"radius": {"type": "uniform", "low": 5, "high": 20}})
    # the adapt curriculum starts after round 0's source-only detector
    assert round0_shared(base.replace(mode="adapt"), describe("adapt"))
    assert not round0_shared(base.replace(mode="adapt"), describe("adapt-dann"))


def test_overlapping_validation_and_test_images_are_refused(tmp_path, small_crops, tiny_cfg):
    files = _write(tmp_path, small_crops)
    (tmp_path / "cfg.toml").write_text(dump_toml(tiny_cfg))
    test_dir = tmp_path / "test"
    test_dir.mkdir()
    # the same pixels under another name
    (test_dir / "renamed.png").write_bytes((files["val"] / "005crop.png").read_bytes())
    res = runner.invoke(app, _tune_args(files, tmp_path / "sweep", tmp_path / "cfg.toml")
                        + ["--test-images", str(test_dir)])
    assert res.exit_code == 1
    assert "--val-images and --test-images share 1 image(s) (005crop = renamed)" in res.stderr
    assert not (tmp_path / "sweep").exists()


@pytest.mark.ray
@pytest.mark.slow
def test_two_trial_sweep_writes_a_best_config_that_run_accepts(tmp_path, small_crops,
                                                               tiny_cfg, ray_address):
    from mlflow.tracking import MlflowClient

    from pseudocell.validation import RunInputs
    from pseudocell.validation import load_image_folder, load_points

    files = _write(tmp_path, small_crops)
    imgs = load_image_folder(files["train"])
    vimgs = load_image_folder(files["val"])
    inputs = RunInputs(imgs, load_points(files["points"], imgs), None, vimgs,
                       load_points(files["val_gt"], vimgs))
    options = SweepOptions(space=SPACE, num_samples=2, trial_cpus=1, max_concurrent=2)
    sweep = prepare_sweep(tmp_path / "sweep", tiny_cfg, inputs, options)
    result = run_sweep(sweep, address=ray_address)

    rows = result["trials"]
    assert len(rows) == 2 and all(r["status"] != "error" for r in rows)
    assert [r["trial_id"] for r in rows] == \
        [r["trial_id"] for r in csv.DictReader(open(sweep / "trials.csv"))]
    best = result["best"]
    assert best[OBJECTIVE] == max(r[OBJECTIVE] for r in rows if r["status"] == "finished")
    # the best trial's objective is its final detector's validation F1 in its own run
    metrics = json.loads((sweep / "trials" / best["trial_id"] / "final" / "metrics.json")
                         .read_text())
    assert best[OBJECTIVE] == pytest.approx(metrics["rounds"][-1]["heldout@15/f1"])
    cfg = load_config(sweep / "best.toml")
    assert cfg == tiny_cfg.replace(alpha=best["alpha"], p=best["p"])

    # the two trials (run side by side) computed round 0's detector once: one trial's
    # manifest says it came from the other's, and both hold the same bytes
    found = [read_manifest(str(sweep / "trials" / r["trial_id"] / "round_000" / stage
                                / "_manifest.json"))
             for r in rows for stage in ("train_detector", "train_pu")]
    assert sum("shared_from" in m for m in found) == 2
    for stage in (0, 1):
        a, b = found[stage], found[stage + 2]
        assert a["outputs"]["model"]["sha256"] == b["outputs"]["model"]["sha256"]
    assert not list((sweep / "shared").glob("*.lock"))

    # MLflow: the sweep's run, one nested child per trial, none left RUNNING
    client = MlflowClient(f"sqlite:///{sweep / 'mlflow.db'}")
    exp = client.get_experiment_by_name("pseudocell-tune")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    for c in children:
        row = next(r for r in rows if r["trial_id"] == c.info.run_name)
        assert c.info.status == ("FINISHED" if row["status"] == "finished" else "KILLED")
        assert float(c.data.params["alpha"]) == row["alpha"]
        steps = [m.step for m in client.get_metric_history(c.info.run_id, "heldout_15px/f1")]
        assert steps == list(range(row["rounds_reported"]))
    assert parents[0].data.metrics[f"best_{OBJECTIVE}"] == pytest.approx(best[OBJECTIVE])

    # the best config runs as is
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", "--images", str(files["train"]), "--points",
                              str(files["points"]), "--out", str(out), "--config",
                              str(sweep / "best.toml"), "--no-track"])
    assert res.exit_code == 0, res.output
    assert load_config(out / "config.toml") == cfg


@pytest.mark.ray
@pytest.mark.slow
def test_a_trial_stopped_at_its_last_report_has_finished(tmp_path, small_crops, tiny_cfg,
                                                          ray_address, monkeypatch):
    """ASHA may stop a trial at a rung that falls on the last round (with 2 rounds
    reported, rung 2). That trial has done all its work: it must count as finished, with
    its final/ written and its MLflow run FINISHED, not KILLED mid-way."""
    import ray.tune.schedulers as schedulers
    from mlflow.tracking import MlflowClient

    from pseudocell.validation import RunInputs
    from pseudocell.validation import load_image_folder, load_points

    class StopAtLastRound(schedulers.FIFOScheduler):
        def on_trial_result(self, tune_controller, trial, result):
            return self.STOP if result["round"] >= tiny_cfg.rounds else self.CONTINUE

    monkeypatch.setattr(schedulers, "ASHAScheduler", lambda **kw: StopAtLastRound())
    files = _write(tmp_path, small_crops)
    imgs, vimgs = load_image_folder(files["train"]), load_image_folder(files["val"])
    inputs = RunInputs(imgs, load_points(files["points"], imgs), None, vimgs,
                       load_points(files["val_gt"], vimgs))
    options = SweepOptions(space=SPACE, num_samples=1, trial_cpus=1)
    sweep = prepare_sweep(tmp_path / "sweep", tiny_cfg, inputs, options)
    result = run_sweep(sweep, address=ray_address)

    (row,) = result["trials"]
    assert row["status"] == "finished" and row["rounds_reported"] == tiny_cfg.rounds + 1
    metrics = json.loads((sweep / "trials" / row["trial_id"] / "final" / "metrics.json")
                         .read_text())
    assert row[OBJECTIVE] == pytest.approx(metrics["rounds"][-1]["heldout@15/f1"])
    client = MlflowClient(f"sqlite:///{sweep / 'mlflow.db'}")
    exp = client.get_experiment_by_name("pseudocell-tune")
    (child,) = [r for r in client.search_runs([exp.experiment_id])
                if "mlflow.parentRunId" in r.data.tags]
    assert child.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(child.info.run_id, "heldout_15px/f1")]
    assert steps == list(range(tiny_cfg.rounds + 1))


@pytest.mark.ray
@pytest.mark.slow
def test_sweep_killed_after_its_first_trial_resumes_without_rerunning_it(
        tmp_path, small_crops, tiny_cfg, ray_address):
    files = _write(tmp_path, small_crops)
    (tmp_path / "cfg.toml").write_text(dump_toml(tiny_cfg))
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "pseudocell", "--quiet",
           *_tune_args(files, sweep, tmp_path / "cfg.toml"), "--max-concurrent", "1",
           "--scheduler", "fifo", "--address", ray_address]
    # the driver kills itself when Tune starts the second trial: the first has finished
    # (one trial at a time), the second has not begun; Tune saves its state every step
    env = {**os.environ, "PSEUDOCELL_FAULT": "kill_sweep:trial/2", "TUNE_GLOBAL_CHECKPOINT_S": "0"}
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env)
    try:
        log = proc.communicate(timeout=300)[0].decode(errors="replace")
    finally:
        kill_pids(_descendants(proc.pid) | {proc.pid})
    assert proc.returncode == -signal.SIGKILL, log
    done = [p.parents[1] for p in sweep.glob("trials/*/final/metrics.json")]
    assert len(done) == 1, log  # exactly the first trial finished
    first = done[0]
    stamps = {p: p.stat().st_mtime_ns for p in first.rglob("_manifest.json")}

    res = subprocess.run([sys.executable, "-m", "pseudocell", "--quiet", "tune", "--resume",
                          str(sweep), "--address", ray_address],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert {p: p.stat().st_mtime_ns for p in first.rglob("_manifest.json")} == stamps
    rows = list(csv.DictReader(open(sweep / "trials.csv")))
    assert len(rows) == 2 and {r["status"] for r in rows} == {"finished"}
    assert first.name in {r["trial_id"] for r in rows}
    layout = RunLayout(str(first))
    assert read_manifest(layout.manifest(tiny_cfg.rounds, "evaluate")) is not None
    assert (sweep / "best.toml").exists()


def test_ending_the_trials_of_a_copied_sweep_records_into_the_copy_only(tmp_path):
    """A trial's state names the store of the sweep it ran in; the trials of a copied
    sweep are pushed into the copy's store, under the copy's sweep run."""
    import shutil

    from mlflow.tracking import MlflowClient

    from pseudocell.storage.layout import RunLayout
    from pseudocell.tracking import Tracker, default_tracking_uri
    from pseudocell.tune_spaces.sweep import _end_trials

    orig, copy = tmp_path / "sweep", tmp_path / "copy"
    (orig / "trials" / "t1").mkdir(parents=True)
    tr = Tracker(RunLayout(str(orig / "trials" / "t1")),
                 tracking_uri=default_tracking_uri(orig), experiment="tune", light=True)
    tr.metrics("m", {"x": 1.0})
    tr.journal.append({"key": None, "run": "parent", "type": "status", "status": "RUNNING"})
    tr.push()
    assert tr.run_id is not None
    shutil.copytree(orig, copy)
    db = (orig / "mlflow.db").read_bytes()
    sweep = Tracker(RunLayout(str(copy)), tracking_uri=default_tracking_uri(copy),
                    experiment="tune")  # as run_sweep: the sweep's own record first
    parent = sweep._run(sweep._mlflow(), "parent")
    _end_trials(copy, [{"trial_id": "t1", "status": "stopped early"}],
                default_tracking_uri(copy), "tune", parent)
    assert (orig / "mlflow.db").read_bytes() == db
    client = MlflowClient(default_tracking_uri(copy))
    exp = client.get_experiment_by_name("tune")
    runs = {r.data.tags.get("pseudocell_run_dir"): r
            for r in client.search_runs([exp.experiment_id])}
    trial = runs[str(copy / "trials" / "t1")]
    assert trial.info.status == "KILLED" and trial.data.metrics == {"x": 1.0}
    assert trial.data.tags["mlflow.parentRunId"] == parent
