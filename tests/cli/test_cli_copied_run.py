"""The CLI on a copied run directory: `resume` and `export` of the copy write the copy
only (its log, metrics.json, MLflow store and artefacts), never the original."""
from __future__ import annotations

import shutil
from pathlib import Path

from typer.testing import CliRunner

from conftest import write_run_inputs
from pseudocell.cli import app
from pseudocell.config import dump_toml

runner = CliRunner()


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_resume_and_export_of_a_copy_leave_the_original_alone(tmp_path, small_crops,
                                                              tiny_cfg):
    img_dir = write_run_inputs(tmp_path, small_crops)
    (tmp_path / "cfg.toml").write_text(dump_toml(tiny_cfg.replace(rounds=0)))
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", "--images", str(img_dir), "--points",
                              str(tmp_path / "points.csv"), "--out", str(out),
                              "--config", str(tmp_path / "cfg.toml")])
    assert res.exit_code == 0, res.output
    before = snapshot(out)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    log_before = (copy / "pseudocell.log").read_text()

    res = runner.invoke(app, ["resume", str(copy)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["export", str(copy), "--format", "csv", "--out",
                              str(tmp_path / "csv")])
    assert res.exit_code == 0, res.output
    assert snapshot(out) == before
    assert len((copy / "pseudocell.log").read_text()) > len(log_before)
    assert (copy / "metrics.json").stat().st_mtime_ns > before["metrics.json"][0]
    assert (copy / "mlflow.db").exists() and any((copy / "mlartifacts").rglob("metrics.json"))
    new_log = (copy / "pseudocell.log").read_text()[len(log_before):]
    assert "copied or moved" in new_log and str(out) in new_log
    assert "already done (resumed)" in new_log and "stage=" not in new_log  # none re-ran
