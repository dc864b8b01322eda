"""The Ray executor gives the local executor's outputs, survives dead actors and killed
drivers, and detects corrupted stores (issue 5). One shared Ray cluster (``ray_address``)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import _descendants, crop_inputs, kill_pids
from conftest import output_digests as _digests
from pseudocell.orchestrator.executors import LocalExecutor
from pseudocell.orchestrator.run import prepare_run, resume, run_loop
from pseudocell.stages.loop import PARTIAL
from pseudocell.storage.manifest import read_manifest

pytestmark = pytest.mark.ray
import ray  # noqa: E402 (part of `make test`: missing means a broken install)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, small_crops, tiny_cfg):
    layout = prepare_run(tmp_path_factory.mktemp("local") / "run", tiny_cfg,
                         crop_inputs(small_crops))
    run_loop(layout, tiny_cfg, LocalExecutor())
    return layout


@pytest.fixture()
def executor(ray_address):
    from pseudocell.orchestrator.ray_executor import RayExecutor, RayOptions

    ex = RayExecutor(RayOptions(address=ray_address, train="actor"))
    yield ex
    ex.close()  # releases the actors; the session owns Ray


#: progress events of the ``ray_run`` fixture
RAY_EVENTS: list = []


@pytest.fixture(scope="module")
def ray_run(tmp_path_factory, small_crops, tiny_cfg, ray_address):
    from pseudocell.orchestrator.ray_executor import RayExecutor, RayOptions

    layout = prepare_run(tmp_path_factory.mktemp("ray") / "run", tiny_cfg,
                         crop_inputs(small_crops))
    with RayExecutor(RayOptions(address=ray_address, train="actor", pool_size=2,
                                shards_per_actor=2)) as ex:
        run_loop(layout, tiny_cfg, ex, progress=RAY_EVENTS.append)
    return layout


def test_ray_executor_gives_the_local_outputs_bit_for_bit(local_run, ray_run, tiny_cfg):
    ref, got = _digests(local_run, tiny_cfg), _digests(ray_run, tiny_cfg)
    assert got == ref  # every store: heatmaps, patches, features, scores, selections, labels
    for rel in ("final/detections.csv", "round_000/select/selected.parquet"):
        assert Path(ray_run.root, rel).read_bytes() == Path(local_run.root, rel).read_bytes()
    # predict ran as shards and left no part files behind
    assert not Path(ray_run.stage_dir(0, "predict"), "_parts").exists()
    # ... and reported each finished shard to the driver: 2 actors x 2 shards asked for,
    # at most one image per shard, training and held-out crops split apart: 3 + 3 items
    shards = [(e.done, e.total) for e in RAY_EVENTS
              if e.status == "progress" and (e.round, e.stage) == (0, "predict")]
    assert shards == [(k, 6) for k in range(1, 7)]


@pytest.mark.slow  # a TorchTrainer.fit costs 14-24 s of start-up (design.md)
def test_ray_train_detector_equals_in_process_training(local_run, tiny_cfg, ray_address,
                                                      tmp_path):
    """One Ray Train (TorchTrainer) worker reproduces the in-process model bit for bit."""
    from pseudocell.actors.train import train_with_ray_train
    from pseudocell.stages.base import StageInputs, stage_seed

    m = read_manifest(local_run.manifest(0, "train_detector"))
    uris = {k: local_run.uri(v["uri"]) for k, v in m["inputs"].items()}
    out_dir = str(tmp_path / "train_detector")
    os.makedirs(out_dir)
    inp = StageInputs(out_dir=out_dir, round=0, seed=stage_seed(tiny_cfg.seed, 0, "train_detector"),
                      uris=uris)
    spec = PARTIAL.round_stages[0]
    assert spec.name == "train_detector"
    res = train_with_ray_train(spec, inp, tiny_cfg, num_workers=1,
                               resources_per_worker={"CPU": 1})
    ref = Path(local_run.uri(m["outputs"]["model"]["uri"])).read_bytes()
    assert Path(res.uris["model"]).read_bytes() == ref
    assert res.metrics["detector_loss"] == m["metrics"]["detector_loss"]
    assert sorted(os.listdir(out_dir)) == ["model.pt"]  # the result file was consumed


# slow: a whole Ray run plus the actor's restart (68 s of the fast tier on 2 cores); no
# fast twin: the fast tier reruns unfinished stages (outputs without a manifest) after a
# killed local driver, not after a killed actor
@pytest.mark.slow
@pytest.mark.parametrize("stage", ["predict", "train_pu"])
def test_killed_actor_stage_reruns_and_run_finishes_with_same_outputs(
        stage, local_run, small_crops, tiny_cfg, executor, tmp_path, monkeypatch):
    monkeypatch.setenv("PSEUDOCELL_FAULT", f"kill_actor:0/{stage}")
    layout = prepare_run(tmp_path / "run", tiny_cfg, crop_inputs(small_crops))
    run_loop(layout, tiny_cfg, executor)
    assert _digests(layout, tiny_cfg) == _digests(local_run, tiny_cfg)
    # the dead actor's stray file was discarded with the rest of its partial outputs
    assert not list(Path(layout.root).rglob("partial-garbage.bin"))


ROUND_STAGES = [s.name for s in PARTIAL.round_stages]


# slow: two CLI drivers attach to Ray and import torch (76 s on 2 cores for one stage);
# the fast tier SIGKILLs a local driver and resumes (test_orchestrator_loop::
# test_sigkilled_driver_then_resume_gives_identical_outputs)
@pytest.mark.slow
@pytest.mark.parametrize("stages", [
    pytest.param(["train_pu"], id="one-stage"),
    pytest.param(ROUND_STAGES, id="every-stage")])
def test_driver_sigkill_in_round_0_then_resume(stages, local_run, small_crops, tiny_cfg,
                                               ray_address, tmp_path):
    """Each driver attaches to the session's cluster and SIGKILLs itself inside the next
    of ``stages`` of round 0 (the fault hook fires after the stage was handed to its
    actor); a last `pseudocell resume --executor ray` finishes the run."""
    layout = prepare_run(tmp_path / "run", tiny_cfg, crop_inputs(small_crops))
    cmd = [sys.executable, "-m", "pseudocell", "--quiet", "resume", layout.root,
           "--executor", "ray", "--address", ray_address, "--pool-size", "1",
           "--train", "actor", "--no-warm-up"]
    for stage in stages:
        env = {**os.environ, "PSEUDOCELL_FAULT": f"kill_driver:0/{stage}"}
        proc = subprocess.Popen(cmd, env=env, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            log = proc.communicate(timeout=120)[0].decode(errors="replace")
        finally:
            kill_pids(_descendants(proc.pid) | {proc.pid})
        assert proc.returncode == -signal.SIGKILL, f"{stage}: rc={proc.returncode}\n{log}"
        assert read_manifest(layout.manifest(0, stage)) is None, stage  # killed inside it
        if stage != ROUND_STAGES[0]:  # everything before it finished
            prev = ROUND_STAGES[ROUND_STAGES.index(stage) - 1]
            assert read_manifest(layout.manifest(0, prev)) is not None
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _digests(layout, tiny_cfg) == _digests(local_run, tiny_cfg)


# slow: the local executor's twin runs in the fast tier
# (test_orchestrator_loop::test_corrupted_store_is_detected_and_its_stage_reruns)
@pytest.mark.slow
def test_truncated_chunk_is_detected_on_resume_and_its_stage_reruns(ray_run, local_run,
                                                                   tiny_cfg, executor):
    chunk = sorted(p for p in Path(ray_run.stage_dir(0, "extract_patches"), "patches.zarr")
                   .rglob("*") if p.is_file() and p.name != "zarr.json")[0]
    chunk.write_bytes(chunk.read_bytes()[:7])
    events = []
    resume(ray_run.root, executor, progress=events.append)
    rerun = [(e.round, e.stage) for e in events if e.status == "done"]
    assert rerun[0] == (0, "extract_patches")
    assert _digests(ray_run, tiny_cfg) == _digests(local_run, tiny_cfg)


_NICE_PROBE = """
import os, ray
from pseudocell.orchestrator.ray_executor import init_ray
init_ray(num_cpus=1)
@ray.remote(num_cpus=0)
class Probe:
    def nice(self):
        return os.nice(0)
print("NICE", ray.get(Probe.remote().nice.remote()))
ray.shutdown()
"""


@pytest.mark.slow  # starts a Ray cluster of its own (15 s)
def test_a_local_cluster_runs_its_actors_at_normal_priority(tmp_path):
    """Ray runs workers at nice 15: on a busy machine the stage actors then yield to every
    other process. The local cluster pseudocell starts runs them at nice 0 (own process:
    the session's shared cluster was not started by ``init_ray``)."""
    from pseudocell.orchestrator.ray_executor import LOCAL_WORKER_NICENESS

    env = {k: v for k, v in os.environ.items() if k != "RAY_worker_niceness"}
    proc = subprocess.Popen([sys.executable, "-c", _NICE_PROBE], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                            start_new_session=True)
    try:
        out = proc.communicate(timeout=300)[0].decode()
    finally:
        kill_pids(_descendants(proc.pid) - {proc.pid})
    assert f"NICE {LOCAL_WORKER_NICENESS}" in out, out[-2000:]
    assert LOCAL_WORKER_NICENESS == 0
