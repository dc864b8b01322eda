"""`pseudocell run` → `resume` → `detect` → `evaluate` on real crops saved as files."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import write_run_inputs

from typer.testing import CliRunner

from pseudocell.cli import app
from pseudocell.config import dump_toml

runner = CliRunner()



def test_run_resume_detect_evaluate(tmp_path, small_crops, tiny_cfg):
    img_dir = write_run_inputs(tmp_path, small_crops)
    (tmp_path / "cfg.toml").write_text(dump_toml(tiny_cfg))
    out = tmp_path / "run"
    args = ["run", "--images", str(img_dir), "--points", str(tmp_path / "points.csv"),
            "--out", str(out), "--config", str(tmp_path / "cfg.toml"),
            "--gt", str(tmp_path / "gt.csv")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "train @15" in res.output and "round" in res.output  # the per-round table
    assert "run summary" in res.output and "pseudocell ui" in res.output
    assert "mlflow.store" not in res.output  # no database set-up chatter
    assert (out / "final" / "detections.csv").exists()
    assert "round 0: train_pu" in (out / "pseudocell.log").read_text()
    first = (out / "final" / "detections_table.csv").read_text()
    state = json.loads((out / "tracking" / "state.json").read_text())
    run_id = state["targets"][f"sqlite:///{out.resolve() / 'mlflow.db'}"]["runs"]["parent"]

    res = runner.invoke(app, ["resume", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "final" / "detections_table.csv").read_text() == first
    assert run_id in res.output  # the same MLflow run continues

    res = runner.invoke(app, ["export", str(out), "--format", "geojson", "--round", "0",
                              "--out", str(tmp_path / "qupath")])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "qupath").glob("*/*.geojson"))) == 2 * 3

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ui_serves_the_run(tmp_path, small_crops, tiny_cfg):
    """`pseudocell ui RUN` starts MLflow's UI on 127.0.0.1 over the run's own store."""

    img_dir = write_run_inputs(tmp_path, small_crops)
    (tmp_path / "cfg.toml").write_text(dump_toml(tiny_cfg.replace(rounds=0)))
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", "--images", str(img_dir), "--points",
                              str(tmp_path / "points.csv"), "--out", str(out), "--config",
                              str(tmp_path / "cfg.toml"), "--experiment", "ui-test"])
    assert res.exit_code == 0, res.output
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pseudocell", "ui", str(out), "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=ui-test"
        deadline, body = time.monotonic() + 90, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                body = json.loads(urllib.request.urlopen(url, timeout=2).read())
                break
            except OSError:
                time.sleep(0.5)
        assert body is not None, proc.stdout.read().decode() if proc.poll() is not None else "timeout"
        assert body["experiment"]["name"] == "ui-test"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
