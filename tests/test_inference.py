"""``detect`` streams a folder (listed, not loaded) through the local engine or Ray Data
(issue 19): both engines write the same files as a plain loop over the core functions,
in image order, across shard boundaries; a bad image stops it with the file's name."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import BRIGHTFIELD, require_data
from pseudocell import inference
from pseudocell.config import Config, dump_toml
from pseudocell.core.detector import build_unet, predict_heatmap
from pseudocell.core.peaks import find_peaks
from pseudocell.errors import InvalidInputError
from pseudocell.inference import _in_order, choose_engine, detect_folder
from pseudocell.validation import load_image_folder

CROPS = [(n, ys, xs) for n in (1, 2, 3) for ys, xs in
         ((slice(0, 96), slice(0, 128)), (slice(200, 296), slice(300, 428)))]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Six 96x128 crops (two each of bright-field images 001-003) as PNGs."""
    require_data(BRIGHTFIELD / "001cells.png")
    d = tmp_path_factory.mktemp("images")
    for k, (n, ys, xs) in enumerate(CROPS):
        with Image.open(BRIGHTFIELD / f"{n:03d}cells.png") as im:
            Image.fromarray(np.asarray(im)[ys, xs].copy()).save(d / f"c{k}_{n:03d}.png")
    return d


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run directory with a random-weight U-Net (4-8) on the CPU."""
    run = tmp_path_factory.mktemp("run")
    (run / "final").mkdir()
    (run / "config.toml").write_text(dump_toml(Config(unet_widths=(4, 8), detector_crop=64,
                                                      device="cpu")))
    torch.save({"state_dict": build_unet((4, 8), seed=3).state_dict(),
                "meta": {"widths": [4, 8]}}, run / "final" / "model.pt")
    return run


@pytest.fixture(scope="module")
def reference(folder, run_dir):
    """(threshold, image_id, y, x, value) rows of a plain loop over the core functions,
    with a threshold that keeps some peaks of this random model."""
    net = build_unet((4, 8), seed=3).eval()
    imgs = load_image_folder(folder)
    maps = [predict_heatmap(net, im) for im in imgs.images]
    thr = float(np.quantile(np.concatenate([m.ravel() for m in maps]), 0.99))
    rows = []
    for i, m in zip(imgs.ids, maps):
        pts, vals = find_peaks(m, threshold=thr, min_distance=Config().peak_min_distance)
        rows += [(i, f"{y:.2f}", f"{x:.2f}", f"{float(v):.6g}") for (y, x), v in zip(pts, vals)]
    assert len({r[0] for r in rows}) >= 3, "the threshold keeps too few peaks to test order"
    return thr, imgs.ids, rows


def _table(path: Path) -> list[tuple]:
    with open(path) as f:
        return [tuple(r) for r in csv.reader(f)][1:]


def _check_files(out: Path, ids: list[str], rows: list[tuple]) -> None:
    assert _table(out / "detections_table.csv") == rows
    frame = {i: k for k, i in enumerate(ids)}
    assert _table(out / "detections.csv") == [
        (str(n), str(frame[i]), y, x) for n, (i, y, x, _) in enumerate(rows)]


def test_local_engine_streams_in_image_order_across_shards(folder, run_dir, reference,
                                                            tmp_path, monkeypatch):
    thr, ids, rows = reference
    monkeypatch.setattr(inference, "SHARD_IMAGES", 4)  # 6 images: two shards
    n = detect_folder(run_dir, folder, tmp_path / "det", threshold=thr, engine="local",
                      batch_size=4, overlays=True)
    assert n == len(rows)
    _check_files(tmp_path / "det", ids, rows)
    assert sorted(p.name for p in (tmp_path / "det" / "shards").iterdir()) == [
        "part-00000000.parquet", "part-00000004.parquet"]
    assert sorted(p.stem for p in (tmp_path / "det" / "overlays").iterdir()) == sorted(ids)
    # a second detect into the same folder replaces the shards of the first
    monkeypatch.setattr(inference, "SHARD_IMAGES", 256)
    assert detect_folder(run_dir, folder, tmp_path / "det", threshold=thr,
                         engine="local", overlays=False) == n
    assert [p.name for p in (tmp_path / "det" / "shards").iterdir()] == ["part-00000000.parquet"]
    _check_files(tmp_path / "det", ids, rows)


def test_precision_reaches_the_network(folder, run_dir, reference, tmp_path):
    """--precision bfloat16 gives the rows of the core functions in bfloat16 (not the
    float32 rows)."""
    thr, ids, rows32 = reference
    net = build_unet((4, 8), seed=3).eval()
    rows = []
    for i, im in zip(ids, load_image_folder(folder).images):
        pts, vals = find_peaks(predict_heatmap(net, im, precision="bfloat16"), threshold=thr,
                               min_distance=Config().peak_min_distance)
        rows += [(i, f"{y:.2f}", f"{x:.2f}", f"{float(v):.6g}") for (y, x), v in zip(pts, vals)]
    assert rows != rows32
    detect_folder(run_dir, folder, tmp_path / "det", threshold=thr, engine="local",
                  overlays=False, precision="bfloat16")
    _check_files(tmp_path / "det", ids, rows)


def test_progress_counts_every_image(folder, run_dir, reference, tmp_path):
    seen = []
    detect_folder(run_dir, folder, tmp_path / "det", threshold=reference[0], engine="local",
                  overlays=False, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(k, 6) for k in range(1, 7)]


def test_a_bad_image_stops_detect_naming_the_file(folder, run_dir, tmp_path):
    import shutil

    bad = tmp_path / "images"
    shutil.copytree(folder, bad)
    (bad / "c3_zz.png").write_bytes(b"not a png")
    with pytest.raises(InvalidInputError, match=r"--images: image .*c3_zz\.png.* cannot be "
                                                r"read .*re-export it"):
        detect_folder(run_dir, bad, tmp_path / "det", engine="local", overlays=False)


@pytest.mark.parametrize("kwargs, says", [
    (dict(engine="spark"), "--engine 'spark' is not one of auto, local, ray"),
    (dict(batch_size=0), "--batch-size must be an integer >= 1, got 0"),
    (dict(concurrency=0), "--concurrency must be an integer >= 1, got 0"),
    (dict(precision="float16"), "--precision 'float16' is not one of float32, bfloat16"),
])
def test_bad_engine_options_fail_before_writing(folder, run_dir, tmp_path, kwargs, says):
    with pytest.raises(InvalidInputError, match=says):
        detect_folder(run_dir, folder, tmp_path / "det", **kwargs)
    assert not (tmp_path / "det").exists()


def test_auto_engine_picks_ray_from_the_measured_size():
    k = inference.RAY_MIN_IMAGES
    assert (choose_engine("auto", k - 1), choose_engine("auto", k)) == ("local", "ray")
    assert choose_engine("local", 10 * k) == "local" and choose_engine("ray", 1) == "ray"
    # without Ray Data installed: auto stays local, ray names the extra
    assert choose_engine("auto", 10 * k, have_ray=False) == "local"
    with pytest.raises(InvalidInputError, match=r"pseudocell\[ray\]"):
        choose_engine("ray", 1, have_ray=False)


def test_the_cli_help_names_the_threshold():
    from typer.testing import CliRunner

    from pseudocell.cli import app

    res = CliRunner().invoke(app, ["detect", "--help"], env={"COLUMNS": "300"})
    assert f"ray from {inference.RAY_MIN_IMAGES} images on" in " ".join(res.stdout.split())


def test_results_arriving_out_of_order_are_written_in_order():
    def batch(idx):
        e = np.empty(len(idx), object)
        e[:] = [np.array([float(k)]) for k in idx]
        return {"index": np.array(idx), "image_id": np.array([f"i{k}" for k in idx], object),
                "n": np.ones(len(idx), int), "y": e, "x": e, "value": e}

    got = [r[:2] for r in _in_order([batch([2, 3]), batch([0]), batch([4, 1])])]
    assert got == [(0, "i0"), (1, "i1"), (2, "i2"), (3, "i3"), (4, "i4")]
    with pytest.raises(RuntimeError, match="image 0 never did"):
        list(_in_order([batch([1])]))


@pytest.mark.ray
def test_ray_engine_writes_the_local_engine_files(folder, run_dir, reference, tmp_path,
                                                  ray_address, monkeypatch):
    """Ray Data with two actors, two images per call and 4-image shards: the same rows
    in the same order as the plain loop."""
    thr, ids, rows = reference
    monkeypatch.setattr(inference, "SHARD_IMAGES", 4)
    n = detect_folder(run_dir, folder, tmp_path / "det", threshold=thr, engine="ray",
                      batch_size=2, concurrency=2, overlays=False)
    assert n == len(rows)
    _check_files(tmp_path / "det", ids, rows)


# slow: the local engine's twin (test_a_bad_image_stops_detect_naming_the_file) is fast
@pytest.mark.slow
@pytest.mark.ray
def test_a_bad_image_on_ray_names_the_file(folder, run_dir, tmp_path, ray_address):
    import shutil

    bad = tmp_path / "images"
    shutil.copytree(folder, bad)
    (bad / "c3_zz.png").write_bytes(b"not a png")
    with pytest.raises(InvalidInputError, match=r"image .*c3_zz\.png.* cannot be read"):
        detect_folder(run_dir, bad, tmp_path / "det", engine="ray", batch_size=2,
                      concurrency=1, overlays=False)
