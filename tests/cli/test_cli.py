"""The ``pseudocell`` command line: help texts, version, error reporting, the config that
``run`` hands to the orchestrator, and ``evaluate``'s numbers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import pseudocell
import pseudocell.orchestrator.run as orun
from conftest import BRIGHTFIELD, require_data
from pseudocell.cli import app
from pseudocell.config import Config, dump_toml, load_config

CROP = (slice(100, 196), slice(150, 278))  # 96 x 128 px

runner = CliRunner()
COMMANDS = ("run", "resume", "detect", "evaluate", "demo", "ui", "sync", "export", "tune")



@pytest.fixture
def image_dir(tmp_path) -> Path:
    """96x128 crops of two real bright-field images, saved as PNGs in tmp_path."""
    require_data(BRIGHTFIELD / "001cells.png")
    d = tmp_path / "images"
    d.mkdir()
    for name in ("001cells.png", "002cells.png"):
        with Image.open(BRIGHTFIELD / name) as im:
            Image.fromarray(np.asarray(im)[CROP].copy()).save(d / name)
    return d


@pytest.fixture
def points_csv(tmp_path) -> Path:
    p = tmp_path / "points.csv"
    p.write_text("image,y,x\n001cells.png,10,20\n001cells.png,50,60\n002cells,30,40\n")
    return p


@pytest.fixture
def fake_loop(monkeypatch):
    """Replace the round loop by a recorder; ``run`` imports it from the module at call time."""
    calls: list[dict] = []

    def run_loop(layout, cfg, executor, *, progress=None, tracker=None):
        calls.append({"layout": layout, "cfg": cfg, "executor": executor})
        return {"rounds": []}

    monkeypatch.setattr(orun, "run_loop", run_loop)
    return calls


def _one_error_line(res) -> str:
    assert res.exit_code == 1, res.output
    assert isinstance(res.exception, SystemExit)
    assert "Traceback" not in res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


# -- help and version ----------------------------------------------------------------------

def test_app_help_lists_commands_with_example():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0, res.output
    assert "Example:" in res.stdout
    for cmd in COMMANDS:
        assert cmd in res.stdout


@pytest.mark.parametrize("cmd", COMMANDS)
def test_command_help_shows_an_example(cmd):
    res = runner.invoke(app, [cmd, "--help"])
    assert res.exit_code == 0, res.output
    assert "Example:" in res.stdout
    assert f"pseudocell {cmd}" in res.stdout  # the example uses the command itself


def test_run_help_lists_the_overrides():
    out = runner.invoke(app, ["run", "--help"]).stdout
    for opt in ("--images", "--points", "--out", "--config", "--rounds", "--alpha", "--beta",
                "--p", "--seed", "--force"):
        assert opt in out


def test_version():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0
    assert res.stdout.strip() == f"pseudocell {pseudocell.__version__}"


def test_python_dash_m_help():
    env = {**os.environ, "COLUMNS": "120", "NO_COLOR": "1"}
    proc = subprocess.run([sys.executable, "-m", "pseudocell", "--help"], capture_output=True,
                          text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout and "Example:" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "pseudocell", "--version"], capture_output=True,
                          text=True, timeout=60, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == f"pseudocell {pseudocell.__version__}"


# -- run: errors ---------------------------------------------------------------------------

def test_run_missing_image_folder(tmp_path, points_csv, fake_loop):
    line = _one_error_line(runner.invoke(app, [
        "run", "--images", str(tmp_path / "nope"), "--points", str(points_csv),
        "--out", str(tmp_path / "run")]))
    assert "--images" in line and "nope" in line
    assert not (tmp_path / "run").exists() and fake_loop == []


def test_run_point_outside_image(tmp_path, image_dir, fake_loop):
    pts = tmp_path / "bad.csv"
    pts.write_text("image,y,x\n001cells.png,10,20\n002cells.png,20,500\n")
    line = _one_error_line(runner.invoke(app, [
        "run", "--images", str(image_dir), "--points", str(pts), "--out", str(tmp_path / "run")]))
    assert "--points" in line and "x=500" in line and "002cells" in line and "96x128" in line
    assert not (tmp_path / "run").exists() and fake_loop == []


def test_run_non_numeric_coordinate_names_the_line(tmp_path, image_dir, fake_loop):
    pts = tmp_path / "bad.csv"
    pts.write_text("image,y,x\n001cells.png,10,20\n001cells.png,12,twelve\n")
    line = _one_error_line(runner.invoke(app, [
        "run", "--images", str(image_dir), "--points", str(pts), "--out", str(tmp_path / "run")]))
    assert "bad.csv" in line and "line 3" in line and "'twelve'" in line


def test_run_bad_config_lists_every_bad_field(tmp_path, image_dir, points_csv, fake_loop):
    cfg = tmp_path / "c.toml"
    cfg.write_text("alpha = 0.3\np = -1.0\nradius = 0.0\n")
    line = _one_error_line(runner.invoke(app, [
        "run", "--images", str(image_dir), "--points", str(points_csv), "--out",
        str(tmp_path / "run"), "--config", str(cfg)]))
    assert "'p'" in line and "-1.0" in line and "'radius'" in line
    assert not (tmp_path / "run").exists() and fake_loop == []


def test_run_flag_makes_file_config_inconsistent(tmp_path, image_dir, points_csv, fake_loop):
    cfg = tmp_path / "c.toml"
    cfg.write_text("alpha = 0.3\n")
    line = _one_error_line(runner.invoke(app, [
        "run", "--images", str(image_dir), "--points", str(points_csv), "--out",
        str(tmp_path / "run"), "--config", str(cfg), "--beta", "0.8"]))
    assert "'alpha' + 'beta'" in line and "1.1" in line
    assert not (tmp_path / "run").exists() and fake_loop == []


def test_run_flag_overrides_a_bad_file_value(tmp_path, image_dir, points_csv, fake_loop):
    """A flag overrides the file, so `--p 2` fixes `p = -1.0` in the file (the config is
    validated once, after merging file and flags)."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("rounds = 1\np = -1.0\n")
    res = runner.invoke(app, [
        "run", "--images", str(image_dir), "--points", str(points_csv), "--out",
        str(tmp_path / "run"), "--config", str(cfg), "--p", "2"])
    assert res.exit_code == 0, res.output
    assert fake_loop[0]["cfg"] == Config(rounds=1, p=2.0)


# -- run: the config handed to the orchestrator ---------------------------------------------

def test_run_passes_overrides_to_the_loop(tmp_path, image_dir, points_csv, fake_loop):
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", "--images", str(image_dir), "--points", str(points_csv),
                              "--out", str(out), "--rounds", "1", "--alpha", "0.1",
                              "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert len(fake_loop) == 1
    call = fake_loop[0]
    assert call["cfg"] == Config(rounds=1, alpha=0.1, seed=3)
    assert Path(call["layout"].root) == out.resolve()
    assert type(call["executor"]).__name__ == "LocalExecutor"
    # the resolved config is what the run directory records
    assert load_config(out / "config.toml") == call["cfg"]
    assert "done: detections in" in res.stdout


def test_run_reads_the_config_file_and_flags_win(tmp_path, image_dir, points_csv, fake_loop):
    base = Config(rounds=5, sigma=4.0, beta=0.2, p=2.0, unet_widths=(4, 8), detector_crop=64,
                  extra_radii=(8.0,))
    cfg_file = tmp_path / "exp.toml"
    cfg_file.write_text("# my experiment\n[pseudocell]\n" + dump_toml(base))
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", "--images", str(image_dir), "--points", str(points_csv),
                              "--out", str(out), "--config", str(cfg_file), "--rounds", "1",
                              "--alpha", "0.1", "--seed", "3"])
    assert res.exit_code == 0, res.output
    got = fake_loop[0]["cfg"]
    assert got == base.replace(rounds=1, alpha=0.1, seed=3)
    assert (got.sigma, got.beta, got.p, got.unet_widths) == (4.0, 0.2, 2.0, (4, 8))


def test_run_without_flags_uses_the_file_unchanged(tmp_path, image_dir, points_csv, fake_loop):
    cfg_file = tmp_path / "exp.toml"
    cfg_file.write_text("rounds = 1\nmask_radius = 9.0\n")
    res = runner.invoke(app, ["run", "--images", str(image_dir), "--points", str(points_csv),
                              "--out", str(tmp_path / "run"), "--config", str(cfg_file)])
    assert res.exit_code == 0, res.output
    assert fake_loop[0]["cfg"] == Config(rounds=1, mask_radius=9.0)


# -- evaluate -------------------------------------------------------------------------------

GT = "image,y,x\na,10,10\na,10,40\na,50,50\nb,20,20\n"
PRED = ("image,y,x\n"
        "a,12,10\n"     # 2 px from (10,10): TP
        "a,10,60\n"     # 20 px from (10,40): FP (and (10,40) is a FN)
        "a,50,58\n"     # 8 px from (50,50): TP
        "b,20,20\n"     # exact: TP
        "b,100,100\n")  # FP


def test_evaluate_prints_and_writes_exact_counts(tmp_path):
    (tmp_path / "gt.csv").write_text(GT)
    (tmp_path / "pred.csv").write_text(PRED)
    js = tmp_path / "m.json"
    res = runner.invoke(app, ["evaluate", "--pred", str(tmp_path / "pred.csv"), "--gt",
                              str(tmp_path / "gt.csv"), "--json", str(js)])
    assert res.exit_code == 0, res.output
    # TP=3 FP=2 FN=1: P = 3/5, R = 3/4, F1 = 2*3 / (2*3 + 2 + 1) = 2/3
    assert "radius=15px  TP=3 FP=2 FN=1  P=0.600 R=0.750 F1=0.667" in res.stdout
    d = json.loads(js.read_text())
    assert (d["tp"], d["fp"], d["fn"], d["radius"]) == (3, 2, 1, 15.0)
    assert d["precision"] == pytest.approx(0.6)
    assert d["recall"] == pytest.approx(0.75)
    assert d["f1"] == pytest.approx(2 / 3)
    assert {k: (v["tp"], v["fp"], v["fn"]) for k, v in d["per_image"].items()} == {
        "a": (2, 1, 1), "b": (1, 1, 0)}

    # a smaller radius loses the 8 px match
    res = runner.invoke(app, ["evaluate", "--pred", str(tmp_path / "pred.csv"), "--gt",
                              str(tmp_path / "gt.csv"), "--radius", "5"])
    assert "radius=5px  TP=2 FP=3 FN=2  P=0.400 R=0.500 F1=0.444" in res.stdout


def test_evaluate_matches_optimally_not_greedily(tmp_path):
    # greedy (closest pair first) pairs (0,9)-(0,5) and leaves 1 match; optimal finds 2
    (tmp_path / "gt.csv").write_text("image,y,x\nc,0,5\nc,0,13\n")
    (tmp_path / "pred.csv").write_text("image,y,x\nc,0,0\nc,0,9\n")
    res = runner.invoke(app, ["evaluate", "--pred", str(tmp_path / "pred.csv"), "--gt",
                              str(tmp_path / "gt.csv"), "--radius", "5"])
    assert res.exit_code == 0, res.output
    assert "TP=2 FP=0 FN=0  P=1.000 R=1.000 F1=1.000" in res.stdout


def test_evaluate_napari_files_with_images(tmp_path, image_dir):
    (tmp_path / "gt.csv").write_text("image,y,x\n001cells.png,10,10\n002cells.png,20,20\n")
    # napari frame 1 = second image in name order = 002cells
    (tmp_path / "pred.csv").write_text("index,axis-0,axis-1,axis-2\n0,1,21,20\n1,0,80,80\n")
    res = runner.invoke(app, ["evaluate", "--pred", str(tmp_path / "pred.csv"), "--gt",
                              str(tmp_path / "gt.csv"), "--images", str(image_dir)])
    assert res.exit_code == 0, res.output
    assert "TP=1 FP=1 FN=1  P=0.500 R=0.500 F1=0.500" in res.stdout


def test_evaluate_errors_are_one_line(tmp_path):
    (tmp_path / "gt.csv").write_text(GT)
    (tmp_path / "pred.csv").write_text(PRED)
    line = _one_error_line(runner.invoke(app, [
        "evaluate", "--pred", str(tmp_path / "pred.csv"), "--gt", str(tmp_path / "gt.csv"),
        "--radius", "0"]))
    assert "--radius" in line
    line = _one_error_line(runner.invoke(app, [
        "evaluate", "--pred", str(tmp_path / "missing.csv"), "--gt", str(tmp_path / "gt.csv")]))
    assert "missing.csv" in line and "does not exist" in line


def test_evaluate_file_name_and_id_name_the_same_image(tmp_path):
    """``image`` may be a file name or its id (as for ``run``): both name one image."""
    (tmp_path / "gt.csv").write_text("image,y,x\n001cells,10,10\n")
    (tmp_path / "pred.csv").write_text("image,y,x\n001cells.png,10,10\n")
    res = runner.invoke(app, ["evaluate", "--pred", str(tmp_path / "pred.csv"), "--gt",
                              str(tmp_path / "gt.csv")])
    assert res.exit_code == 0, res.output
    assert "TP=1 FP=0 FN=0" in res.stdout


@pytest.mark.parametrize("args, words", [
    (["--executor", "spark"], ["--executor", "spark", "local", "ray"]),
    (["--address", "auto"], ["--address", "--executor ray"]),
    (["--executor", "ray", "--train", "fast"], ["train", "fast", "ray_train"]),
    (["--executor", "ray", "--train-workers", "0"], ["train_workers", ">= 1"]),
    (["--ray-env", "HOME"], ["--ray-env", "--executor ray"]),
    (["--executor", "ray", "--ray-env", "PSEUDOCELL_NOT_SET_ANYWHERE"],
     ["--ray-env PSEUDOCELL_NOT_SET_ANYWHERE", "not set in this shell"]),
])
def test_run_bad_executor_options_write_nothing(tmp_path, image_dir, points_csv, fake_loop,
                                                args, words):
    line = _one_error_line(runner.invoke(app, [
        "run", "--images", str(image_dir), "--points", str(points_csv),
        "--out", str(tmp_path / "run"), *args]))
    assert all(w in line for w in words), line
    assert not (tmp_path / "run").exists() and fake_loop == []


# -- tracking commands on something that is not a tracked run -------------------------------

@pytest.mark.parametrize("cmd", (["ui"], ["sync"], ["export", "--out", "x"]))
def test_tracking_commands_on_a_non_run_fail_in_one_line(tmp_path, cmd):
    line = _one_error_line(runner.invoke(app, [cmd[0], str(tmp_path), *cmd[1:]]))
    assert str(tmp_path) in line


# -- evaluate: detect's empty output; global options after the command; help texts ---------

def test_evaluate_scores_the_empty_output_of_detect(tmp_path, image_dir):
    """``detect`` writes header-only files when it finds no cell; evaluate scores them
    F1 = 0 instead of refusing ("annotate at least one cell")."""
    import torch

    from pseudocell.core.unet import UNet

    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "config.toml").write_text(dump_toml(Config(unet_widths=(4, 8), detector_crop=64,
                                                      device="cpu")))
    torch.save({"state_dict": UNet(widths=(4, 8)).state_dict(), "meta": {"widths": [4, 8]}},
               run / "final" / "model.pt")
    det = tmp_path / "det"
    res = runner.invoke(app, ["detect", "--model", str(run), "--images", str(image_dir),
                              "--out", str(det), "--threshold", "1e9", "--no-overlays"])
    assert res.exit_code == 0, res.output
    assert "0 cells detected" in res.stdout
    (tmp_path / "gt.csv").write_text("image,y,x\n001cells,10,10\n002cells,20,20\n")
    for pred, extra in ((det / "detections_table.csv", []),
                        (det / "detections.csv", ["--images", str(image_dir)])):
        js = tmp_path / "m.json"
        res = runner.invoke(app, ["evaluate", "--pred", str(pred), "--gt",
                                  str(tmp_path / "gt.csv"), "--json", str(js), *extra],
                            env={"COLUMNS": "300"})
        assert res.exit_code == 0, res.output
        assert "TP=0 FP=0 FN=2  P=0.000 R=0.000 F1=0.000" in res.stdout
        assert "holds 0 points: all 2 ground-truth points are misses (F1 = 0)" in \
            " ".join(res.stderr.split())
        assert json.loads(js.read_text())["fn"] == 2


def test_global_options_work_after_the_command(tmp_path):
    (tmp_path / "gt.csv").write_text(GT)
    (tmp_path / "pred.csv").write_text(PRED)
    base = ["evaluate", "--pred", str(tmp_path / "pred.csv"), "--gt", str(tmp_path / "gt.csv")]
    for args in (["--quiet", *base], [*base, "--quiet"], [*base, "--log-level", "WARNING"],
                 ["--log-level", "DEBUG", *base, "--quiet"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 0, (args, res.output)
        assert "TP=3 FP=2 FN=1" in res.stdout
    res = runner.invoke(app, [*base, "--quiet", "--log-level", "LOUD"])
    assert res.exit_code == 2 and "LOUD" in res.output


@pytest.mark.parametrize("cmd", [[], *[[c] for c in COMMANDS], ["bench"]])
def test_help_shows_flags_without_a_bool_type(cmd):
    res = runner.invoke(app, [*cmd, "--help"], env={"COLUMNS": "120"})
    assert res.exit_code == 0, res.output
    assert "<bool>" not in res.stdout
    if cmd:
        assert "--quiet" in res.stdout and "--log-level" in res.stdout


def test_help_texts_fit_and_say_what_the_command_has():
    res = runner.invoke(app, ["tune", "--help"], env={"COLUMNS": "80"})
    assert "--executor" not in res.stdout  # tune has no --executor option
    res = runner.invoke(app, ["bench", "--help"], env={"COLUMNS": "80"})
    text = " ".join(res.stdout.replace("│", " ").split())
    assert "…" not in res.stdout
    assert "keys: name, images, gt, gt_replace, radius" in text


def test_eval_images_without_eval_gt_warn_that_they_are_only_predicted(
        tmp_path, image_dir, points_csv, fake_loop):
    res = runner.invoke(app, ["run", "--images", str(image_dir), "--points", str(points_csv),
                              "--out", str(tmp_path / "run"), "--eval-images", str(image_dir)],
                        env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert "--eval-images without --eval-gt" in res.stderr
    assert "only predicted" in " ".join(res.stderr.split())
    assert len(fake_loop) == 1


def test_rgba_with_constant_alpha_is_read_with_a_warning(tmp_path, caplog):
    from pseudocell.validation import load_image_folder

    rgb = np.asarray(Image.open(BRIGHTFIELD / "001cells.png").convert("RGB"))[CROP]
    d = tmp_path / "rgba"
    d.mkdir()
    for name, alpha in (("opaque.png", 255), ("half.png", 128)):
        Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], alpha, np.uint8)]),
                        "RGBA").save(d / name)
    with caplog.at_level("WARNING", logger="pseudocell"):
        imgs = load_image_folder(d, name="--images")
    np.testing.assert_array_equal(imgs.images[0], imgs.images[1])  # alpha does not count
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "half.png" in warned[0] and "constant 128" in warned[0]


@pytest.mark.parametrize("opt, suggested", [
    ("--epochs", None), ("--threads", None), ("--dry-run", None),  # click said --points...
    ("--executer", "--executor"), ("--seeds", "--seed"), ("--output", "--out"),
])
def test_an_unknown_option_suggests_only_related_ones(opt, suggested):
    res = runner.invoke(app, ["run", opt], env={"COLUMNS": "200"})
    assert res.exit_code == 2
    line = next(ln for ln in res.output.splitlines() if "No such option" in ln)
    if suggested is None:
        assert "Possible options" not in line, line
    else:
        assert f"(Possible options: {suggested})" in line, line


def test_tune_no_share_reaches_the_sweep_options(tmp_path, image_dir, points_csv,
                                                 monkeypatch):
    import pseudocell.tune_spaces.sweep as sweep

    seen = []
    monkeypatch.setattr(sweep, "prepare_sweep",
                        lambda out, base, inputs, options, **kw: seen.append(options) or out)
    monkeypatch.setattr(sweep, "run_sweep",
                        lambda *a, **kw: {"best": None, "trials": [], "seconds": 0.0})
    args = ["tune", "--images", str(image_dir), "--points", str(points_csv), "--val-images",
            str(image_dir), "--val-gt", str(points_csv), "--out", str(tmp_path / "s")]
    for extra, share in (([], True), (["--no-share"], False)):
        res = runner.invoke(app, args + extra)
        assert res.exit_code == 0, res.output
        assert seen[-1].share is share


@pytest.mark.parametrize("args, expected", [(["--seed", "2", "--seed", "1"], [2, 1]),
                                            (["--seeds", "2"], [0, 1]),
                                            (["--quick"], [0])])
def test_bench_runs_exactly_the_seeds_asked_for(tmp_path, monkeypatch, args, expected):
    """--seed picks single seeds (a long benchmark run a seed at a time); --seeds N is
    0..N-1; --quick one seed."""
    from pseudocell.bench import human

    seen = {}

    def fake_run_human(specs, *, cfg, seeds, out_dir, **kw):
        seen["seeds"] = list(seeds)
        return {"seeds": list(seeds), "params": {}, "summary": {}}

    monkeypatch.setattr(human, "run_human", fake_run_human)
    res = runner.invoke(app, ["bench", "--protocol", "human", "--out", str(tmp_path / "b"),
                              *args])
    assert res.exit_code == 0, res.output
    assert seen["seeds"] == expected
