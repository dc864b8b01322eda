"""Several Ray nodes (``ray.cluster_utils.Cluster``, in a subprocess): actors go where
their resources are, and a node removed while one of its shards is running costs a
re-run of that stage elsewhere, not the run or its result."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import output_digests
from pseudocell.data.points import hide_points
from pseudocell.orchestrator.executors import LocalExecutor
from pseudocell.validation import RunInputs
from pseudocell.orchestrator.run import prepare_run, run_loop

pytestmark = [pytest.mark.ray, pytest.mark.slow]
import ray  # noqa: E402,F401 (part of `make test`: missing means a broken install)

SCRIPT = Path(__file__).with_name("_multinode.py")


def test_actors_follow_resources_and_a_lost_node_reruns_its_stage(small_crops, tiny_cfg,
                                                                  tmp_path):
    images, gt = small_crops
    inputs = RunInputs(images, hide_points(gt, 0.3, seed=0), gt, images, gt)
    local = prepare_run(tmp_path / "local", tiny_cfg, inputs)
    run_loop(local, tiny_cfg, LocalExecutor())
    remote = prepare_run(tmp_path / "multinode", tiny_cfg, inputs)

    res = subprocess.run([sys.executable, str(SCRIPT), remote.root], capture_output=True,
                         text=True, timeout=420)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    # training actors only on the node with `gpu_node`, predictors only on `cpu_node` nodes
    assert out["placement"]["DetectorTrainer"] == ["gpu"]
    assert out["placement"]["PUFeatureLearner"] == ["gpu"]
    assert "watcher_error" not in out, out["watcher_error"]
    assert out["removed"] in ("cpu-a", "cpu-b")
    survivor = {"cpu-a": "cpu-b", "cpu-b": "cpu-a"}[out["removed"]]
    # the shard lost with its node made the executor run round 0's predict again, once,
    # with new predictors, all on the surviving node
    assert out["retries"] == ["round 0 stage predict:"]
    assert out["placement"]["Predictor"] == [survivor, survivor]
    starts = [tuple(e) for e in out["events"] if e[2] == "start"]
    assert starts.count((0, "predict", "start")) == 1  # one stage, retried inside it
    assert out["digests"] == output_digests(local, tiny_cfg)  # nothing lost or changed
