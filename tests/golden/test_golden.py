"""Golden outputs: the demo config on real crops gives, stage by stage, the bytes recorded
before the pipeline-as-data restructuring (issue 13), with the local and the Ray executor.

The records are in ``digests.json`` (``record.py`` writes them), per platform (see
:mod:`golden_cases`). ``fast`` is the demo config with small training budgets (in ``make
test``); ``full`` is the demo config itself (``make test-slow``). On a platform without
a record, the run's counts and scores are compared with the recorded summary, and the two
executors are still compared with each other byte for byte.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from golden_cases import case_config, digests_of, platform_key, run_case, run_summary

RECORDS = json.loads((Path(__file__).parent / "digests.json").read_text())


def _check(got: dict, name: str) -> bool:
    """Compare with this platform's record; False when there is none."""
    want = RECORDS["records"].get(platform_key(), {}).get(name)
    if want is None:
        return False
    assert sorted(got) == sorted(want), "the set of stage outputs changed"
    diff = sorted(k for k in want if got[k] != want[k])
    assert not diff, f"outputs differ from the golden record: {diff}"
    return True


def _check_summary(metrics: dict, name: str) -> None:
    """Counts within 10 % (and 3 items), held-out F1 within 0.05 of the record."""
    want = RECORDS["summary"][name]
    got = run_summary(metrics)
    assert sorted(got) == sorted(want), "the rounds changed"
    for rnd, row in want.items():
        for key, val in row.items():
            if key.endswith("/f1"):
                assert abs(got[rnd][key] - val) <= 0.05, (rnd, key, got[rnd][key], val)
            else:
                assert abs(got[rnd][key] - val) <= max(3, 0.1 * val), (rnd, key,
                                                                       got[rnd][key], val)


def _golden(tmp_path, small_crops, name: str, executor=None) -> dict:
    cfg = case_config(name)
    layout, metrics = run_case(tmp_path / "run", cfg, small_crops, executor)
    got = digests_of(layout, cfg)
    if not _check(got, name):
        _check_summary(metrics, name)
    return got


def test_local_executor_gives_the_golden_outputs(tmp_path, small_crops):
    _golden(tmp_path, small_crops, "fast")


# slow: the fast tier checks the local executor against the golden record and the Ray
# executor bit for bit against the local one (on the tiny config, not the demo's)
@pytest.mark.slow
@pytest.mark.ray
def test_ray_executor_gives_the_golden_outputs(tmp_path, small_crops, ray_address):
    from pseudocell.orchestrator.ray_executor import RayExecutor, RayOptions

    local = _golden(tmp_path / "local", small_crops, "fast")
    with RayExecutor(RayOptions(address=ray_address, train="actor", pool_size=2)) as ex:
        ray = _golden(tmp_path / "ray", small_crops, "fast", ex)
    assert ray == local, sorted(k for k in local if ray.get(k) != local[k])


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "ray"])
def test_full_demo_config_gives_the_golden_outputs(tmp_path, small_crops, executor, request):
    if executor == "local":
        _golden(tmp_path, small_crops, "full")
        return
    from pseudocell.orchestrator.ray_executor import RayExecutor, RayOptions

    address = request.getfixturevalue("ray_address")
    local = _golden(tmp_path / "local", small_crops, "full")
    with RayExecutor(RayOptions(address=address, train="actor", pool_size=2)) as ex:
        assert _golden(tmp_path / "ray", small_crops, "full", ex) == local
