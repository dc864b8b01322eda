"""One table of bad inputs, each run through the real command line (CliRunner) on a
fresh output folder: the exit code (1 for our errors, 2 for usage errors), a fragment
of the message, no traceback, and nothing written (the output folder does not exist
afterwards; every input, the current folder included, is unchanged).

Refusals happen before any training, so the whole table runs in seconds. The inputs
are small crops of real bright-field images (tests/input_cases.py), written into
``tmp_path`` at test time.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from input_cases import CASES, GOOD_POINTS, load_crops, make_image_dir
from pseudocell.cli import app
from pseudocell.config import Config, dump_toml
from pseudocell.core.unet import UNet

runner = CliRunner()
CUDA = torch.cuda.is_available()
TINY = Config(unet_widths=(4, 8), detector_crop=64, device="cpu")


@dataclass(frozen=True)
class Ctx:
    """What a case builds its command line from: a fresh folder ``tmp`` (its ``out``
    must never appear), an image folder inside it, and the shared model files."""

    tmp: Path
    images: Path
    assets: Path

    @property
    def out(self) -> str:
        return str(self.tmp / "out")

    def file(self, name: str, text: str) -> str:
        (self.tmp / name).write_text(text)
        return str(self.tmp / name)

    @property
    def points(self) -> str:
        return self.file("points.csv", GOOD_POINTS)

    def asset(self, name: str) -> str:
        return str(self.assets / name)


@dataclass(frozen=True)
class Bad:
    argv: Callable[[Ctx], list[str]]
    code: int
    says: tuple[str, ...]


def _save(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    """Model files, good and bad, and run directories; shared by every case, read-only."""
    d = tmp_path_factory.mktemp("assets")
    state = UNet(widths=(4, 8)).state_dict()
    good = _save(d / "run" / "final" / "model.pt",
                 {"state_dict": state, "meta": {"widths": [4, 8]}})
    (d / "run" / "config.toml").write_text(dump_toml(TINY))
    data = good.read_bytes()
    (d / "truncated.pt").write_bytes(data[: len(data) // 2])
    (d / "empty.pt").write_bytes(b"")
    (d / "config_as_model.toml").write_text(dump_toml(TINY))
    _save(d / "pu.pt", {"state_dict": {"fc.weight": torch.zeros(1, 16)},
                        "meta": {"prior": 0.3}})
    _save(d / "wrong_shapes.pt", {"state_dict": UNet(widths=(8, 16)).state_dict(),
                                  "meta": {"widths": [4, 8]}})
    _save(d / "no_meta.pt", {"state_dict": state})
    _save(d / "tensor.pt", torch.zeros(3))
    _save(d / "missing_key.pt", {"state_dict": dict(list(state.items())[1:]),
                                 "meta": {"widths": [4, 8]}})
    (d / "pickle.pt").write_bytes(b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00\x8c\x01a\x94.")
    (d / "no_final").mkdir()
    (d / "no_final" / "config.toml").write_text(dump_toml(TINY))
    _save(d / "cuda_run" / "final" / "model.pt",
          {"state_dict": state, "meta": {"widths": [4, 8]}})
    (d / "cuda_run" / "config.toml").write_text(dump_toml(TINY.replace(device="cuda:99")))
    (d / "not_a_run").mkdir()
    (d / "not_a_run" / "notes.txt").write_text("hello")
    return d


@pytest.fixture(scope="module")
def crops():
    return load_crops()


# -- the table --------------------------------------------------------------------------

def _run(*extra: str, images: bool = True, points: bool = True, out: bool = True):
    def argv(c: Ctx) -> list[str]:
        return ["run", *(["--images", str(c.images)] if images else []),
                *(["--points", c.points] if points else []),
                *(["--out", c.out] if out else []), *extra]
    return argv


def _with_blank(c: Ctx) -> str:
    """The crops plus an all-black image, in a folder of their own."""
    import numpy as np
    from PIL import Image

    d = c.tmp / "with_blank"
    d.mkdir()
    for p in c.images.iterdir():
        (d / p.name).write_bytes(p.read_bytes())
    Image.fromarray(np.zeros((96, 128), np.uint8)).save(d / "black.png")
    return str(d)


def _from_case(case):
    def argv(c: Ctx) -> list[str]:
        images, points, extra = case.build(c.tmp, c.images)
        return ["run", "--images", str(images), "--points", str(points), "--out", c.out,
                *extra]
    return argv


NO_CUDA = ("CUDA is not available",) if not CUDA else ("GPU(s)",)

TABLE: dict[str, Bad] = {
    # every case of the validation table, through `run`
    **{f"run/{name}": Bad(_from_case(case), 1, tuple(case.names) + ((case.fix,) if case.fix
                                                                      else ()))
       for name, case in CASES.items()},
    # run: flags that override the config
    "run --seed -1 (issue: numpy traceback 12 s in)": Bad(
        _run("--seed", "-1"), 1, ("'seed'", "[0, 4294967295]", "got -1")),
    "run --seed 2**32": Bad(_run("--seed", str(2**32)), 1, ("'seed'", "4294967296")),
    "run --rounds -1": Bad(_run("--rounds", "-1"), 1, ("'rounds'", ">= 0")),
    "run --beta 0.99": Bad(_run("--beta", "0.99"), 1, ("'alpha' + 'beta'",)),
    "run --alpha nan": Bad(_run("--alpha", "nan"), 1, ("'alpha'", "finite")),
    "run --alpha inf": Bad(_run("--alpha", "inf"), 1, ("'alpha'", "finite")),
    "run --p 0": Bad(_run("--p", "0"), 1, ("'p'", "> 0")),
    "run --mode nope": Bad(_run("--mode", "nope"), 1, ("mode='nope'",
                                                       "use one of adapt, adapt-ranker, "
                                                       "label-free, partial")),
    # the label-free mode (issue 16): too few pixels, a blank image, fusion_beta < 0
    "run --mode label-free on two small crops": Bad(
        _run("--mode", "label-free", points=False), 1,
        ("2 image(s) with 24576 pixels", "16 tiles of 64x64", "Add images")),
    "run --mode label-free with a blank image": Bad(
        lambda c: ["run", "--mode", "label-free", "--images", _with_blank(c),
                   "--out", c.out, "--config", c.file("c.toml", "psm_crop = 16\n")], 1,
        ("blank", "black.png", "Remove them")),
    "run --mode label-free, fusion_beta < 0": Bad(
        lambda c: ["run", "--mode", "label-free", "--images", str(c.images), "--out", c.out,
                   "--config", c.file("c.toml", "fusion_beta = -1.0\n")], 1,
        ("'fusion_beta'", ">= 0")),
    # the adapt modes (issue 17): no source, the same images as source and target, a
    # negative reversal weight, a curriculum that shrinks
    "run --mode adapt without a source": Bad(
        _run("--mode", "adapt", points=False), 1,
        ("mode 'adapt' needs source_images, source_points", "--source-images")),
    "run --mode adapt, source = target": Bad(
        lambda c: ["run", "--mode", "adapt", "--images", str(c.images), "--source-images",
                   str(c.images), "--source-points", c.points, "--out", c.out], 1,
        ("--source-images and --images (target) share", "the target must be new images")),
    "run --mode adapt, grl_lambda < 0": Bad(
        lambda c: ["run", "--mode", "adapt", "--images", str(c.images), "--out", c.out,
                   "--config", c.file("c.toml", "grl_lambda = -1.0\n")], 1,
        ("'grl_lambda'", ">= 0")),
    "run --mode adapt, shrinking schedule": Bad(
        lambda c: ["run", "--mode", "adapt", "--images", str(c.images), "--out", c.out,
                   "--config", c.file("c.toml", "adapt_schedule = [0.6, 0.3]\n")], 1,
        ("'adapt_schedule'", "increasing")),
    "run --source-images without --source-points": Bad(
        _run("--mode", "adapt", "--source-images", "SRC", points=False), 1,
        ("--source-images needs --source-points",)),
    "run --mode blank": Bad(_run("--mode", " "), 1, ("'mode'", "a mode name")),
    "run --device tpu": Bad(_run("--device", "tpu"), 1, ("'device'", "'tpu'")),
    "run --device cuda:99 (issue: fails 11 s into training)": Bad(
        _run("--device", "cuda:99"), 1, ("--device 'cuda:99'", *NO_CUDA)),
    "run --device cuda:-1": Bad(_run("--device", "cuda:-1"), 1, ("'device'", "'cuda:-1'")),
    "run config device cuda:99": Bad(
        lambda c: _run("--config", c.file("c.toml", 'device = "cuda:99"\n'))(c), 1,
        ("config 'device' 'cuda:99'", *NO_CUDA)),
    # run: output folder
    "run --out '' (issue: writes into the current folder)": Bad(
        lambda c: _run(out=False)(c) + ["--out", ""], 1, ("--out is empty", "--out runs/exp1")),
    "run --out blank": Bad(lambda c: _run(out=False)(c) + ["--out", "   "], 1,
                           ("--out is empty", "current folder")),
    "run --out is a file": Bad(lambda c: _run(out=False)(c) + ["--out", c.points], 1,
                               ("is a file", "another --out")),
    "run --out holds something else": Bad(
        lambda c: _run(out=False)(c) + ["--out", str(c.images)], 1,
        ("not a pseudocell run", "pass --force")),
    # run: other inputs
    "run --eval-gt without --eval-images": Bad(
        lambda c: _run("--eval-gt", c.points)(c), 1, ("--eval-gt needs --eval-images",)),
    "run --eval-images missing": Bad(
        lambda c: _run("--eval-images", str(c.tmp / "nowhere"))(c), 1,
        ("--eval-images", "nowhere", "does not exist")),
    "run --eval-gt outside the held-out image": Bad(
        lambda c: _run("--eval-images", str(c.images), "--eval-gt",
                       c.file("egt.csv", "image,y,x\n001cells,500,5\n"))(c), 1,
        ("--eval-gt", "egt.csv", "y=500")),
    "run --gt unknown image": Bad(
        lambda c: _run("--gt", c.file("gt.csv", "image,y,x\nzzz.png,5,5\n"))(c), 1,
        ("--gt", "['zzz']")),
    "run --pattern matches nothing": Bad(_run("--pattern", "*.tif"), 1,
                                         ("--images", "'*.tif'", "no image")),
    "run --executor spark": Bad(_run("--executor", "spark"), 1, ("--executor 'spark'",)),
    "run --address without ray": Bad(_run("--address", "auto"), 1,
                                     ("--address needs --executor ray",)),
    "run --ray-env without ray": Bad(_run("--ray-env", "HOME"), 1,
                                     ("--ray-env needs --executor ray",)),
    # run: usage errors (exit 2)
    "run --seed 1.5": Bad(_run("--seed", "1.5"), 2, ("--seed", "valid integer")),
    "run --alpha abc": Bad(_run("--alpha", "abc"), 2, ("--alpha", "valid number")),
    "run --rounds x": Bad(_run("--rounds", "x"), 2, ("--rounds",)),
    "run without --images": Bad(_run(images=False), 2, ("Missing option", "--images")),
    "run without --points": Bad(_run(points=False), 1,
                                ("mode 'partial' needs points", "give --points")),
    "run without --out": Bad(_run(out=False), 2, ("Missing option", "--out")),
    "run --force true (a flag takes no value)": Bad(_run("--force", "true"), 2,
                                                    ("unexpected extra argument", "true")),
    "run --bogus": Bad(_run("--bogus"), 2, ("No such option", "--bogus")),
    "run --log-level LOUD after the command": Bad(_run("--log-level", "LOUD"), 2,
                                                  ("--log-level", "LOUD")),
    "--log-level LOUD before the command": Bad(lambda c: ["--log-level", "LOUD",
                                                          *_run()(c)], 2, ("LOUD",)),
    # resume
    "resume ''": Bad(lambda c: ["resume", ""], 1, ("RUN_DIR is empty",)),
    "resume a folder that is not a run": Bad(lambda c: ["resume", c.asset("not_a_run")], 1,
                                             ("not a pseudocell run", "pseudocell run")),
    "resume a missing folder": Bad(lambda c: ["resume", str(c.tmp / "nowhere")], 1,
                                   ("nowhere", "not a pseudocell run")),
    "resume a run whose device is missing": Bad(
        lambda c: ["resume", c.asset("cuda_run")], 1, ("'cuda:99'", *NO_CUDA)),
    "resume --executor spark": Bad(lambda c: ["resume", c.asset("run"), "--executor",
                                              "spark"], 1, ("--executor 'spark'",)),
    # demo (refused before its images are read)
    "demo --out ''": Bad(lambda c: ["demo", "--out", ""], 1, ("--out is empty",)),
    "demo --rounds -1": Bad(lambda c: ["demo", "--out", c.out, "--rounds", "-1"], 1,
                            ("'rounds'",)),
    "demo --data-dir missing (was a traceback)": Bad(
        lambda c: ["demo", "--out", c.out, "--data-dir", str(c.tmp / "nowhere")], 1,
        ("--data-dir", "nowhere", "is not a folder")),
    "demo --data-dir without the demo files": Bad(
        lambda c: ["demo", "--out", c.out, "--data-dir", str(c.images)], 1,
        ("--data-dir", "lacks 98 of its 100 files", "001dots.png")),
    # detect
    **{f"detect --model {name}": Bad(
        lambda c, f=f: ["detect", "--model", c.asset(f), "--images", str(c.images),
                        "--out", c.out], 1, says)
       for name, f, says in [
           ("a config file (was a traceback)", "config_as_model.toml",
            ("--model", "config_as_model.toml", "not a readable model file")),
           ("the PU model (was a traceback)", "pu.pt",
            ("--model", "pu.pt", "no U-Net widths", "PU learner")),
           ("truncated (was a traceback)", "truncated.pt",
            ("--model", "truncated.pt", "may be truncated")),
           ("empty (was 'Aborted.')", "empty.pt", ("--model", "empty.pt", "is empty (0 bytes)")),
           ("weights of other widths", "wrong_shapes.pt",
            ("wrong_shapes.pt", "do not fit a U-Net of widths [4, 8]")),
           ("a weight missing", "missing_key.pt", ("missing_key.pt", "do not fit")),
           ("without meta", "no_meta.pt", ("no_meta.pt", "['state_dict']", "not a detector")),
           ("a bare tensor", "tensor.pt", ("tensor.pt", "Tensor", "not a detector")),
           ("a plain pickle", "pickle.pt", ("pickle.pt", "not a readable model file",
                                             "Weights only load failed)")),
           ("a run without final/model.pt", "no_final", ("model.pt", "does not exist")),
           ("a missing file", "nowhere.pt", ("nowhere.pt", "does not exist")),
       ]},
    "detect --model ''": Bad(lambda c: ["detect", "--model", "", "--images", str(c.images),
                                        "--out", c.out], 1, ("--model is empty",)),
    "detect --out ''": Bad(lambda c: ["detect", "--model", c.asset("run"), "--images",
                                      str(c.images), "--out", ""], 1, ("--out is empty",)),
    "detect --device cuda:99": Bad(
        lambda c: ["detect", "--model", c.asset("run"), "--images", str(c.images), "--out",
                   c.out, "--device", "cuda:99"], 1, ("--device 'cuda:99'", *NO_CUDA)),
    "detect --device tpu": Bad(
        lambda c: ["detect", "--model", c.asset("run"), "--images", str(c.images), "--out",
                   c.out, "--device", "tpu"], 1, ("'device'", "'tpu'")),
    "detect with the run's missing device": Bad(
        lambda c: ["detect", "--model", c.asset("cuda_run"), "--images", str(c.images),
                   "--out", c.out], 1, ("'cuda:99'", "override with --device", *NO_CUDA)),
    "detect --threshold -1": Bad(
        lambda c: ["detect", "--model", c.asset("run"), "--images", str(c.images), "--out",
                   c.out, "--threshold", "-1"], 1, ("'peak_threshold'", "> 0")),
    "detect --images missing": Bad(
        lambda c: ["detect", "--model", c.asset("run"), "--images", str(c.tmp / "nowhere"),
                   "--out", c.out], 1, ("--images", "nowhere", "does not exist")),
    "detect --overlays false (a flag)": Bad(
        lambda c: ["detect", "--model", c.asset("run"), "--images", str(c.images), "--out",
                   c.out, "--overlays", "false"], 2, ("unexpected extra argument",)),
}


GT = "image,y,x\n001cells,10,10\n002cells,20,20\n"
NAPARI = "index,axis-0,axis-1,axis-2\n0,0,10,10\n1,1,20,20\n"
TABLE.update({
    # evaluate: --json is checked before the work (it crashed after printing)
    "evaluate --json into a missing folder": Bad(
        lambda c: ["evaluate", "--pred", c.file("p.csv", GT), "--gt", c.file("g.csv", GT),
                   "--json", c.out + "/m.json"], 1, ("--json", "does not exist",
                                                     "create it first")),
    "evaluate --json is a folder": Bad(
        lambda c: ["evaluate", "--pred", c.file("p.csv", GT), "--gt", c.file("g.csv", GT),
                   "--json", str(c.images)], 1, ("--json", "is a folder")),
    "evaluate --json ''": Bad(
        lambda c: ["evaluate", "--pred", c.file("p.csv", GT), "--gt", c.file("g.csv", GT),
                   "--json", ""], 1, ("--json is empty",)),
    "evaluate: napari without --images against names (frame0, frame1)": Bad(
        lambda c: ["evaluate", "--pred", c.file("p.csv", NAPARI), "--gt", c.file("g.csv", GT),
                   "--json", c.out + ".json"], 1,
        ("['frame0', 'frame1']", "['001cells', '002cells']", "pass --images")),
    "evaluate: no image in common": Bad(
        lambda c: ["evaluate", "--pred", c.file("p.csv", "image,y,x\na,1,1\n"), "--gt",
                   c.file("g.csv", GT), "--json", c.out + ".json"], 1,
        ("--pred names images ['a']", "no image in common")),
    "evaluate --radius 0": Bad(
        lambda c: ["evaluate", "--pred", c.file("p.csv", GT), "--gt", c.file("g.csv", GT),
                   "--radius", "0", "--json", c.out + ".json"], 1, ("--radius", "> 0")),
    "evaluate --radius nan": Bad(
        lambda c: ["evaluate", "--pred", c.file("p.csv", GT), "--gt", c.file("g.csv", GT),
                   "--radius", "nan", "--json", c.out + ".json"], 1, ("--radius", "finite")),
    "evaluate: empty ground truth": Bad(
        lambda c: ["evaluate", "--pred", c.file("p.csv", GT), "--gt",
                   c.file("g.csv", "image,y,x\n"), "--json", c.out + ".json"], 1,
        ("g.csv", "no points")),
    "evaluate: missing --pred file": Bad(
        lambda c: ["evaluate", "--pred", str(c.tmp / "nope.csv"), "--gt", c.file("g.csv", GT),
                   "--json", c.out + ".json"], 1, ("nope.csv", "does not exist")),
    "evaluate: 4-axis --pred": Bad(
        lambda c: ["evaluate", "--pred", c.file("p.csv", "index,axis-0,axis-1,axis-2,axis-3\n"
                                                       "0,0,0,35,200\n"),
                   "--gt", c.file("g.csv", GT), "--json", c.out + ".json"], 1,
        ("p.csv", "4 axes")),
    "evaluate: --gt row with an extra field": Bad(
        lambda c: ["evaluate", "--pred", c.file("p.csv", GT), "--gt",
                   c.file("g.csv", GT + "002cells,30,30,1\n"), "--json", c.out + ".json"], 1,
        ("g.csv", "line 4", "4 fields")),
    "evaluate --images missing": Bad(
        lambda c: ["evaluate", "--pred", c.file("p.csv", GT), "--gt", c.file("g.csv", GT),
                   "--images", str(c.tmp / "nowhere"), "--json", c.out + ".json"], 1,
        ("--images", "nowhere")),
    "evaluate --images: napari frame out of range": Bad(
        lambda c: ["evaluate", "--pred", c.file("p.csv", "index,axis-0,axis-1,axis-2\n"
                                                       "0,7,10,10\n"),
                   "--gt", c.file("g.csv", GT), "--images", str(c.images),
                   "--json", c.out + ".json"], 1, ("--pred", "frame(s) [7]")),
    # ui / sync / export
    "ui --port 99999": Bad(lambda c: ["ui", c.asset("run"), "--port", "99999"], 1,
                           ("--port 99999", "1..65535")),
    "ui --port 0": Bad(lambda c: ["ui", c.asset("run"), "--port", "0"], 1, ("--port 0",)),
    "ui --port -1": Bad(lambda c: ["ui", c.asset("run"), "--port", "-1"], 1, ("--port -1",)),
    "ui --port http": Bad(lambda c: ["ui", c.asset("run"), "--port", "http"], 2,
                          ("--port",)),
    "ui ''": Bad(lambda c: ["ui", ""], 1, ("RUN_DIR is empty",)),
    "ui on a run without MLflow record": Bad(lambda c: ["ui", c.asset("run")], 1,
                                             ("no MLflow record",)),
    "sync ''": Bad(lambda c: ["sync", ""], 1, ("RUN_DIR is empty",)),
    "sync a folder that is not a run": Bad(lambda c: ["sync", c.asset("not_a_run")], 1,
                                           ("no MLflow record",)),
    "export --out ''": Bad(lambda c: ["export", c.asset("run"), "--out", ""], 1,
                           ("--out is empty",)),
    "export ''": Bad(lambda c: ["export", "", "--out", c.out], 1, ("RUN_DIR is empty",)),
    "export a folder that is not a run": Bad(
        lambda c: ["export", c.asset("not_a_run"), "--out", c.out], 1, ("not_a_run",)),
    # tune and bench (refused before Ray or any run starts)
    "tune --out ''": Bad(lambda c: ["tune", "--out", ""], 1, ("--out is empty",)),
    "tune --resume ''": Bad(lambda c: ["tune", "--resume", ""], 1, ("--resume is empty",)),
    "tune without its inputs": Bad(lambda c: ["tune", "--out", c.out], 1,
                                   ("tune needs", "--images", "--val-gt")),
    "tune --executor (it has none)": Bad(lambda c: ["tune", "--out", c.out, "--executor",
                                                    "ray"], 2, ("No such option",)),
    "bench --out ''": Bad(lambda c: ["bench", "--out", ""], 1, ("--out is empty",)),
    "bench --keep 0": Bad(lambda c: ["bench", "--out", c.out, "--keep", "0",
                                     "--config", c.asset("config_as_model.toml")], 1,
                          ("--keep", "(0, 1]")),
    "bench --config with mixed keys": Bad(
        lambda c: ["bench", "--out", c.out, "--config",
                   c.file("c.toml", "seed = 1\n[pseudocell]\nalpha = 0.1\n")], 1,
        ("['seed']", "outside its [pseudocell] table")),
    "bench --seed -1": Bad(lambda c: ["bench", "--out", c.out, "--seed", "-1"], 1,
                           ("--seed [-1]", "0..2**32-1")),
    "bench --seed twice the same": Bad(
        lambda c: ["bench", "--out", c.out, "--seed", "1", "--seed", "1"], 1,
        ("--seed [1, 1]", "distinct")),
    "bench --seeds 0": Bad(lambda c: ["bench", "--out", c.out, "--seeds", "0"], 1,
                           ("--seeds must be at least 1",)),
    "bench --quick true (a flag)": Bad(lambda c: ["bench", "--out", c.out, "--quick", "true"],
                                       2, ("unexpected extra argument",)),
    "unknown command": Bad(lambda c: ["rnu"], 2, ("No such command",)),
})


def _snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            st = p.stat()
            out[str(p)] = (st.st_size if p.is_file() else -1, st.st_mtime_ns)
    return out


def test_the_table_is_large():
    assert len(TABLE) >= 100, len(TABLE)


@pytest.mark.parametrize("name", list(TABLE))
def test_bad_input_is_refused_before_anything_is_written(name, tmp_path, assets, crops,
                                                         monkeypatch):
    case = TABLE[name]
    work = tmp_path / "work"
    work.mkdir()
    c = Ctx(work, make_image_dir(work, crops), assets)
    argv = case.argv(c)
    cwd = tmp_path / "cwd"  # an empty current folder: an empty --out must not fill it
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = _snapshot(work, assets)

    res = runner.invoke(app, argv, env={"COLUMNS": "300", "NO_COLOR": "1"})

    assert res.exit_code == case.code, res.output
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    text = " ".join(res.output.split())  # usage boxes wrap long lines
    for s in case.says:
        assert s in text, f"{s!r} not in {res.output!r}"
    if case.code == 1:
        errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
        assert len(errors) == 1, res.stderr
    assert not (work / "out").exists() and not (work / "out.json").exists()
    assert list(cwd.iterdir()) == []
    assert _snapshot(work, assets) == before, "an input changed"
    assert res.stdout.strip() == "" or case.code == 2, res.stdout
