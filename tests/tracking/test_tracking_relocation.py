"""MLflow record of a copied run: the copy gets its own record in its own ``mlflow.db``
and ``mlartifacts``; the original's store is never opened."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import crop_inputs
from pseudocell.orchestrator.executors import LocalExecutor
from pseudocell.orchestrator.run import prepare_run, resume, run_loop
from pseudocell.storage.layout import RunLayout
from pseudocell.tracking import Tracker, default_tracking_uri

from mlflow.tracking import MlflowClient  # noqa: E402 (part of `make test`)


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, small_crops, tiny_cfg):
    layout = prepare_run(tmp_path_factory.mktemp("tracked") / "run", tiny_cfg,
                         crop_inputs(small_crops))
    tracker = Tracker(layout)
    run_loop(layout, tiny_cfg, LocalExecutor(), tracker=tracker)
    return layout, tracker


@pytest.mark.parametrize("old_state", [False, True], ids=["state-names-root", "older-state"])
def test_a_resumed_copy_records_into_its_own_store(tracked, tmp_path, old_state, caplog):
    layout, orig_tracker = tracked
    orig = Path(layout.root)
    before = snapshot(orig)
    copy = tmp_path / "copy"
    shutil.copytree(orig, copy)
    if old_state:  # a state.json written before it named its run directory
        path = copy / "tracking" / "state.json"
        st = json.loads(path.read_text())
        del st["root"]
        path.write_text(json.dumps(st))
    tracker = Tracker(RunLayout(str(copy)))
    assert tracker.uri == default_tracking_uri(copy)
    assert "copied or moved" in caplog.text and str(orig) in caplog.text
    resume(copy, LocalExecutor(), tracker=tracker)
    assert snapshot(orig) == before  # the original's mlflow.db and artefacts included

    client = MlflowClient(tracker.uri)
    exp = client.get_experiment_by_name(tracker.experiment)
    assert Path(exp.artifact_location.removeprefix("file://")) == copy / "mlartifacts"
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [p.info.run_id for p in parents] == [tracker.run_id]
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["pseudocell_run_dir"] == str(copy)
    assert parent.data.tags["pseudocell_uid"] != orig_tracker.journal.state["uid"]
    assert parent.info.artifact_uri.removeprefix("file://").startswith(str(copy / "mlartifacts"))
    assert {a.path for a in client.list_artifacts(tracker.run_id)} >= {"metrics.json"}
    assert sorted(r.info.run_name for r in runs if r is not parent) == ["round 0", "round 1"]
    # the copied store (its artefact location is the original's) is kept aside, unused
    aside = list((copy / "tracking").glob("relocated-*"))
    assert len(aside) == 1 and (aside[0] / "mlflow.db").exists()
    # a second open of the copy is not a relocation again
    caplog.clear()
    again = Tracker(RunLayout(str(copy)))
    assert again.run_id == tracker.run_id and "copied or moved" not in caplog.text


def test_an_explicit_tracking_uri_is_kept(tracked, tmp_path):
    layout, _ = tracked
    copy = tmp_path / "copy"
    shutil.copytree(layout.root, copy)
    tracker = Tracker(RunLayout(str(copy)), tracking_uri="http://127.0.0.1:1")
    assert tracker.uri == "http://127.0.0.1:1"
    assert tracker.journal.state.get("targets", {}) == {}  # no run ids of the original's


@pytest.mark.parametrize("state, uri", [
    ({"root": "/gone/run", "uri": "sqlite:////gone/run/mlflow.db"}, "sqlite:///{copy}/mlflow.db"),
    ({"root": "/gone/run", "uri": "sqlite:////gone/run/sub/x.db"}, "sqlite:///{copy}/sub/x.db"),
    ({"uri": "sqlite:////gone/run/mlflow.db"}, "sqlite:///{copy}/mlflow.db"),  # older state
    ({"root": "/gone/run", "uri": "sqlite:////shared/all.db"}, "sqlite:////shared/all.db"),
    ({"root": "/gone/run", "uri": "http://mlflow.lab:5000"}, "http://mlflow.lab:5000"),
])
def test_a_store_inside_the_other_directory_is_re_pointed_others_are_kept(state, uri,
                                                                          tmp_path):
    copy = tmp_path / "copy"
    (copy / "tracking").mkdir(parents=True)
    old = {"uid": "u0", "experiment": "e", "nest_under": "r0",
           "targets": {state["uri"]: {"experiment_id": "1", "runs": {"parent": "r1"},
                                      "pushed": 9}}, **state}
    (copy / "tracking" / "state.json").write_text(json.dumps(old))
    tr = Tracker(RunLayout(str(copy)))
    assert tr.uri == uri.format(copy=copy)
    st = json.loads((copy / "tracking" / "state.json").read_text())
    assert st["root"] == str(copy) and st["uid"] != "u0"
    assert "targets" not in st and "nest_under" not in st and tr.pending() == 0
