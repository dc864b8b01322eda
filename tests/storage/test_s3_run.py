"""A whole run with its run directory and every store on S3 (moto's server on loopback):
it finishes, resumes after an interruption, and gives the local-disk run's outputs."""
from __future__ import annotations

import json

import pytest

from conftest import FailOnce, crop_inputs, output_digests, save_png, write_points_file
from pseudocell.errors import StageError
from pseudocell.data.points import hide_points
from pseudocell.orchestrator.executors import LocalExecutor
from pseudocell.orchestrator.run import prepare_run, resume, run_loop
from pseudocell.storage import fs
from pseudocell.storage.manifest import read_manifest


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory, small_crops, tiny_cfg):
    layout = prepare_run(tmp_path_factory.mktemp("local") / "run", tiny_cfg,
                         crop_inputs(small_crops))
    return layout, run_loop(layout, tiny_cfg, LocalExecutor())


@pytest.mark.slow
def test_s3_run_resumes_and_equals_the_local_run(local_reference, s3_bucket, small_crops,
                                                 tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("PSEUDOCELL_CACHE", str(tmp_path / "cache"))
    local, local_metrics = local_reference
    uri = f"{s3_bucket}/runs/exp1"
    layout = prepare_run(uri, tiny_cfg, crop_inputs(small_crops))
    assert layout.root == uri and not layout.is_local
    with pytest.raises(StageError, match="simulated crash"):
        run_loop(layout, tiny_cfg, FailOnce((0, "train_pu")))
    assert read_manifest(layout.manifest(0, "extract_patches")) is not None
    assert read_manifest(layout.manifest(0, "train_pu")) is None  # its outputs, no manifest
    assert fs.list_files(layout.stage_dir(0, "train_pu"))  # ... left on S3 by the "crash"

    events = []
    metrics = resume(uri, LocalExecutor(), progress=events.append)
    done = [(e.round, e.stage) for e in events if e.status == "done"]
    assert done[0] == (0, "train_pu")  # earlier stages were not run again
    assert output_digests(layout, tiny_cfg) == output_digests(local, tiny_cfg)
    assert metrics["rounds"] == local_metrics["rounds"]
    for rel in ("final/detections.csv", "final/detections_table.csv", "final/model.pt",
                "final/labels_table.csv"):
        with open(f"{local.root}/{rel}", "rb") as f:
            assert fs.read_bytes(f"{uri}/{rel}") == f.read(), rel
    assert json.loads(fs.read_bytes(f"{uri}/metrics.json"))["rounds"] == metrics["rounds"]
    assert "overlays/001crop.png" in fs.list_files(f"{uri}/final")


@pytest.mark.slow
def test_cli_runs_into_s3_and_tracks_locally(s3_bucket, small_crops, tiny_cfg, tmp_path,
                                             monkeypatch):
    from typer.testing import CliRunner

    from pseudocell.cli import app
    from pseudocell.config import dump_toml
    from pseudocell.storage.layout import RunLayout

    monkeypatch.setenv("PSEUDOCELL_CACHE", str(tmp_path / "cache"))
    images, gt = small_crops
    (tmp_path / "images").mkdir()
    for i, im in zip(images.ids, images.images):
        save_png(tmp_path / "images" / f"{i}.png", im)
    write_points_file(tmp_path / "points.csv", hide_points(gt, 0.3, seed=0))
    (tmp_path / "cfg.toml").write_text(dump_toml(tiny_cfg.replace(rounds=0)))
    # the inputs live in the bucket too
    data = f"{s3_bucket}/data"
    fs.put_dir(str(tmp_path / "images"), f"{data}/images")
    fs.write_bytes(f"{data}/points.csv", (tmp_path / "points.csv").read_bytes())
    fs.write_bytes(f"{data}/cfg.toml", (tmp_path / "cfg.toml").read_bytes())
    uri = f"{s3_bucket}/runs/cli"
    res = CliRunner().invoke(app, ["run", "--images", f"{data}/images", "--points",
                                   f"{data}/points.csv", "--config", f"{data}/cfg.toml",
                                   "--out", uri])
    assert res.exit_code == 0, res.output
    manifest = json.loads(fs.read_bytes(f"{uri}/inputs/_manifest.json"))
    assert manifest["image_paths"] == [f"{data}/images/{i}.png" for i in images.ids]
    assert fs.exists(f"{uri}/final/detections.csv") and fs.exists(f"{uri}/config.toml")
    local = RunLayout(uri).local_dir
    assert local.startswith(str(tmp_path / "cache"))
    assert "round 0: train_detector" in open(f"{local}/pseudocell.log").read()
    res = CliRunner().invoke(app, ["export", uri, "--format", "csv", "--out",
                                   str(tmp_path / "exp")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "exp" / "round_000_detections.csv").exists()


@pytest.mark.ray
@pytest.mark.slow
def test_ray_actors_read_and_write_s3_stores(local_reference, s3_bucket, small_crops,
                                             tiny_cfg, tmp_path, monkeypatch, ray_address):
    """The Ray executor with the run on S3 equals the local-disk run. The session's Ray
    may have started before this S3 server existed; its workers then learn the endpoint
    and credentials only through ``env_vars`` (what ``--ray-env`` forwards)."""
    import os

    from pseudocell.orchestrator.ray_executor import RayExecutor, RayOptions

    monkeypatch.setenv("PSEUDOCELL_CACHE", str(tmp_path / "cache"))
    local, local_metrics = local_reference
    uri = f"{s3_bucket}/runs/ray"
    layout = prepare_run(uri, tiny_cfg, crop_inputs(small_crops))
    env = {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                      "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3")}
    with RayExecutor(RayOptions(train="actor", pool_size=2, env_vars=env)) as ex:
        metrics = run_loop(layout, tiny_cfg, ex)
    assert output_digests(layout, tiny_cfg) == output_digests(local, tiny_cfg)
    assert metrics["rounds"] == local_metrics["rounds"]


def test_an_actor_without_store_access_is_told_how_to_get_it():
    import botocore.exceptions as botocore
    from pseudocell.orchestrator.ray_executor import stage_error

    from pseudocell.errors import InvalidInputError, StoreError

    err = stage_error(botocore.NoCredentialsError())
    assert isinstance(err, StoreError)  # expected: a one-line error with the fix
    assert str(err).startswith("NoCredentialsError: Unable to locate credentials; ")
    assert "--ray-env" in str(err)
    bug, ours = ValueError("bad"), InvalidInputError("no")
    assert stage_error(bug) is bug  # a bug stays itself: the engine logs its traceback
    assert stage_error(ours) is ours
