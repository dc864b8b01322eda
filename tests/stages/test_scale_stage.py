"""The ``scale`` stage: one cell size per run, resized images, tables in original pixels."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pseudocell.core.scale import CANONICAL_DIAMETER, resize_image, scaled_shape, to_scaled
from pseudocell.errors import InvalidInputError
from pseudocell.orchestrator.executors import LocalExecutor
from pseudocell.orchestrator.run import prepare_run, run_loop
from pseudocell.results import RunResults
from pseudocell.stages.base import StageInputs
from pseudocell.stages.scale import read_scale, scale_images
from pseudocell.storage import arrays, tables
from pseudocell.validation import ImageSet, RunInputs
from conftest import crop_inputs


def _inputs(tmp_path, images, points):
    img_uri = str(tmp_path / "images.zarr")
    arrays.write_stack(img_uri, images.ids, images.images)
    n = len(points["y"])
    pts_uri = str(tmp_path / "points.parquet")
    tables.write_table(pts_uri, {**points, "kind": np.array(["annotated"] * n, object)})
    out = tmp_path / "out"
    out.mkdir()
    return StageInputs(str(out), 0, 0, {"images": img_uri, "points": pts_uri})


def _bigger(images: ImageSet, gt: dict, f: float):
    """The crops shown ``f`` times larger (cells ``f`` times wider), points moved along."""
    big = [resize_image(im, f) for im in images.images]
    shapes = dict(zip(images.ids, (im.shape for im in images.images)))
    yx = np.concatenate([to_scaled(np.array([[y, x]]), shapes[i], f)
                         for i, y, x in zip(gt["image_id"], gt["y"], gt["x"])])
    return (ImageSet(images.ids, big, images.paths),
            {"image_id": gt["image_id"], "y": yx[:, 0], "x": yx[:, 1]})


def test_cells_near_the_canonical_size_are_left_as_they_are(small_crops, tiny_cfg, tmp_path):
    images, gt = small_crops
    inp = _inputs(tmp_path, images, gt)
    out = scale_images(inp, tiny_cfg)
    sc = read_scale(out.uris["scale"])
    assert sc.source == "estimated" and 8.0 < sc.diameter < 12.0
    assert sc.scale == 1.0
    assert out.uris["images"] == inp.uris["images"]  # no copy
    assert sc.shapes == {i: im.shape for i, im in zip(images.ids, images.images)}


def test_large_cells_are_shrunk_to_the_canonical_size(small_crops, tiny_cfg, tmp_path):
    images, gt = _bigger(*small_crops, 3.0)
    inp = _inputs(tmp_path, images, gt)
    out = scale_images(inp, tiny_cfg)
    sc = read_scale(out.uris["scale"])
    assert 24.0 < sc.diameter < 36.0          # 3 x the crops' 8-12 px
    assert sc.scale == pytest.approx(CANONICAL_DIAMETER / sc.diameter)
    assert arrays.stack_shapes(out.uris["images"]) == [scaled_shape(im.shape, sc.scale)
                                                        for im in images.images]
    info = json.loads(open(out.uris["scale"]).read())
    assert info["polarity"] in ("bright", "dark") and info["n_points"] == len(gt["y"])


def test_a_given_diameter_is_used_and_an_auto_run_without_clicks_is_refused(small_crops,
                                                                            tiny_cfg, tmp_path):
    images, gt = small_crops
    inp = _inputs(tmp_path, images, gt)
    d = 4 * CANONICAL_DIAMETER
    sc = read_scale(scale_images(inp, tiny_cfg.replace(cell_diameter=d)).uris["scale"])
    assert (sc.source, sc.diameter, sc.scale) == ("config", d, 0.25)
    empty = {k: v[:0] for k, v in gt.items()}
    (tmp_path / "b").mkdir()
    with pytest.raises(InvalidInputError, match="cell_diameter"):
        scale_images(_inputs(tmp_path / "b", images, empty), tiny_cfg)


def test_a_run_on_large_cells_reports_everything_in_original_pixels(small_crops, tiny_cfg,
                                                                   tmp_path):
    images, gt = _bigger(*small_crops, 3.0)
    base = crop_inputs(small_crops)
    pts = _bigger(small_crops[0], base.points, 3.0)[1]
    cfg = tiny_cfg.replace(rounds=1, radius=45.0, peak_threshold=None,  # calibrated
                           background_ratio=2.0)
    layout = prepare_run(tmp_path / "run", cfg, RunInputs(images, pts, gt, images, gt))
    metrics = run_loop(layout, cfg, LocalExecutor())
    res = RunResults(layout, cfg)
    row0 = metrics["rounds"][0]
    assert row0["scale"] < 0.6 and row0["cell_diameter"] > 24
    assert row0["peak_threshold"] >= 0.05
    shapes = dict(zip(images.ids, (im.shape for im in images.images)))
    for rnd in (0, 1):
        det = res.detections(rnd)
        assert len(det["y"]) > 0
        for i, y, x in zip(det["image_id"], det["y"], det["x"]):
            H, W = shapes[str(i)]
            assert -0.5 <= y < H - 0.5 and -0.5 <= x < W - 0.5
    # the labels round 0 adds are its candidate peaks, so they are in original pixels
    # too; the background points (round -1) lie inside the images, away from the clicks
    lab = res.training_labels(1)
    kind, rnd = lab["kind"].astype(str), lab["round"]
    cand = tables.read_table(layout.uri(
        res.manifest(0, "predict")["outputs"]["candidates"]["uri"]))
    added = (kind != "annotated") & (rnd == 0)
    assert added.sum() > 0
    for i, y, x in zip(lab["image_id"][added], lab["y"][added], lab["x"][added]):
        m = cand["image_id"].astype(str) == str(i)
        assert np.min(np.hypot(cand["y"][m] - y, cand["x"][m] - x)) < 1e-6
    bg = (rnd == -1) & (kind == "pseudo_neg")
    assert bg.sum() > 0
    clicks = kind == "annotated"
    for i, y, x in zip(lab["image_id"][bg], lab["y"][bg], lab["x"][bg]):
        H, W = shapes[str(i)]
        assert -0.5 <= y < H - 0.5 and -0.5 <= x < W - 0.5
        m = clicks & (lab["image_id"].astype(str) == str(i))
        assert np.min(np.hypot(lab["y"][m] - y, lab["x"][m] - x)) >= 1.5 * row0["cell_diameter"] - 1e-6


def test_detect_applies_the_final_models_scale_and_threshold(small_crops, tiny_cfg, tmp_path):
    """A run on large cells, then `detect` with its final model on the same files: the
    model's meta carries the scale and the calibrated threshold, so the detections are
    the run's own, byte for byte."""
    import tifffile

    from pseudocell.inference import detect_folder
    from pseudocell.validation import load_image_folder

    images, gt = _bigger(*small_crops, 3.0)
    folder = tmp_path / "images"
    folder.mkdir()
    for i, im in zip(images.ids, images.images):
        tifffile.imwrite(folder / f"{i}.tif", im.astype(np.float32))
    files = load_image_folder(folder)
    pts = _bigger(small_crops[0], crop_inputs(small_crops).points, 3.0)[1]
    cfg = tiny_cfg.replace(rounds=0, peak_threshold=None)
    layout = prepare_run(tmp_path / "run", cfg, RunInputs(files, pts, None, None, None))
    metrics = run_loop(layout, cfg, LocalExecutor())
    ck = torch.load(tmp_path / "run" / "final" / "model.pt", weights_only=True)
    assert ck["meta"]["scale"] == metrics["rounds"][0]["scale"] < 0.6
    assert ck["meta"]["peak_threshold"] == metrics["rounds"][0]["peak_threshold"]
    detect_folder(tmp_path / "run", folder, tmp_path / "det", overlays=False)
    got = (tmp_path / "det" / "detections_table.csv").read_text()
    assert got == (tmp_path / "run" / "final" / "detections_table.csv").read_text()
    assert len(got.splitlines()) > 1
    # other cells than the run's: --cell-diameter resizes by 10.5 / diameter instead
    n = detect_folder(tmp_path / "run", folder, tmp_path / "det2", overlays=False,
                      cell_diameter=CANONICAL_DIAMETER)
    assert (tmp_path / "det2" / "detections_table.csv").read_text() != got or n == 0
    with pytest.raises(InvalidInputError, match="--cell-diameter"):
        detect_folder(tmp_path / "run", folder, tmp_path / "det3", cell_diameter=0.5)
