"""Runs that share stage outputs by content (a sweep's trials): equal round 0 computed once,
byte-identical results, nothing shared across a detector change, stale locks taken over,
bad entries ignored, and a run waits for another computing the same stage.

No test races a timer: waiting is observed through the cache's ``on_wait`` hook, stale
locks are made with ``os.utime``, and threads hand over with events."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import (RecordingExecutor, assert_ignored_fields_unread, crop_inputs,
                      output_digests)
from pseudocell.orchestrator.executors import LocalExecutor
from pseudocell.orchestrator.run import planned_stages, prepare_run, run_loop
from pseudocell.orchestrator.share import StageCache
from pseudocell.storage.manifest import read_manifest

#: Round 0 of the partial loop up to the PU learner: what a sweep over the selection
#: settings computes once.
ROUND0_SHARED = {(0, s) for s in ("scale", "background", "train_detector", "predict",
                                  "extract_patches", "train_pu")}


class Counting:
    """LocalExecutor that records every (round, stage) it runs."""

    def __init__(self):
        self.ran: list[tuple[int, str]] = []
        self.inner = LocalExecutor()

    def run_stage(self, spec, inp, cfg, progress=None):
        self.ran.append((inp.round, spec.name))
        return self.inner.run_stage(spec, inp, cfg, progress)


def _run(path: Path, cfg, small_crops, executor, cache=None):
    layout = prepare_run(path, cfg, crop_inputs(small_crops))
    metrics = run_loop(layout, cfg, executor, cache=cache)
    return layout, metrics


@pytest.fixture(scope="module")
def first(tmp_path_factory, small_crops, tiny_cfg):
    """Run A with a fresh cache, every stage recording the config fields it reads."""
    root = tmp_path_factory.mktemp("share")
    cache = StageCache(root / "shared")
    ex = RecordingExecutor()
    layout, metrics = _run(root / "a", tiny_cfg, small_crops, ex, cache)
    return root, cache, ex, layout, metrics


def test_no_stage_reads_a_field_it_declares_it_ignores(first, tiny_cfg):
    _, _, ex, layout, _ = first
    assert_ignored_fields_unread(ex, layout, tiny_cfg)
    # the check sees something: the detector reads its settings, select its rates
    assert "detector_iters" in ex.reads[(0, "train_detector")]
    assert {"alpha", "beta"} <= ex.reads[(0, "select")]


def test_a_selection_change_reuses_round_0_before_rank_with_identical_outputs(
        first, tmp_path, small_crops, tiny_cfg):
    root, cache, ex_a, layout_a, _ = first
    cfg_b = tiny_cfg.replace(alpha=0.2, beta=0.15)
    ex_b = Counting()
    layout_b, metrics_b = _run(root / "b", cfg_b, small_crops, ex_b, cache)
    # the stage functions of round 0 up to the PU learner ran once, in run A; rank reads
    # none of the changed settings and its inputs are equal: shared as well
    assert not ({(0, "rank")} | ROUND0_SHARED) & set(ex_b.ran)
    assert ROUND0_SHARED <= set(ex_a.ran)
    assert (0, "select") in ex_b.ran and (1, "train_detector") in ex_b.ran
    for rnd, stage in ROUND0_SHARED | {(0, "rank")}:
        m = read_manifest(layout_b.manifest(rnd, stage))
        assert m["shared_from"], (rnd, stage)
        assert m["config_hash"] == cfg_b.stage_hash  # the run's own manifest
    assert "shared_from" not in read_manifest(layout_b.manifest(0, "select"))
    # byte for byte what run B gives on its own
    ref, ref_metrics = _run(tmp_path / "b_alone", cfg_b, small_crops, LocalExecutor())
    assert output_digests(layout_b, cfg_b) == output_digests(ref, cfg_b)
    assert metrics_b["rounds"] == ref_metrics["rounds"]
    # and a resumed run B sees its own manifests: nothing runs, nothing is looked up
    ex_again = Counting()
    run_loop(layout_b, cfg_b, ex_again, cache=StageCache(tmp_path / "empty_cache"))
    assert ex_again.ran == []
    assert not (tmp_path / "empty_cache").exists()


def test_a_detector_change_shares_nothing(first, small_crops, tiny_cfg):
    root, cache, *_ = first
    cfg_c = tiny_cfg.replace(detector_iters=tiny_cfg.detector_iters + 1)
    ex_c = Counting()
    layout_c, _ = _run(root / "c", cfg_c, small_crops, ex_c, cache)
    assert sorted(ex_c.ran) == sorted((r, s.name) for r, s in planned_stages(layout_c, cfg_c))
    assert not any("shared_from" in read_manifest(layout_c.manifest(r, s))
                   for r, s in ex_c.ran)


def test_a_corrupt_shared_entry_is_ignored_and_computed_again(first, tmp_path, small_crops,
                                                              tiny_cfg):
    root, cache, *_ = first
    # run A computed its stages: find train_detector's entry through a sharing run
    cfg_d = tiny_cfg.replace(alpha=0.07)
    probe, _ = _run(root / "probe", cfg_d, small_crops, Counting(), cache)
    key = read_manifest(probe.manifest(0, "train_detector"))["shared_from"]
    model = cache.entry_dir(key) / "files" / "model.pt"
    data = model.read_bytes()
    model.unlink()  # the run's own copy is a hard link: write a new file, not into it
    model.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    ex = Counting()
    layout_e, _ = _run(tmp_path / "e", cfg_d, small_crops, ex, cache)
    assert (0, "train_detector") in ex.ran
    assert (0, "scale") not in ex.ran  # the other entries still serve
    assert output_digests(layout_e, cfg_d) == output_digests(probe, cfg_d)
    assert cache.read(key) is not None  # published again, whole
    assert all(not p.name.startswith(key + ".") for p in cache.root.iterdir())


# -- the cache on its own: locks, waiting, bad entries -----------------------------------

def _producer(tmp: Path, calls: list, payload: bytes = b"out"):
    """A ``compute`` that writes one file into a fresh folder and counts its calls."""
    def compute():
        calls.append(1)
        d = tmp / f"stage{len(calls)}"
        d.mkdir()
        (d / "x.bin").write_bytes(payload)
        return d, {"outputs": {"x": {"path": "x.bin", "sha256": "s"}}, "metrics": {}}
    return compute


def _user(got: list):
    def use(entry_dir, entry):
        got.append((entry_dir / "files" / "x.bin").read_bytes())
        return True
    return use


def test_a_run_waits_for_the_run_computing_the_same_stage(tmp_path):
    holding, waiting, go = threading.Event(), threading.Event(), threading.Event()
    calls, got = [], []

    def slow():
        holding.set()
        assert go.wait(60)
        return _producer(tmp_path, calls)()

    a = StageCache(tmp_path / "shared", poll_s=0.01)
    b = StageCache(tmp_path / "shared", poll_s=0.01,
                   on_wait=lambda key: waiting.set())
    results = {}
    ta = threading.Thread(target=lambda: results.setdefault("a", a.get_or_run(
        "k", _user(got), slow)))
    ta.start()
    assert holding.wait(60)  # A holds the lock and computes
    tb = threading.Thread(target=lambda: results.setdefault("b", b.get_or_run(
        "k", _user(got), _producer(tmp_path, calls))))
    tb.start()
    assert waiting.wait(60)  # B found the lock held and waits instead of computing
    go.set()
    ta.join(60), tb.join(60)
    assert results == {"a": "ran", "b": "shared"}
    assert len(calls) == 1 and got == [b"out"]
    assert not a.lock_path("k").exists()


def _old_lock(cache: StageCache, key: str, holder: dict) -> None:
    cache.root.mkdir(parents=True, exist_ok=True)
    cache.lock_path(key).write_text(json.dumps(holder))
    old = time.time() - cache.stale_s - 60
    os.utime(cache.lock_path(key), (old, old))


def test_a_stale_lock_is_taken_over(tmp_path):
    cache = StageCache(tmp_path / "shared", stale_s=30, poll_s=0.01,
                       on_wait=lambda key: pytest.fail("waited for a stale lock"))
    _old_lock(cache, "k", {"host": "another-host", "pid": 1, "token": "t"})
    calls = []
    assert cache.get_or_run("k", _user([]), _producer(tmp_path, calls)) == "ran"
    assert calls == [1] and cache.read("k") is not None
    assert not cache.lock_path("k").exists()


def test_a_lock_of_a_dead_process_on_this_host_is_stale_at_once(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    cache = StageCache(tmp_path / "shared", stale_s=3600, poll_s=0.01,
                       on_wait=lambda key: pytest.fail("waited for a dead holder"))
    cache.root.mkdir(parents=True)
    cache.lock_path("k").write_text(json.dumps(
        {"host": socket.gethostname(), "pid": int(dead.stdout), "token": "t"}))
    calls = []
    assert cache.get_or_run("k", _user([]), _producer(tmp_path, calls)) == "ran"
    assert calls == [1]


def test_a_live_fresh_lock_is_not_taken_over(tmp_path):
    cache = StageCache(tmp_path / "shared", stale_s=3600)
    cache.root.mkdir(parents=True)
    cache.lock_path("k").write_text(json.dumps(
        {"host": socket.gethostname(), "pid": os.getppid(), "token": "t"}))
    assert not cache.break_if_stale("k")
    assert cache.lock_path("k").exists()


def test_an_incomplete_entry_is_ignored_and_replaced(tmp_path):
    cache = StageCache(tmp_path / "shared")
    (cache.entry_dir("k") / "files").mkdir(parents=True)  # no entry.json: never published
    (cache.root / "k.tmp-123").mkdir()  # a publisher that died mid-copy
    calls, got = [], []
    assert cache.get_or_run("k", _user(got), _producer(tmp_path, calls)) == "ran"
    assert cache.read("k") is not None
    assert cache.get_or_run("k", _user(got), _producer(tmp_path, calls)) == "shared"
    assert calls == [1] and got == [b"out"]


def test_an_entry_that_fails_its_check_is_discarded_and_computed(tmp_path):
    cache = StageCache(tmp_path / "shared")
    calls = []
    cache.get_or_run("k", _user([]), _producer(tmp_path, calls, b"old"))
    assert cache.get_or_run("k", lambda d, e: False,
                            _producer(tmp_path, calls, b"new")) == "ran"
    assert calls == [1, 1]
    assert (cache.entry_dir("k") / "files" / "x.bin").read_bytes() == b"new"


def test_no_cache_on_an_object_store():
    assert StageCache.at("s3://bucket/sweep/shared") is None
    assert StageCache.at("/tmp/x/shared").root == Path("/tmp/x/shared")
