"""`pseudocell run` → `resume` → `detect` → `evaluate` on real crops saved as files."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from typer.testing import CliRunner

from conftest import _descendants, kill_pids, write_run_inputs

from pseudocell.cli import app
from pseudocell.config import dump_toml

runner = CliRunner()


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is no zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")



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
def test_ui_serves_the_run_and_sigterm_stops_every_process_it_started(tmp_path, small_crops,
                                                                       tiny_cfg):
    """`pseudocell ui RUN` serves the run's own store on 127.0.0.1, prints the page of the
    run's per-round metrics, and a SIGTERM to it leaves no process of the server behind."""
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
                            start_new_session=True, text=True)
    lines: list[str] = []
    children: set[int] = set()
    try:
        for line in proc.stdout:  # blocks until the server says it listens (or exits)
            lines.append(line)
            if f"Uvicorn running on http://127.0.0.1:{port}" in line:
                break
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?" \
              "experiment_name=ui-test"
        body = json.loads(urllib.request.urlopen(url, timeout=30).read())
        exp = body["experiment"]
        assert {t["key"]: t["value"] for t in exp.get("tags", [])}[
            "mlflow.experimentKind"] == "custom_model_development"
        run_id = json.loads((out / "tracking" / "state.json").read_text())
        page = [ln for ln in lines if "per-round metrics:" in ln]
        assert page and f"#/experiments/{exp['experiment_id']}/runs/" in page[0] \
            and page[0].rstrip().endswith("/model-metrics"), "".join(lines)
        assert run_id
        children = _descendants(proc.pid)
        assert children, "the UI started no server process"
        os.kill(proc.pid, signal.SIGTERM)  # the command itself, not its group
        assert proc.wait(timeout=60) == 0
        alive = {p for p in children if _running(p)}
        assert not alive, f"left running after SIGTERM: {alive}"
    finally:
        kill_pids(_descendants(proc.pid) | children | {proc.pid})


# slow (30 s: a CLI process start-up); no fast twin for SIGTERM's clean stop, the fast tier
# resumes a SIGKILLed local driver (test_orchestrator_loop)
@pytest.mark.slow
def test_sigterm_stops_a_run_cleanly_and_resume_finishes_it(tmp_path, small_crops, tiny_cfg):
    """SIGTERM (here sent by the driver to itself as round 0's train_pu starts: a fault
    hook, no timing) unwinds the run: exit code 143, the MLflow run is KILLED, and
    `pseudocell resume` finishes it."""
    img_dir = write_run_inputs(tmp_path, small_crops)
    (tmp_path / "cfg.toml").write_text(dump_toml(tiny_cfg.replace(rounds=1)))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "pseudocell", "--quiet", "run", "--images", str(img_dir),
           "--points", str(tmp_path / "points.csv"), "--out", str(out), "--config",
           str(tmp_path / "cfg.toml")]
    env = {**os.environ, "PSEUDOCELL_FAULT": "term_driver:0/train_pu"}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 128 + signal.SIGTERM, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    log = (out / "pseudocell.log").read_text()
    assert "stopped by SIGTERM" in log
    events = [json.loads(x) for x in (out / "tracking" / "events.jsonl").read_text().splitlines()]
    assert [e["status"] for e in events if e["type"] == "status" and e["run"] == "parent"][-1] \
        == "KILLED"
    assert not (out / "round_000" / "train_pu" / "_manifest.json").exists()
    done = runner.invoke(app, ["--quiet", "resume", str(out)])  # in this process: no second start-up
    assert done.exit_code == 0, done.output
    assert (out / "final" / "detections.csv").exists()
