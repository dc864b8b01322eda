"""`pseudocell run` → `resume` → `detect` → `evaluate` on real crops saved as files."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from pseudocell.cli import app
from pseudocell.config import dump_toml
from pseudocell.orchestrator.demo import hide_points

runner = CliRunner()


def _write_inputs(tmp: Path, small_crops):
    images, gt = small_crops
    img_dir = tmp / "images"
    img_dir.mkdir()
    for i, im in zip(images.ids, images.images):
        Image.fromarray((np.clip(im, 0, 1) * 255).astype(np.uint8)).save(img_dir / f"{i}.png")

    def write(path: Path, table) -> None:
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image", "y", "x"])
            for i, y, x in zip(table["image_id"], table["y"], table["x"]):
                w.writerow([f"{i}.png", y, x])

    write(tmp / "points.csv", hide_points(gt, 0.3, seed=0))
    write(tmp / "gt.csv", gt)
    return img_dir


def test_run_resume_detect_evaluate(tmp_path, small_crops, tiny_cfg):
    img_dir = _write_inputs(tmp_path, small_crops)
    (tmp_path / "cfg.toml").write_text(dump_toml(tiny_cfg))
    out = tmp_path / "run"
    args = ["run", "--images", str(img_dir), "--points", str(tmp_path / "points.csv"),
            "--out", str(out), "--config", str(tmp_path / "cfg.toml"),
            "--gt", str(tmp_path / "gt.csv")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "train @15" in res.output and "round" in res.output  # the per-round table
    assert (out / "final" / "detections.csv").exists()
    first = (out / "final" / "detections_table.csv").read_text()

    res = runner.invoke(app, ["resume", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "final" / "detections_table.csv").read_text() == first

    res = runner.invoke(app, ["detect", "--model", str(out), "--images", str(img_dir),
                              "--out", str(tmp_path / "det")])
    assert res.exit_code == 0, res.output
    # the final detector applied again to the same images gives the run's detections
    assert (tmp_path / "det" / "detections_table.csv").read_text() == first
    assert len(list((tmp_path / "det" / "overlays").glob("*.png"))) == 3

    res = runner.invoke(app, ["evaluate", "--pred", str(tmp_path / "det" / "detections_table.csv"),
                              "--gt", str(tmp_path / "gt.csv"), "--radius", "15"])
    assert res.exit_code == 0, res.output
    assert "F1=" in res.output

    # same --out with a different config is refused, and nothing in it changes
    before = sorted((p.relative_to(out).as_posix(), p.stat().st_mtime_ns)
                    for p in out.rglob("*"))
    res = runner.invoke(app, args + ["--alpha", "0.2"])
    assert res.exit_code == 1
    assert "different config" in res.output
    assert sorted((p.relative_to(out).as_posix(), p.stat().st_mtime_ns)
                  for p in out.rglob("*")) == before
