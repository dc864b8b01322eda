"""The quality benchmark: datasets declared as data, the baselines, the protocol."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pseudocell.bench.datasets import (DatasetSpec, load_dataset, parse_dataset_arg,
                                       read_dataset_toml)
from pseudocell.bench.methods import tune_log_on_points
from pseudocell.core.pu import estimate_prior_elkan_noto
from pseudocell.bench.quality import markdown_report, run_quality
from pseudocell.errors import InvalidConfigError
from conftest import SHARED, require_data


@pytest.fixture
def crops_dir(tmp_path, brightfield_dir):
    """Four 96x128 crops of real images with their dot images, as a new dataset would be."""
    d = tmp_path / "set"
    d.mkdir()
    for n in (1, 3, 5, 7):
        for kind in ("cells", "dots"):
            with Image.open(brightfield_dir / f"{n:03d}{kind}.png") as im:
                Image.fromarray(np.asarray(im)[120:216, 160:288]).save(d / f"{n:03d}{kind}.png")
    return d


def test_dots_dataset_from_toml_with_split_file(tmp_path, crops_dir):
    (tmp_path / "split.csv").write_text("image,split\n001cells.png,test\n003cells,train\n"
                                        "005cells,train\n007cells,test\n")
    (tmp_path / "d.toml").write_text(
        '[[dataset]]\nname = "crops"\nimages = "set"\npattern = "*cells.png"\ngt = "dots"\n'
        'gt_replace = ["cells", "dots"]\nsplit = "split.csv"\nradius = 12.0\n')
    (spec,) = read_dataset_toml(tmp_path / "d.toml")
    ds = load_dataset(spec)
    assert ds.test.ids == ["001cells", "007cells"] and ds.train.ids == ["003cells", "005cells"]
    with Image.open(crops_dir / "003dots.png") as im:
        n3 = int((np.asarray(im) > 127).sum())
    assert (ds.train_gt["image_id"] == "003cells").sum() == n3
    assert spec.radius == 12.0


def test_label_dataset_tiled_from_cli_string():
    data = SHARED / "stardist-dsb2018-2d"
    require_data(data / "img2d.tif")
    spec = parse_dataset_arg(f"name=dsb,images={data},pattern=img*.tif,gt=labels,"
                             "gt_replace=img:mask,tiles=2,test_fraction=0.25,radius=8")
    ds = load_dataset(spec)
    assert ds.train.ids == ["img2d_t00", "img2d_t01", "img2d_t10"]
    assert ds.test.ids == ["img2d_t11"]
    assert all(im.shape == (256, 256) for im in ds.train.images + ds.test.images)
    # every centroid lands in exactly one tile, inside it
    assert len(ds.train_gt["y"]) + len(ds.test_gt["y"]) == 125
    for t in (ds.train_gt, ds.test_gt):
        assert t["y"].min() >= 0 and t["y"].max() < 256 and t["x"].max() < 256


def test_bad_dataset_specs_are_typed_errors(tmp_path):
    with pytest.raises(InvalidConfigError, match="gt_replace"):
        DatasetSpec(name="x", images=str(tmp_path), gt="dots")
    with pytest.raises(InvalidConfigError, match="unknown key"):
        parse_dataset_arg("name=x,images=y,colour=red")
    with pytest.raises(InvalidConfigError, match="no \\[\\[dataset\\]\\]"):
        (tmp_path / "e.toml").write_text("x = 1\n")
        read_dataset_toml(tmp_path / "e.toml")


def test_elkan_noto_prior_recovers_a_known_mixture():
    rng = np.random.default_rng(0)
    pos = rng.normal(2.0, 1.0, size=(300, 5))
    unl = np.concatenate([rng.normal(2.0, 1.0, size=(600, 5)), rng.normal(-2.0, 1.0, size=(400, 5))])
    assert abs(estimate_prior_elkan_noto(pos, unl, seed=0) - 0.6) < 0.1


def test_log_tuned_on_points_finds_polarity_and_scale():
    from pseudocell.validation import ImageSet

    rng = np.random.default_rng(1)
    im = np.full((80, 80), 0.8, np.float32)
    yy, xx = np.mgrid[:80, :80]
    centres = rng.uniform(10, 70, size=(8, 2))
    for y, x in centres:  # dark discs of radius 6 on a bright background
        im[(yy - y) ** 2 + (xx - x) ** 2 <= 36] = 0.2
    pts = {"image_id": np.array(["a"] * 4, object), "y": centres[:4, 0], "x": centres[:4, 1]}
    params = tune_log_on_points(ImageSet(["a"], [im], ["a"]), pts)
    assert params["polarity"] == "dark"
    assert params["sigma"] in (4.0, 5.0)  # radius 6 ≈ sigma * sqrt(2)


def test_protocol_end_to_end_on_tiny_data(tmp_path, crops_dir, tiny_cfg):
    spec = DatasetSpec(name="crops", images=str(crops_dir), pattern="*cells.png", gt="dots",
                       gt_replace=("cells", "dots"), test_fraction=0.25, radius=15.0)
    result = run_quality([spec], cfg=tiny_cfg, seeds=(0, 1), keep=0.3, out_dir=tmp_path / "b")
    summ = result["summary"]["crops"]
    seeds = result["datasets"]["crops"]["seeds"]
    for m in ("supervised_partial", "masked_round0", "log", "pu_direct", "pseudocell", "full"):
        f1 = [seeds[s]["scores"][m]["f1"] for s in ("0", "1")]
        assert summ[m]["f1"]["mean"] == pytest.approx(np.mean(f1))
        assert summ[m]["f1"]["sd"] == pytest.approx(np.std(f1, ddof=1))
    # both seeds keep the same number of points (30 % per image), drawn independently
    assert seeds["0"]["n_points_kept"] == seeds["1"]["n_points_kept"]
    # the pseudocell score equals the last round's held-out figure of its own run
    assert seeds["0"]["scores"]["pseudocell"]["f1"] == pytest.approx(
        seeds["0"]["rounds"][-1]["heldout@15/f1"])
    assert seeds["0"]["scores"]["masked_round0"]["f1"] == pytest.approx(
        seeds["0"]["rounds"][0]["heldout@15/f1"])
    report = markdown_report(result)
    assert "| pseudocell |" in report and "crops F1 (mean ± sd)" in report


def test_classical_label_free_finds_discs_with_no_label():
    from pseudocell.bench.label_free import classical_label_free
    from pseudocell.core.metrics import match_points

    rng = np.random.default_rng(0)
    im = rng.normal(0.1, 0.02, (120, 120)).astype(np.float32)
    yy, xx = np.mgrid[:120, :120]
    centres = np.array([(20 + 25 * a, 20 + 25 * b) for a in range(4) for b in range(4)], float)
    for y, x in centres:
        im[(yy - y) ** 2 + (xx - x) ** 2 <= 36] = 0.9
    found = classical_label_free([im, 1 - im], "bright")
    assert match_points(found[0], centres, 3.0).tp == 16 and len(found[0]) == 16
    assert match_points(classical_label_free([1 - im], "dark")[0], centres, 3.0).tp == 16


def test_label_free_protocol_end_to_end_on_tiny_data(tmp_path, crops_dir, tiny_cfg):
    from pseudocell.bench.label_free import markdown_report as lf_report
    from pseudocell.bench.label_free import run_label_free

    spec = DatasetSpec(name="crops", images=str(crops_dir), pattern="*cells.png", gt="dots",
                       gt_replace=("cells", "dots"), test_fraction=0.25, radius=15.0)
    cfg = tiny_cfg.replace(psm_iters=10, psm_batch=4, psm_crop=32)
    result = run_label_free([spec], cfg=cfg, seeds=(0,), keep=0.3, out_dir=tmp_path / "lf",
                            reference_dir=tmp_path / "ref")
    s0 = result["datasets"]["crops"]["seeds"]["0"]
    assert set(s0["scores"]) == {"classical", "psm_points", "psm_loop", "partial_loop", "full"}
    assert s0["scores"]["psm_loop"]["f1"] == pytest.approx(s0["rounds"][-1]["heldout@15/f1"])
    # the reference rows are the quality benchmark's own result for that seed
    ref = run_quality([spec], cfg=tiny_cfg, seeds=(0,), keep=0.3, out_dir=tmp_path / "ref",
                      methods=("full",))["datasets"]["crops"]["seeds"]["0"]["scores"]
    assert s0["scores"]["partial_loop"] == ref["pseudocell"] and s0["scores"]["full"] == ref["full"]
    report = lf_report(result)
    assert "| psm_loop |" in report and "psm_loop / full" in report
