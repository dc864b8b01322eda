"""deploy/: the YAML files parse and hold what Ray and KubeRay require, the job's
entrypoint parses with the real CLI, and the Dockerfile installs the project's pins."""
from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from pseudocell.cli import app

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def _cli_accepts(command: str) -> list[str]:
    """Parse ``pseudocell ...`` with the CLI's own parser (nothing runs); returns argv."""
    import typer.main

    argv = shlex.split(command)
    assert argv[0] == "pseudocell", command
    group = typer.main.get_command(app)
    sub = group.commands[argv[1]]
    ctx = sub.make_context(argv[1], argv[2:], resilient_parsing=False)
    assert ctx.params  # options were recognised
    return argv


def test_cluster_launcher_yaml():
    c = _load("ray-cluster.yaml")
    for key in ("cluster_name", "provider", "auth", "available_node_types", "head_node_type",
                "head_start_ray_commands", "worker_start_ray_commands", "max_workers"):
        assert key in c, key
    assert c["head_node_type"] in c["available_node_types"]
    gpu = [n for n in c["available_node_types"].values() if n["resources"].get("GPU")]
    assert gpu and gpu[0]["max_workers"] >= 1
    assert any("ray start --head" in cmd for cmd in c["head_start_ray_commands"])
    # the documented command is the CLI's
    text = (DEPLOY / "ray-cluster.yaml").read_text()
    cmd = re.search(r'ray exec deploy/ray-cluster.yaml "(pseudocell run[^"]+)"', text, re.S)
    argv = _cli_accepts(cmd.group(1).replace("\\\n#", " ").replace("\\", " "))
    assert "--executor" in argv and argv[argv.index("--out") + 1].startswith("s3://")


@pytest.mark.parametrize("name", ["kuberay/raycluster.yaml", "kuberay/rayjob.yaml"])
def test_kuberay_manifests(name):
    doc = _load(name)
    assert doc["apiVersion"] == "ray.io/v1"
    spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
    assert spec["rayVersion"] == "2.60.0"  # the pinned Ray
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"].endswith("pseudocell:gpu")
    workers = spec["workerGroupSpecs"]
    assert workers and all(
        w["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
        for w in workers)
    if doc["kind"] == "RayJob":
        argv = _cli_accepts(doc["spec"]["entrypoint"])
        assert argv[1] == "run" and argv[argv.index("--executor") + 1] == "ray"
        assert argv[argv.index("--address") + 1] == "auto"
        for opt in ("--images", "--points", "--out"):
            assert argv[argv.index(opt) + 1].startswith("s3://"), opt


def test_dockerfile_installs_the_project_pins():
    text = (DEPLOY / "Dockerfile").read_text()
    project = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["project"]
    assert re.search(r"^ARG BASE=python:3\.11", text, re.M)
    assert "pip install torch==2.13.0" in text
    extras = re.search(r"pip install '\.\[([a-z0-9,]+)\]'", text).group(1).split(",")
    assert set(extras) <= set(project["optional-dependencies"])
    assert {"ray", "s3"} <= set(extras)
    assert "COPY pyproject.toml" in text and "COPY src" in text
