"""A copied (or moved) run directory is independent of the original: resuming or
re-running the copy skips what is finished and writes into the copy only, and runs
recorded with absolute URIs (before records were relative) are read as their own."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import crop_inputs
from pseudocell.errors import RunDirectoryError
from pseudocell.orchestrator.executors import LocalExecutor
from pseudocell.orchestrator.run import planned_stages, prepare_run, resume, run_loop
from pseudocell.storage.layout import RunLayout, is_relative, join
from pseudocell.storage.manifest import read_manifest, write_manifest


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """(mtime in ns, bytes) of every file under ``root``."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


def manifests(root: Path) -> list[Path]:
    return sorted(root.rglob("_manifest.json"))


def resume_without(orig: Path, copy: Path, **kw) -> dict:
    """Resume ``copy`` while the original is moved away (so reading it would fail)."""
    away = orig.with_name(orig.name + "-away")
    orig.rename(away)
    try:
        return resume(copy, LocalExecutor(), **kw)
    finally:
        away.rename(orig)


def statuses(events) -> dict[tuple[int, str], str]:
    return {(e.round, e.stage): e.status for e in events if e.status in ("done", "skipped")}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, small_crops, tiny_cfg):
    layout = prepare_run(tmp_path_factory.mktemp("orig") / "run", tiny_cfg,
                         crop_inputs(small_crops))
    run_loop(layout, tiny_cfg, LocalExecutor())
    return layout


@pytest.fixture(scope="module")
def old_style(tmp_path_factory, small_crops, tiny_cfg):
    """A finished run whose manifests hold absolute URIs, as before records were
    relative (made by recording URIs the old way)."""
    mp = pytest.MonkeyPatch()
    absolute = lambda self, uri: join(self.root, uri) if is_relative(uri) else uri  # noqa: E731
    mp.setattr(RunLayout, "record", absolute)
    mp.setattr(RunLayout, "uri", absolute)
    try:
        layout = prepare_run(tmp_path_factory.mktemp("old") / "run", tiny_cfg,
                             crop_inputs(small_crops))
        run_loop(layout, tiny_cfg, LocalExecutor())
    finally:
        mp.undo()
    m = read_manifest(layout.manifest(0, "predict"))
    assert m["outputs"]["peaks"]["uri"].startswith(layout.root + "/")
    return layout


def test_records_name_no_location(finished):
    root = Path(finished.root)
    for path in manifests(root):
        text = path.read_text()
        assert str(root) not in text, path
        m = json.loads(text)
        for rec in [*m.get("outputs", {}).values(), *m.get("inputs", {}).values()]:
            assert is_relative(rec["uri"]) and (root / rec["uri"]).exists(), (path, rec)


def test_resumed_copy_skips_every_stage_and_leaves_the_original_alone(finished, tiny_cfg,
                                                                       tmp_path):
    orig = Path(finished.root)
    before = snapshot(orig)
    copy = tmp_path / "copy"
    shutil.copytree(orig, copy)
    events = []
    metrics = resume_without(orig, copy, progress=events.append)
    got = statuses(events)
    assert set(got.values()) == {"skipped"}
    assert len(got) == len(planned_stages(finished, tiny_cfg))
    assert snapshot(orig) == before
    assert json.loads((copy / "final" / "metrics.json").read_text()) == metrics
    assert (copy / "final" / "detections.csv").read_bytes() == \
        (orig / "final" / "detections.csv").read_bytes()


def test_a_stage_rerun_in_the_copy_writes_the_copy_only(finished, tmp_path):
    orig = Path(finished.root)
    before = snapshot(orig)
    copy = tmp_path / "copy"
    shutil.copytree(orig, copy)
    shutil.rmtree(copy / "round_001")
    scores = copy / "round_000" / "rank" / "scores.parquet"
    scores.write_bytes(scores.read_bytes() + b"\0")  # corrupted store → rank re-runs
    events = []
    resume_without(orig, copy, progress=events.append)
    got = statuses(events)
    assert {s for (r, s), st in got.items() if st == "done"} >= {"rank", "train_detector"}
    assert got[(0, "train_detector")] == got[(0, "predict")] == "skipped"
    assert all(st == "done" for (r, _), st in got.items() if r == 1)
    assert snapshot(orig) == before
    # deterministic stages: the re-run copy holds the same results as the original
    assert (copy / "final" / "detections.csv").read_bytes() == \
        (orig / "final" / "detections.csv").read_bytes()
    for path in manifests(copy):
        assert str(orig) not in path.read_text(), path


def test_an_old_run_with_absolute_records_resumes_in_place(old_style):
    before = {p: p.read_bytes() for p in manifests(Path(old_style.root))}
    events = []
    resume(old_style.root, LocalExecutor(), progress=events.append)
    assert set(statuses(events).values()) == {"skipped"}
    assert {p: p.read_bytes() for p in manifests(Path(old_style.root))} == before


def test_a_copied_old_run_reads_its_absolute_records_as_its_own(old_style, tmp_path):
    """Absolute records of another root name the copy's own stores: nothing re-runs (no
    manifest is rewritten, so no hash changes) and a re-run stage writes the copy only."""
    orig = Path(old_style.root)
    before = snapshot(orig)
    copy = tmp_path / "copy"
    shutil.copytree(orig, copy)
    events = []
    resume_without(orig, copy, progress=events.append)
    assert set(statuses(events).values()) == {"skipped"}
    shutil.rmtree(copy / "round_001" / "train_detector")
    events = []
    resume_without(orig, copy, progress=events.append)
    assert statuses(events)[(1, "train_detector")] == "done"
    m = read_manifest(RunLayout(str(copy)).manifest(1, "train_detector"))
    assert all(is_relative(r["uri"]) for r in [*m["inputs"].values(), *m["outputs"].values()])
    assert snapshot(orig) == before


def test_an_object_store_run_copied_to_another_prefix_is_its_own(small_crops, tiny_cfg,
                                                                  tmp_path, monkeypatch):
    """The same on a non-local filesystem (``memory://``, as ``s3://``): records are
    relative to the run URI; the copy resumes with every stage skipped and a re-run
    stage writes under the copy's prefix only."""
    import fsspec

    from pseudocell.storage import fs

    monkeypatch.setenv("PSEUDOCELL_CACHE", str(tmp_path / "cache"))
    src, dst = f"memory://reloc-{id(tmp_path)}/a", f"memory://reloc-{id(tmp_path)}/b"
    try:
        layout = prepare_run(src, tiny_cfg, crop_inputs(small_crops))
        run_loop(layout, tiny_cfg, LocalExecutor())
        m = read_manifest(layout.manifest(0, "predict"))
        assert m["outputs"]["peaks"]["uri"] == "round_000/predict/peaks.parquet"
        mem = fsspec.filesystem("memory")
        mem.copy(src.removeprefix("memory:/"), dst.removeprefix("memory:/"), recursive=True)
        before = {f: fs.read_bytes(f"{src}/{f}") for f in fs.list_files(src)}
        events = []
        resume(dst, LocalExecutor(), progress=events.append)
        assert set(statuses(events).values()) == {"skipped"}
        fs.remove(f"{dst}/round_001")
        events = []
        resume(dst, LocalExecutor(), progress=events.append)
        assert statuses(events)[(1, "train_detector")] == "done"
        assert {f: fs.read_bytes(f"{src}/{f}") for f in fs.list_files(src)} == before
    finally:
        fs.remove(src.rsplit("/", 1)[0])


def test_a_record_outside_any_run_is_refused(finished, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(finished.root, copy)
    layout = RunLayout(str(copy))
    m = read_manifest(layout.manifest(0, "predict"))
    m["outputs"]["peaks"]["uri"] = "/somewhere/else/peaks.parquet"
    write_manifest(layout.manifest(0, "predict"), m)
    with pytest.raises(RunDirectoryError, match="outside the run directory.*--force"):
        resume(copy, LocalExecutor())


@pytest.mark.parametrize("source", ["finished", "old_style"])
def test_a_run_prepared_from_another_names_its_own_input_stores(source, request, tiny_cfg,
                                                                 tmp_path):
    """A sweep trial's inputs (hard links of the sweep's) are recorded relative to the
    trial, also when the sweep's own records are absolute."""
    from pseudocell.orchestrator.run import prepare_run_from
    from pseudocell.stages.plan import given_inputs

    src = request.getfixturevalue(source)
    trial = prepare_run_from(tmp_path / "trial", tiny_cfg, src)
    given = given_inputs(trial)
    assert {k: v["uri"] for k, v in given.items()} == {
        k: f"inputs/{k}.{'zarr' if k.endswith('images') else 'parquet'}" for k in given}
    assert all(Path(trial.uri(v["uri"])).exists() for v in given.values())
    assert read_manifest(trial.inputs_manifest)["outputs"] == {
        k: {**v, "uri": src.record(v["uri"])}
        for k, v in read_manifest(src.inputs_manifest)["outputs"].items()}
