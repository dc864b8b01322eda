"""``init_ray`` gives the local cluster it starts its environment (worker niceness, the
malloc arena limit) without leaving it in the caller's process; usage statistics stay
off in the driver (unless the caller set them)."""
from __future__ import annotations

import os

import pytest

import ray  # noqa: E402 (part of `make test`)
from pseudocell.orchestrator.ray_executor import LOCAL_WORKER_NICENESS, init_ray
from pseudocell.runtime import malloc_arena_env

NAMES = ("RAY_worker_niceness", "RAY_USAGE_STATS_ENABLED", "MALLOC_ARENA_MAX")
#: what a caller's environment holds after init_ray, when it set none of NAMES
AFTER = {"RAY_worker_niceness": None, "RAY_USAGE_STATS_ENABLED": "0",
         "MALLOC_ARENA_MAX": None}


@pytest.fixture()
def fake_ray(monkeypatch):
    """ray.init records the environment its processes would inherit; nothing starts."""
    seen: list[dict] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.append(
        {k: os.environ.get(k) for k in NAMES} | {"kwargs": kw}))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 1.0})
    for k in (*NAMES, "PSEUDOCELL_MALLOC_ARENAS"):
        monkeypatch.delenv(k, raising=False)
    return seen


def test_a_local_cluster_inherits_the_settings_and_the_caller_keeps_its_environment(fake_ray):
    expected_malloc = malloc_arena_env().get("MALLOC_ARENA_MAX")  # None without glibc
    assert init_ray(num_cpus=1) is True
    (seen,) = fake_ray
    assert seen["RAY_worker_niceness"] == str(LOCAL_WORKER_NICENESS)
    assert seen["RAY_USAGE_STATS_ENABLED"] == "0"
    assert seen["MALLOC_ARENA_MAX"] == expected_malloc
    assert seen["kwargs"]["num_cpus"] == 1
    assert {k: os.environ.get(k) for k in NAMES} == AFTER


def test_values_the_caller_set_are_used_and_kept(fake_ray, monkeypatch):
    monkeypatch.setenv("RAY_worker_niceness", "5")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "1")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "7")
    init_ray(num_cpus=1)
    (seen,) = fake_ray
    assert (seen["RAY_worker_niceness"], seen["RAY_USAGE_STATS_ENABLED"],
            seen["MALLOC_ARENA_MAX"]) == ("5", "1", "7")
    assert (os.environ["RAY_worker_niceness"], os.environ["RAY_USAGE_STATS_ENABLED"],
            os.environ["MALLOC_ARENA_MAX"]) == ("5", "1", "7")


def test_attaching_to_a_cluster_sets_no_local_worker_settings(fake_ray):
    init_ray(address="10.0.0.1:6379")
    (seen,) = fake_ray
    assert seen["RAY_worker_niceness"] is None and seen["MALLOC_ARENA_MAX"] is None
    assert seen["RAY_USAGE_STATS_ENABLED"] == "0"
    assert seen["kwargs"]["address"] == "10.0.0.1:6379"
    assert {k: os.environ.get(k) for k in NAMES} == AFTER


def test_the_environment_is_restored_when_ray_fails_to_start(fake_ray, monkeypatch):
    def fail(**kw):
        raise ConnectionError("no cluster")

    monkeypatch.setattr(ray, "init", fail)
    with pytest.raises(ConnectionError):
        init_ray(num_cpus=1)
    assert {k: os.environ.get(k) for k in NAMES} == AFTER
