"""Every bad user input gives ONE typed error that names the input and the fix, and
nothing is written to the run directory before validation has passed.

Images are small crops of real bright-field images from ``../shared/data``, written into
``tmp_path`` at test time (never copied into the repository).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from input_cases import CASES, GOOD_POINTS, H, W, load_crops, make_image_dir, write_text
from pseudocell.cli import app
from pseudocell.config import Config, dump_toml, load_config
from pseudocell.errors import (InvalidConfigError, InvalidInputError, PseudocellError,
                               RunDirectoryError)
from pseudocell.validation import check_image, check_run_dir, load_image_folder, load_points

runner = CliRunner()


@pytest.fixture(scope="module")
def crops() -> dict[str, np.ndarray]:
    return load_crops()


@pytest.fixture
def image_dir(tmp_path, crops) -> Path:
    return make_image_dir(tmp_path, crops)


def _validate_like_the_cli(images: Path, points: Path, extra: list[str]) -> None:
    """The validation the ``run`` command performs, in its order, without the CLI."""
    opts = dict(zip(extra[::2], extra[1::2]))
    cfg = load_config(opts["--config"]) if "--config" in opts else Config()
    from pseudocell.cli.run import _diameter

    over = {k[2:].replace("-", "_"): _diameter(v) if k == "--cell-diameter" else float(v)
            for k, v in opts.items() if k != "--config"}
    if over:
        cfg = cfg.replace(**over)
    imgs = load_image_folder(images, name="--images")
    load_points(points, imgs, name="--points")


# the same cases through the real command line: tests/cli/test_bad_inputs.py


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_bad_input_gives_one_typed_error_naming_input_and_fix(case, tmp_path, image_dir):
    images, points, extra = case.build(tmp_path, image_dir)
    with pytest.raises(PseudocellError) as info:
        _validate_like_the_cli(images, points, extra)
    e = info.value
    assert type(e) is case.error, f"{type(e).__name__}: {e}"
    msg = str(e)
    assert "\n" not in msg, msg
    for s in case.names:
        assert s in msg, f"{s!r} not in {msg!r}"
    if case.fix is not None:
        assert case.fix in msg, f"fix {case.fix!r} not in {msg!r}"


def test_missing_folder_message_says_what_to_do(tmp_path):
    missing = tmp_path / "no_such_folder"
    with pytest.raises(InvalidInputError) as info:
        load_image_folder(missing, name="--images")
    msg = str(info.value)
    assert "--images" in msg and str(missing) in msg
    # the issue asks every message to name the fix, e.g. "check the path"
    rest = msg.replace(str(missing), "").lower()
    assert any(w in rest for w in ("check", "point", "pass", "create", "choose")), msg


def test_images_are_checked_as_arrays_too():
    for arr, what in [(np.zeros((32, 32, 5)), "(32, 32, 5)"),
                      (np.zeros((2, 3, 32, 32)), "(2, 3, 32, 32)"),
                      (np.zeros((4, 32)), "too small"),
                      (np.full((16, 16), np.nan, np.float32), "NaN")]:
        with pytest.raises(InvalidInputError) as info:
            check_image(arr, name="my.tif")
        assert "my.tif" in str(info.value) and what in str(info.value)
    ok = check_image(np.arange(16 * 16 * 3, dtype=np.uint16).reshape(16, 16, 3), name="x")
    assert ok.shape == (16, 16) and ok.dtype == np.float32


def test_valid_inputs_pass(tmp_path, image_dir):
    imgs = load_image_folder(image_dir, name="--images")
    assert imgs.ids == ["001cells", "002cells"]
    assert all(im.shape == (H, W) and im.dtype == np.float32 for im in imgs.images)
    t = load_points(write_text(tmp_path / "p.csv", GOOD_POINTS), imgs, name="--points")
    assert t["image_id"].tolist() == ["001cells", "001cells", "002cells"]
    np.testing.assert_allclose(t["y"], [10.5, 50, 30])
    np.testing.assert_allclose(t["x"], [20, 60.25, 40])
    # the edge pixels are inside
    edge = f"image,y,x\n001cells,0,0\n001cells,{H - 1},{W - 1}\n"
    t = load_points(write_text(tmp_path / "e.csv", edge), imgs, name="--points")
    assert len(t["y"]) == 2


def test_napari_frame_that_is_not_a_number_is_a_typed_error(tmp_path, image_dir):
    imgs = load_image_folder(image_dir, name="--images")
    for frame in ("nan", "inf"):
        p = write_text(tmp_path / f"{frame}.csv", f"index,axis-0,axis-1,axis-2\n0,{frame},10,20\n")
        with pytest.raises(InvalidInputError) as info:
            load_points(p, imgs, name="--points")
        assert "line 2" in str(info.value) and "axis-0" in str(info.value)


def test_nan_coordinate_is_refused(tmp_path, image_dir):
    imgs = load_image_folder(image_dir, name="--images")
    p = write_text(tmp_path / "p.csv", "image,y,x\n001cells,nan,4\n")
    with pytest.raises(InvalidInputError, match="NaN"):
        load_points(p, imgs, name="--points")


# -- config ------------------------------------------------------------------------------

@pytest.mark.parametrize("fields, named", [
    ({"alpha": 0.0}, ["'alpha'", "(0, 1)"]),
    ({"alpha": 1.0}, ["'alpha'"]),
    ({"alpha": -0.1}, ["'alpha'"]),
    ({"beta": 1.2}, ["'beta'", "(0, 1)"]),
    ({"beta": 0.0}, ["'beta'"]),
    ({"alpha": 0.5, "beta": 0.5}, ["'alpha' + 'beta'", "< 1"]),
    ({"alpha": 0.6, "beta": 0.45}, ["'alpha' + 'beta'"]),
    ({"p": 0.0}, ["'p'", "> 0"]),
    ({"p": -4.0}, ["'p'"]),
    ({"radius": 0.0}, ["'radius'", "> 0"]),
    ({"radius": -15.0}, ["'radius'"]),
    ({"mask_radius": 0.0}, ["'mask_radius'", "> 0"]),
    ({"mask_radius": -1.0}, ["'mask_radius'"]),
])
def test_config_field_out_of_range(fields, named, tmp_path):
    for make in (lambda: Config(**fields),
                 lambda: Config().replace(**fields),
                 lambda: load_config(write_text(tmp_path / "c.toml",
                                          "".join(f"{k} = {v!r}\n" for k, v in fields.items())))):
        with pytest.raises(InvalidConfigError) as info:
            make()
        msg = str(info.value)
        for s in named:
            assert s in msg, msg
        assert "Fix these fields in the config file or on the command line" in msg


def test_config_reports_every_bad_field_at_once(tmp_path):
    toml = "[pseudocell]\nalpha = 2.0\np = 0.0\nradius = -1.0\nmask_radius = 0.0\n"
    with pytest.raises(InvalidConfigError) as info:
        load_config(write_text(tmp_path / "c.toml", toml))
    msg = str(info.value)
    for name in ("'alpha'", "'p'", "'radius'", "'mask_radius'"):
        assert name in msg, msg
    assert msg.count("must be") == 4


def test_unknown_config_key_in_toml(tmp_path):
    with pytest.raises(InvalidConfigError) as info:
        load_config(write_text(tmp_path / "c.toml", "rounds = 1\nsigmaa = 5.0\n"))
    assert "'sigmaa'" in str(info.value) and "valid keys are" in str(info.value)
    assert "'sigma'" in str(info.value)


def test_valid_config_round_trips_through_toml(tmp_path):
    cfg = Config(alpha=0.1, beta=0.2, p=2.0, radius=8.0, mask_radius=6.0, rounds=1,
                 extra_radii=(8.0,))
    assert load_config(write_text(tmp_path / "c.toml", dump_toml(cfg))) == cfg


@pytest.mark.parametrize("toml", ['p = "four"', 'sigma = "6"', "unet_widths = 3", "device = 3"])
def test_config_value_of_the_wrong_type_is_a_typed_error(toml, tmp_path):
    with pytest.raises(InvalidConfigError) as info:
        load_config(write_text(tmp_path / "c.toml", toml + "\n"))
    assert toml.split(" =")[0] in str(info.value)


# -- run directory -----------------------------------------------------------------------

def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """relative path → (size, mtime_ns) of everything under ``root`` (and root itself)."""
    out = {".": (0, root.stat().st_mtime_ns)}
    for p in sorted(root.rglob("*")):
        st = p.stat()
        out[str(p.relative_to(root))] = (st.st_size if p.is_file() else 0, st.st_mtime_ns)
    return out


def test_check_run_dir_decisions(tmp_path):
    cfg = Config(rounds=1, alpha=0.1)
    assert check_run_dir(tmp_path / "absent", cfg, force=False) == "new"
    (tmp_path / "empty").mkdir()
    assert check_run_dir(tmp_path / "empty", cfg, force=False) == "new"

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(dump_toml(cfg))
    (run / "round_000").mkdir()
    (run / "round_000" / "x.bin").write_bytes(b"12345")
    before = _snapshot(run)
    assert check_run_dir(run, cfg, force=False) == "continue"
    # device / threads do not change the numbers: still the same run
    assert check_run_dir(run, cfg.replace(device="cpu", num_threads=1), force=False) == "continue"
    other = cfg.replace(alpha=0.2, seed=3)
    with pytest.raises(RunDirectoryError) as info:
        check_run_dir(run, other, force=False)
    msg = str(info.value)
    assert str(run) in msg and "'alpha'" in msg and "'seed'" in msg
    assert "--force" in msg and "pseudocell resume" in msg and "another --out" in msg
    assert check_run_dir(run, other, force=True) == "overwrite"
    assert _snapshot(run) == before, "check_run_dir must never write"

    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(RunDirectoryError, match="not a pseudocell run.*--force"):
        check_run_dir(stranger, cfg, force=False)
    assert check_run_dir(stranger, cfg, force=True) == "overwrite"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(RunDirectoryError, match="is a file"):
        check_run_dir(tmp_path / "afile", cfg, force=True)


def _fake_loop(calls: list):
    def run_loop(layout, cfg, executor, *, progress=None, tracker=None):
        calls.append((layout, cfg))
        return {"rounds": []}
    return run_loop


@pytest.fixture
def existing_run(tmp_path, image_dir, monkeypatch):
    """A run directory made by `pseudocell run` (with the loop itself faked)."""
    import pseudocell.orchestrator.run as orun

    calls: list = []
    monkeypatch.setattr(orun, "run_loop", _fake_loop(calls))
    points = write_text(tmp_path / "p.csv", GOOD_POINTS)
    out = tmp_path / "run"
    base = ["run", "--images", str(image_dir), "--points", str(points), "--out", str(out),
            "--rounds", "1", "--alpha", "0.1"]
    res = runner.invoke(app, base)
    assert res.exit_code == 0, res.output
    assert (out / "config.toml").exists() and (out / "inputs").is_dir()
    calls.clear()
    return app, base, out, calls


def test_cli_refuses_run_dir_with_other_config_and_leaves_it_untouched(existing_run, tmp_path):
    app, base, out, calls = existing_run
    before = _snapshot(out)
    res = runner.invoke(app, [*base, "--alpha", "0.2"])  # later option wins
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "different config" in res.stderr and "'alpha'" in res.stderr
    assert "--force" in res.stderr
    assert calls == []
    assert _snapshot(out) == before

    # bad inputs on top of an existing run: refused before the directory is looked at
    res = runner.invoke(app, ["run", "--images", str(tmp_path / "nowhere"), "--points",
                              str(tmp_path / "p.csv"), "--out", str(out), "--force"])
    assert res.exit_code == 1 and "--images" in res.stderr
    assert _snapshot(out) == before


def test_cli_same_config_continues_without_rewriting(existing_run):
    app, base, out, calls = existing_run
    before = _snapshot(out)
    res = runner.invoke(app, base)
    assert res.exit_code == 0, res.output
    assert len(calls) == 1 and calls[0][1] == Config(rounds=1, alpha=0.1)
    assert Path(calls[0][0].root) == out.resolve()
    assert _snapshot(out) == before


def test_cli_force_replaces_run_with_other_config(existing_run):
    app, base, out, calls = existing_run
    (out / "round_000").mkdir()
    (out / "round_000" / "stale.txt").write_text("old")
    res = runner.invoke(app, [*base, "--alpha", "0.2", "--force"])
    assert res.exit_code == 0, res.output
    assert calls[0][1].alpha == 0.2
    assert load_config(out / "config.toml") == Config(rounds=1, alpha=0.2)
    assert not (out / "round_000").exists()


def test_cli_same_config_but_new_points_is_not_silently_ignored(existing_run, tmp_path):
    """Re-running into a run directory with the same config but different points must
    either refuse or use the new points, never silently keep the old ones."""
    from pseudocell.storage import tables

    app, base, out, calls = existing_run
    new_points = write_text(tmp_path / "p2.csv", "image,y,x\n002cells.png,70,90\n")
    args = list(base)
    args[args.index("--points") + 1] = str(new_points)
    res = runner.invoke(app, args)
    # same config, other points: refused (never silently keeps the old points)
    assert res.exit_code == 1, res.output
    assert res.stderr.startswith("error: ") and "other images or points" in res.stderr
    stored = tables.read_table(str(out / "inputs" / "points.parquet"))
    assert stored["y"].tolist() != [70.0]
    # with --force the run starts again on the new points
    res = runner.invoke(app, args + ["--force"])
    assert res.exit_code == 0, res.output
    stored = tables.read_table(str(out / "inputs" / "points.parquet"))
    assert stored["y"].tolist() == [70.0]


def test_points_csv_with_excel_bom_is_read(tmp_path, image_dir):
    imgs = load_image_folder(image_dir, name="--points")
    p = tmp_path / "bom.csv"
    p.write_bytes("\ufeffimage,y,x\n".encode("utf-8") + GOOD_POINTS.split("\n", 1)[1].encode())
    t = load_points(p, imgs, name="--points")
    assert len(t["y"]) == len(GOOD_POINTS.strip().splitlines()) - 1


def test_config_path_that_is_a_folder_or_not_utf8_is_a_typed_error(tmp_path):
    with pytest.raises(InvalidConfigError, match="cannot be read"):
        load_config(tmp_path)
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b"device = \"caf\xe9\"\n")
    with pytest.raises(InvalidConfigError, match="cannot be read"):
        load_config(bad)


def test_nan_coordinate_names_the_row(tmp_path, image_dir):
    imgs = load_image_folder(image_dir, name="--images")
    p = write_text(tmp_path / "nan.csv", GOOD_POINTS + GOOD_POINTS.split("\n")[1].split(",")[0]
             + ",nan,5\n")
    with pytest.raises(InvalidInputError, match=r"point \d+ .*y=nan.*fix or delete that row"):
        load_points(p, imgs, name="--points")


def test_check_device_knows_how_many_gpus_there_are(monkeypatch):
    """The GPU branch without a GPU: torch.cuda reports one device."""
    import torch

    from pseudocell.validation import check_device

    assert check_device("auto") == "auto" and check_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert check_device("cuda") == "cuda" and check_device("cuda:0") == "cuda:0"
    with pytest.raises(InvalidInputError, match=r"--device 'cuda:1': this machine has 1 "
                                                r"GPU\(s\) \(cuda:0..cuda:0\)"):
        check_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InvalidInputError, match="CUDA is not available.*--device cpu"):
        check_device("cuda:0")
    with pytest.raises(InvalidInputError, match="'gpu' is not a device"):
        check_device("gpu")


def test_a_valid_model_file_is_returned_as_saved(tmp_path):
    import torch

    from pseudocell.core.unet import UNet
    from pseudocell.validation import load_model_file

    state = UNet(widths=(4, 8, 16)).state_dict()
    torch.save({"state_dict": state, "meta": {"widths": [4, 8, 16], "round": 2}},
               tmp_path / "model.pt")
    ck = load_model_file(tmp_path / "model.pt")
    assert ck["meta"] == {"widths": [4, 8, 16], "round": 2}
    assert all(torch.equal(ck["state_dict"][k], v) for k, v in state.items())
