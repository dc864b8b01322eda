"""Golden outputs: the demo config on real crops gives, stage by stage, the bytes recorded
before the pipeline-as-data restructuring (issue 13), with the local and the Ray executor.

The records are in ``digests.json`` (``record.py`` writes them). ``fast`` is the demo
config with small training budgets (in ``make test``); ``full`` is the demo config itself
(``make test-slow``).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from golden_cases import case_config, run_digests

RECORDS = json.loads((Path(__file__).parent / "digests.json").read_text())


def _check(got: dict, name: str) -> None:
    want = RECORDS[name]
    assert sorted(got) == sorted(want), "the set of stage outputs changed"
    diff = sorted(k for k in want if got[k] != want[k])
    assert not diff, f"outputs differ from the golden record: {diff}"


def test_local_executor_gives_the_golden_outputs(tmp_path, small_crops):
    _check(run_digests(tmp_path / "run", case_config("fast"), small_crops), "fast")


@pytest.mark.ray
def test_ray_executor_gives_the_golden_outputs(tmp_path, small_crops, ray_address):
    from pseudocell.orchestrator.ray_executor import RayExecutor, RayOptions

    with RayExecutor(RayOptions(address=ray_address, train="actor", pool_size=2)) as ex:
        _check(run_digests(tmp_path / "run", case_config("fast"), small_crops, ex), "fast")


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "ray"])
def test_full_demo_config_gives_the_golden_outputs(tmp_path, small_crops, executor, request):
    if executor == "local":
        _check(run_digests(tmp_path / "run", case_config("full"), small_crops), "full")
        return
    from pseudocell.orchestrator.ray_executor import RayExecutor, RayOptions

    address = request.getfixturevalue("ray_address")
    with RayExecutor(RayOptions(address=address, train="actor", pool_size=2)) as ex:
        _check(run_digests(tmp_path / "run", case_config("full"), small_crops, ex), "full")
