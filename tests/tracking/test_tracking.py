"""MLflow tracking of a run, read back with ``MlflowClient``: params, per-round metric
series, artefacts, one parent run across resume, offline journal + sync, GeoJSON."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from conftest import FailOnce, crop_inputs
from pseudocell.errors import StageError
from pseudocell.orchestrator.executors import LocalExecutor
from pseudocell.orchestrator.run import prepare_run, resume, run_loop
from pseudocell.tracking import (Tracker, default_tracking_uri, metric_name,
                                              stage_metrics, sync)

import mlflow  # noqa: E402 (part of `make test`: missing means a broken install)
from mlflow.tracking import MlflowClient  # noqa: E402


def _runs(client: MlflowClient, tracker: Tracker):
    """(parent runs, child runs by name) of the tracker's experiment."""
    exp = client.get_experiment_by_name(tracker.experiment).experiment_id
    runs = client.search_runs([exp], max_results=100)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.info.run_name: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    return parents, children


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for a in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, a.path) if a.is_dir else {a.path}
    return out


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, small_crops, tiny_cfg):
    layout = prepare_run(tmp_path_factory.mktemp("tracked") / "run", tiny_cfg,
                         crop_inputs(small_crops))
    tracker = Tracker(layout)
    events = []
    metrics = run_loop(layout, tiny_cfg, LocalExecutor(), tracker=tracker,
                       progress=events.append)
    return layout, tracker, metrics, events, MlflowClient(tracker.uri)


def test_params_are_the_whole_resolved_config(tracked, tiny_cfg):
    layout, tracker, _, _, client = tracked
    assert tracker.uri == default_tracking_uri(layout.root)
    assert Path(layout.root, "mlflow.db").exists()
    params = client.get_run(tracker.run_id).data.params
    expected = {k: json.dumps(v) if isinstance(v, (list, tuple)) else str(v)
                for k, v in tiny_cfg.to_dict().items()}
    assert params == expected
    assert params["alpha"] == "0.1" and params["rounds"] == "1"


def test_parent_has_one_point_per_round_and_finished(tracked, tiny_cfg):
    _, tracker, metrics, _, client = tracked
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    rows = metrics["rounds"]
    for key in ("train@15/f1", "train@8/precision", "heldout@15/recall", "labels_pos"):
        hist = client.get_metric_history(tracker.run_id, metric_name(key))
        assert [m.step for m in hist] == [0, 1], key
        np.testing.assert_allclose([m.value for m in hist], [r[key] for r in rows])
    # pseudo-labels are selected in round 0 only (round 1 is the final detector)
    for key in ("n_pseudo_pos", "n_pseudo_neg", "pseudo_pos_precision",
                "pseudo_neg_background_fraction"):
        hist = client.get_metric_history(tracker.run_id, key)
        assert [(m.step, m.value) for m in hist] == [(0, pytest.approx(rows[0][key]))]


def test_one_child_run_per_round_with_stage_series(tracked, tiny_cfg):
    _, tracker, _, _, client = tracked
    parents, children = _runs(client, tracker)
    assert [p.info.run_id for p in parents] == [tracker.run_id]
    assert sorted(children) == ["round 0", "round 1"]
    r0, r1 = children["round 0"], children["round 1"]
    assert r0.data.tags["mlflow.parentRunId"] == tracker.run_id
    assert r0.info.status == r1.info.status == "FINISHED"
    risk = client.get_metric_history(r0.info.run_id, "pu/risk")
    assert [m.step for m in risk] == list(range(1, tiny_cfg.pu_epochs + 1))
    loss = client.get_metric_history(r1.info.run_id, "detector/loss")
    assert [m.step for m in loss] == [tiny_cfg.detector_iters]  # 20 steps: one window
    stages = {k.split("/")[1] for k in r0.data.metrics if k.startswith("time/")}
    assert stages == {"scale", "background", "train_detector", "predict", "extract_patches",
                      "train_pu", "rank", "select", "update_labels", "evaluate"}
    assert "pu/risk" not in r1.data.metrics  # the final round trains no PU model
    assert r0.data.metrics["select/n_pseudo_pos"] == r0.data.metrics["n_pseudo_pos"]


def test_artefacts(tracked, small_crops):
    _, tracker, _, _, client = tracked
    ids = small_crops[0].ids
    parent = _artifacts(client, tracker.run_id)
    assert {"config.toml", "metrics.json", "plots/prf_vs_round.png", "model/model.pt",
            "detections/detections.csv", "detections/labels_table.csv"} <= parent
    assert {f"overlays/{i}.png" for i in ids} <= parent
    assert {f"detections/detections_geojson/{i}.geojson" for i in ids} <= parent
    _, children = _runs(client, tracker)
    r0 = _artifacts(client, children["round 0"].info.run_id)
    assert {"detector/model.pt", "detections/detections_napari.csv",
            "labels/labels_napari.csv"} <= r0
    assert {f"overlays/{i}.png" for i in ids} <= r0
    assert {f"labels/labels_geojson/{i}.geojson" for i in ids} <= r0


def test_training_stages_report_progress(tracked, tiny_cfg):
    _, _, _, events, _ = tracked
    pu = [(e.done, e.total) for e in events if e.status == "progress" and e.stage == "train_pu"]
    assert pu == [(k, tiny_cfg.pu_epochs) for k in range(1, tiny_cfg.pu_epochs + 1)]
    det = [e for e in events if e.status == "progress" and e.stage == "train_detector"]
    assert [(e.round, e.done, e.total) for e in det] == [(0, 20, 20), (1, 20, 20)]
    assert all(np.isfinite(e.value) for e in det)


def test_resume_keeps_one_parent_and_no_duplicate_steps(tmp_path, small_crops, tiny_cfg):
    layout = prepare_run(tmp_path / "run", tiny_cfg, crop_inputs(small_crops))
    with pytest.raises(StageError):
        run_loop(layout, tiny_cfg, FailOnce((0, "train_pu")), tracker=Tracker(layout))
    tracker = Tracker(layout)
    client = MlflowClient(tracker.uri)
    failed = client.get_run(tracker.run_id)
    assert failed.info.status == "FAILED"
    assert "simulated crash" in failed.data.tags["pseudocell_error"]
    _, children = _runs(client, tracker)
    assert children["round 0"].info.status == "FAILED"
    # the stages before the crash were logged once
    assert len(client.get_metric_history(children["round 0"].info.run_id,
                                         "time/train_detector")) == 1

    resume(layout.root, LocalExecutor(), tracker=Tracker(layout))
    resume(layout.root, LocalExecutor(), tracker=Tracker(layout))  # a finished run again
    parents, children = _runs(client, tracker)
    assert [p.info.run_id for p in parents] == [tracker.run_id]
    assert parents[0].info.status == "FINISHED"
    assert sorted(children) == ["round 0", "round 1"]
    assert all(c.info.status == "FINISHED" for c in children.values())
    for run in [parents[0], *children.values()]:
        for key in run.data.metrics:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert len(steps) == len(set(steps)), (run.info.run_name, key, steps)
    # every stage of round 0 shows up once, the crashed one included (run by the resume)
    r0 = children["round 0"].info.run_id
    assert len(client.get_metric_history(r0, "time/train_pu")) == 1
    assert [m.step for m in client.get_metric_history(r0, "pu/risk")] == \
        list(range(1, tiny_cfg.pu_epochs + 1))


def test_unreachable_server_warns_once_and_sync_pushes_later(tmp_path, small_crops, tiny_cfg,
                                                             caplog):
    layout = prepare_run(tmp_path / "run", tiny_cfg, crop_inputs(small_crops))
    tracker = Tracker(layout, tracking_uri="http://127.0.0.1:9", experiment="offline-test")
    with caplog.at_level(logging.WARNING, logger="pseudocell"):
        metrics = run_loop(layout, tiny_cfg, LocalExecutor(), tracker=tracker)
    assert (Path(layout.final) / "detections.csv").exists()
    warnings = [r for r in caplog.records if "tracking" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "pseudocell sync" in warnings[0].getMessage()
    assert tracker.offline and tracker.pending() > 0

    other = f"sqlite:///{tmp_path / 'later.db'}"
    run_id, n = sync(layout.root, tracking_uri=other)
    assert n > 0
    client = MlflowClient(other)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "offline-test"
    hist = client.get_metric_history(run_id, "heldout_15px/f1")
    np.testing.assert_allclose([m.value for m in hist],
                               [r["heldout@15/f1"] for r in metrics["rounds"]])
    assert sync(layout.root, tracking_uri=other) == (run_id, 0)  # nothing left


def test_journal_drops_a_line_cut_by_a_crash(tmp_path, small_crops, tiny_cfg):
    from pseudocell.storage.layout import RunLayout

    root = tmp_path / "run"
    root.mkdir()
    tr = Tracker(RunLayout(str(root)), tracking_uri="http://127.0.0.1:9")
    tr.journal.append({"key": "a", "run": "parent", "type": "tags", "tags": {"x": "1"}})
    with open(tr.journal.events_path, "a") as f:
        f.write('{"seq": 1, "key": "b", "ru')
    again = Tracker(RunLayout(str(root)))
    assert [e["key"] for e in again.journal.events] == ["a"]
    assert again.uri == "http://127.0.0.1:9"  # the run's URI is remembered
    assert not again.journal.append({"key": "a", "run": "parent", "type": "tags", "tags": {}})


def test_metric_names_and_stage_series():
    assert metric_name("train@15/f1") == "train_15px/f1"
    assert metric_name("heldout@7.5/precision") == "heldout_7.5px/precision"
    assert metric_name("n_pseudo_pos") == "n_pseudo_pos"
    from pseudocell.stages.loop import PARTIAL

    spec = {s.name: s for s in PARTIAL.all_stages}
    got = stage_metrics(2, spec["train_detector"], {"detector_loss": [0.5, 0.25],
                                              "detector_loss_steps": [50, 70],
                                              "n_pos": 3, "n_neg": 0}, 1.5)
    assert got == [("time/train_detector", 1.5, 2), ("detector/loss", 0.5, 50),
                   ("detector/loss", 0.25, 70), ("train_detector/n_pos", 3.0, 2),
                   ("train_detector/n_neg", 0.0, 2)]
    got = stage_metrics(0, spec["train_pu"], {"pu_risk": [0.3, 0.2], "pu_prior": 0.4,
                                        "pu_skipped": False}, 2.0)
    assert got == [("time/train_pu", 2.0, 0), ("pu/risk", 0.3, 1), ("pu/risk", 0.2, 2),
                   ("train_pu/pu_prior", 0.4, 0), ("train_pu/pu_skipped", 0.0, 0)]
    # evaluation metrics belong to the round's row, not to the stage's scalars
    assert stage_metrics(1, spec["evaluate"], {"n_pseudo_pos": 4, "round": 1}, 0.5) == \
        [("time/evaluate", 0.5, 1)]


@pytest.mark.parametrize("error, status", [(RuntimeError("boom"), "FAILED"),
                                           (KeyboardInterrupt(), "KILLED"),
                                           (SystemExit(0), "KILLED")])  # Tune stopping a trial
def test_failure_status_names_the_cause(tmp_path, error, status):
    from pseudocell.storage.layout import RunLayout

    root = tmp_path / "run"
    root.mkdir()
    tr = Tracker(RunLayout(str(root)))
    tr.fail(error, rnd=0)
    client = MlflowClient(tr.uri)
    run = client.get_run(tr.run_id)
    assert (tr.last_status(), run.info.status) == (status, status)
    assert run.data.tags["pseudocell_error"].startswith(type(error).__name__)


def test_ui_prints_the_runs_pages_and_a_failing_server_is_an_error(tracked, monkeypatch):
    """`pseudocell ui` (server stubbed): the experiment is a model-training one, the page
    of the run's per-round metrics is printed, and a server that exits with an error makes
    the command fail instead of exiting 0."""
    from typer.testing import CliRunner

    import pseudocell.cli.processes as processes
    from pseudocell.cli import app

    layout, tracker, _, _, client = tracked
    calls = []
    monkeypatch.setattr(processes, "run_group", lambda cmd, env=None: calls.append(cmd) or 1)
    res = CliRunner().invoke(app, ["ui", layout.root, "--port", "5123"])
    assert res.exit_code == 1
    assert "the MLflow UI stopped with exit code 1" in res.output
    exp = client.get_experiment_by_name(tracker.experiment)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    page = f"http://127.0.0.1:5123/#/experiments/{exp.experiment_id}/runs/{tracker.run_id}" \
           "/model-metrics"
    assert page in res.output
    assert calls and calls[0][calls[0].index("--port") + 1] == "5123"
