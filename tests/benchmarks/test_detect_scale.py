"""Helpers of benchmarks/detect_scale.py: the synthesised 512×512 images, the comparison
of two detect outputs, the steady (marginal) rate. No timing is asserted."""
from __future__ import annotations

import numpy as np
from PIL import Image

import _scripts  # noqa: F401 (puts benchmarks/ on the path)
import detect_scale as ds


def test_synthesised_images_are_512_square_grey_and_reproducible(tmp_path, brightfield_dir):
    a = ds.synthesise(tmp_path / "a", 4, data_dir=brightfield_dir, seed=1)
    b = ds.synthesise(tmp_path / "b", 4, data_dir=brightfield_dir, seed=1)
    for p, q in zip(a, b):
        im = np.asarray(Image.open(p))
        assert im.shape == (512, 512) and im.dtype == np.uint8 and im.std() > 0
        assert p.read_bytes() == q.read_bytes()
    assert len({p.read_bytes() for p in a}) == 4
    sub = ds.subset(a, 2, tmp_path / "two")
    assert sorted(p.name for p in sub.iterdir()) == [a[0].name, a[1].name]
    assert (sub / a[0].name).stat().st_ino == a[0].stat().st_ino  # a hard link, no copy


def _det(folder, rows):
    folder.mkdir()
    body = "".join(f"{i},{y},{x},{v}\n" for i, y, x, v in rows)
    (folder / "detections_table.csv").write_text("image,y,x,value\n" + body)
    (folder / "detections.csv").write_text("index,axis-0,axis-1,axis-2\n")


def test_compare_tells_identical_from_last_digit_values_from_other_points(tmp_path):
    _det(tmp_path / "a", [("i", "1.00", "2.00", "0.5")])
    _det(tmp_path / "b", [("i", "1.00", "2.00", "0.5")])
    _det(tmp_path / "c", [("i", "1.00", "2.00", "0.500001")])
    _det(tmp_path / "d", [("i", "1.00", "2.50", "0.5")])
    _det(tmp_path / "e", [("i", "1.01", "2.00", "0.5")])
    assert ds._compare(tmp_path / "a", tmp_path / "b")["identical"]
    c = ds._compare(tmp_path / "a", tmp_path / "c")
    assert not c["identical"] and c["same_points"] and c["max_value_diff"] < 2e-6
    assert not ds._compare(tmp_path / "a", tmp_path / "d")["same_points"]
    e = ds._compare(tmp_path / "a", tmp_path / "e")  # a position rounded the other way
    assert e["same_points"] and abs(e["max_position_diff"] - 0.01) < 1e-9


def test_marginal_rate_leaves_out_the_start_up():
    rows = [{"engine": "local", "n_images": 100, "wall_s": 30.0},
            {"engine": "ray", "n_images": 100, "wall_s": 40.0},
            {"engine": "local", "n_images": 1100, "wall_s": 530.0}]
    ds._marginal(rows)
    assert rows[2]["marginal_images_per_s"] == 2.0
    assert "marginal_images_per_s" not in rows[0] and "marginal_images_per_s" not in rows[1]


def test_memory_by_tenth_of_the_images_written():
    series = [(0.0, 100.0, 0), (5.0, 300.0, 0), (10.0, 350.0, 100), (15.0, 340.0, 150),
              (20.0, 360.0, 999), (25.0, 200.0, 1000)]
    assert ds.pss_by_tenth(series, 1000) == [300.0, 350.0] + [None] * 7 + [360.0]


def test_bare_rates_of_both_shapes_run_on_a_real_model(tmp_path, brightfield_dir):
    """The bare model in one process and in two one-thread processes started together
    (what the Ray engine is measured against): both report a positive rate over the
    same images. No timing is asserted."""
    import torch

    from pseudocell.core.detector import UNet

    net = UNet(1, (4, 8))
    model = tmp_path / "model.pt"
    torch.save({"state_dict": net.state_dict(), "meta": {"widths": [4, 8], "scale": 1.0}},
               model)
    paths = ds.synthesise(tmp_path / "im", 2, data_dir=brightfield_dir)
    one = ds.bare_throughput(model, paths, repeats=1, threads=1)
    par = ds.bare_parallel(model, paths, 2, repeats=1)
    assert one["n_images"] == 2 and one["images_per_s"] > 0 and one["torch_threads"] == 1
    assert par["processes"] == 2 and par["images_per_s"] > 0 and par["seconds"] > 0
