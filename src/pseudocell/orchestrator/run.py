"""The run engine: prepare a run directory, run or resume the stages of its mode round
by round, write ``final/``.

What runs, in which order, with which inputs, comes from the mode's declaration
(:mod:`pseudocell.stages.base`); nothing here knows a stage by name. A stage is skipped
iff its manifest exists, was made with the same config hash and the same input
manifests, and its outputs still match their checksums; otherwise its directory is
deleted and it runs again. Everything downstream of a re-run stage re-runs too, because
its inputs' manifest hashes change.
"""
from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pseudocell.config import Config, dump_toml, load_config
from pseudocell.errors import InvalidInputError, PseudocellError, RunDirectoryError, StageError
from pseudocell.orchestrator.faults import term_driver_if_asked
from pseudocell.orchestrator.share import StageCache, link_tree, share_key
from pseudocell.results.finalize import finalize
from pseudocell.results.reader import RunResults
from pseudocell.stages.base import Mode, StageInputs, StageOutputs, StageSpec, stage_seed
from pseudocell.stages.modes import get_mode
from pseudocell.stages.plan import given_inputs, round_stages, runs, stage_plan
from pseudocell.storage import arrays, fs, tables
from pseudocell.storage.layout import SCHEMA_VERSION, RunLayout, join, source_id
from pseudocell.storage.manifest import (checksum, manifest_hash, read_manifest, remove_tree,
                                         verify_outputs, write_manifest)
from pseudocell.validation import ImageSet, RunInputs, check_run_dir

__all__ = ["inputs_fingerprint", "prepare_run", "prepare_run_from", "write_inputs",
           "run_loop", "resume", "open_run", "planned_stages", "StageEvent"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageEvent:
    """Reported to the progress callback before (``status="start"``) and after each stage
    (``"done"``, ``"skipped"``, or ``"shared"`` when another run's outputs were reused),
    and during training stages (``"progress"``: ``done`` of ``total`` steps or epochs,
    ``value`` = loss or risk). ``n_stages`` is the number
    of stages this round runs; ``unit`` what a training stage's progress counts."""

    round: int
    stage: str
    status: str
    seconds: float = 0.0
    metrics: dict | None = None
    done: int = 0
    total: int = 0
    value: float = float("nan")
    n_stages: int = 0
    unit: str = ""


def _versions() -> dict[str, str]:
    import numpy
    import torch
    import zarr

    from pseudocell import __version__

    return {"pseudocell": __version__, "python": platform.python_version(),
            "numpy": numpy.__version__, "torch": torch.__version__, "zarr": zarr.__version__}


def inputs_fingerprint(inputs: RunInputs) -> str:
    """sha256 over image ids and pixels, points, ground truth and held-out data."""
    h = hashlib.sha256()

    def add_images(s: ImageSet | None) -> None:
        for i, im in zip(s.ids if s else [], s.images if s else []):
            h.update(i.encode() + b"\0" + str(im.shape).encode())
            h.update(np.ascontiguousarray(im, np.float32).tobytes())

    def add_points(t: dict | None) -> None:
        for k in ("image_id", "y", "x"):
            h.update(repr(np.asarray(t[k]).tolist() if t else None).encode())

    add_images(inputs.images)
    add_points(inputs.points)
    add_points(inputs.gt)
    add_images(inputs.eval_images)
    add_points(inputs.eval_gt)
    if inputs.source_images is not None:  # runs without a source hash as before
        h.update(b"source\0")
        add_images(inputs.source_images)
        add_points(inputs.source_points)
    return h.hexdigest()


def prepare_run(run_dir: str | Path, cfg: Config, inputs: RunInputs, *, force: bool = False) -> RunLayout:
    """Create (or re-open) a run directory and write the config and the input stores.

    Nothing is written until every input has been validated (the caller builds
    ``inputs`` through :mod:`pseudocell.validation`) and the directory check passed.
    A directory holding a run with the same config continues only if its inputs are
    the same too; otherwise it is refused unless ``force``.
    """
    check_mode_inputs(get_mode(cfg.mode), inputs, cfg)
    run_dir = fs.resolve_root(run_dir)
    action = check_run_dir(run_dir, cfg, force=force)
    layout = RunLayout(run_dir)
    fingerprint = inputs_fingerprint(inputs)
    if action == "continue":
        old = read_manifest(layout.inputs_manifest)
        if old is not None and old.get("fingerprint") != fingerprint:
            if not force:
                raise RunDirectoryError(
                    f"run directory {run_dir!r} holds a run with the same config but other "
                    "images or points. Use `pseudocell resume` to finish that run, choose "
                    "another --out, or pass --force to delete it and start again."
                )
            action = "overwrite"
        elif old is not None and not verify_outputs(old, layout):
            return layout
    if action == "overwrite":
        logger.warning("deleting run directory %s (--force)", run_dir)
        fs.remove(run_dir)
    fs.write_bytes(layout.config, dump_toml(cfg).encode())
    write_inputs(layout, inputs, fingerprint)  # the manifest last: it marks them complete
    return layout


def check_mode_inputs(mode: Mode, inputs: RunInputs, cfg: Config) -> None:
    """Refuse inputs that lack a store the mode needs, or that the mode's own check
    (:attr:`Mode.check_inputs`) refuses, before anything is written."""
    missing = [k for k in mode.required_inputs if getattr(inputs, k, None) is None]
    if missing:
        raise InvalidInputError(f"mode {mode.name!r} needs {', '.join(missing)}; give "
                                + " and ".join(f"--{k.replace('_', '-')}" for k in missing))
    if mode.check_inputs is not None:
        mode.check_inputs(cfg, inputs)


def write_inputs(layout: RunLayout, inputs: RunInputs, fingerprint: str | None = None) -> None:
    """Write the input stores of ``inputs`` under ``layout.inputs``, then their manifest."""
    fs.makedirs(layout.inputs)
    outputs = {}
    arrays.write_stack(layout.images, inputs.images.ids, inputs.images.images)
    outputs["images"] = layout.images
    if inputs.points is not None:
        n = len(inputs.points["y"])
        ann = {**inputs.points, "kind": np.array(["annotated"] * n, object),
               "round": np.full(n, -1, np.int64), "score": np.full(n, np.nan)}
        tables.write_table(layout.points, ann)
        outputs["points"] = layout.points
    if inputs.gt is not None:
        tables.write_table(layout.gt, inputs.gt)
        outputs["gt"] = layout.gt
    if inputs.eval_images is not None:
        arrays.write_stack(layout.eval_images, inputs.eval_images.ids, inputs.eval_images.images)
        outputs["eval_images"] = layout.eval_images
        if inputs.eval_gt is not None:
            tables.write_table(layout.eval_gt, inputs.eval_gt)
            outputs["eval_gt"] = layout.eval_gt
    if inputs.source_images is not None:
        # source ids carry a prefix: a source and a target image may share a file name
        arrays.write_stack(layout.source_images,
                           [source_id(i) for i in inputs.source_images.ids],
                           inputs.source_images.images)
        outputs["source_images"] = layout.source_images
        sp = inputs.source_points
        n = len(sp["y"])
        tables.write_table(layout.source_points, {
            "image_id": np.array([source_id(i) for i in sp["image_id"]], object),
            "y": sp["y"], "x": sp["x"], "kind": np.array(["annotated"] * n, object),
            "round": np.full(n, -1, np.int64), "score": np.full(n, np.nan)})
        outputs["source_points"] = layout.source_points
    write_manifest(layout.inputs_manifest, {
        "stage": "inputs", "schema_version": SCHEMA_VERSION,
        "fingerprint": fingerprint or inputs_fingerprint(inputs),
        "outputs": {k: {"uri": layout.record(v), "sha256": checksum(v)}
                    for k, v in outputs.items()},
        "image_paths": inputs.images.paths,
        "eval_image_paths": inputs.eval_images.paths if inputs.eval_images else [],
        **({"source_image_paths": inputs.source_images.paths} if inputs.source_images
           else {}),
        "versions": _versions(),
    })


def prepare_run_from(run_dir: str | Path, cfg: Config, source: RunLayout) -> RunLayout:
    """A run directory whose inputs are those already written under ``source`` (e.g. a
    sweep's): the input stores are hard-linked (copied where links are impossible),
    never re-read or re-validated. Re-opening a directory made this way continues it."""
    run_dir = Path(run_dir).resolve()
    layout = RunLayout(str(run_dir))
    src = read_manifest(source.inputs_manifest)
    if src is None:
        raise RunDirectoryError(f"{source.root!r} has no inputs manifest")
    mine = read_manifest(layout.inputs_manifest)
    if mine is not None and mine.get("fingerprint") == src["fingerprint"] \
            and Path(layout.config).exists():
        if load_config(layout.config) != cfg:
            raise RunDirectoryError(f"run directory {str(run_dir)!r} holds another config")
        return layout
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    # the stores only: this run's manifest is written after them (its records are
    # relative to the run root, so they name this run's own copies)
    shutil.copytree(source.inputs, layout.inputs, copy_function=link,
                    ignore=shutil.ignore_patterns("_manifest.json"))
    manifest = dict(src)
    manifest["outputs"] = {k: {**v, "uri": source.record(v["uri"])}
                           for k, v in src["outputs"].items()}
    write_manifest(layout.inputs_manifest, manifest)
    Path(layout.config).write_text(dump_toml(cfg))
    return layout


def _is_done(layout: RunLayout, manifest: dict | None, cfg: Config, inputs_rec: dict) -> bool:
    if manifest is None:
        return False
    # records of a run made before they were relative hold absolute URIs: compare them as
    # this run's own (the upstream manifests' bytes, hence their hashes, are unchanged)
    recorded = {k: {**v, "uri": layout.record(v["uri"])} if "uri" in v else v
                for k, v in (manifest.get("inputs") or {}).items()}
    # manifests made before the stage hash record the full config hash
    if manifest.get("config_hash") not in (cfg.stage_hash, cfg.config_hash) \
            or recorded != inputs_rec:
        return False
    bad = verify_outputs(manifest, layout)
    if bad:
        logger.warning("stage=%s round=%s outputs %s do not match the manifest; re-running",
                       manifest.get("stage"), manifest.get("round"), bad)
        return False
    return True


def planned_stages(layout: RunLayout, cfg: Config) -> list[tuple[int, StageSpec]]:
    """``(round, spec)`` of every stage the run executes, in order (a stage whose
    ``run_if_any`` inputs the run lacks is left out)."""
    mode, given = get_mode(cfg.mode), given_inputs(layout)
    return [(rnd, spec) for rnd in range(cfg.rounds + 1)
            for spec in round_stages(layout, mode, rnd, cfg.rounds) if runs(spec, given)]


def run_loop(layout: RunLayout, cfg: Config, executor: Any, *,
             progress: Callable[[StageEvent], None] | None = None,
             tracker: Any = None, cache: StageCache | None = None) -> dict:
    """Run every unfinished stage of every round, then write ``final/``.

    ``progress`` gets a :class:`StageEvent` before and after each stage and, during
    training stages, ``status="progress"`` events (``done``/``total`` steps or epochs).
    ``tracker`` (a :class:`~pseudocell.tracking.Tracker`) journals and logs every stage,
    round and the final artefacts, resumed stages included, and marks the run FAILED if
    anything raises. ``cache`` (a sweep's :class:`~pseudocell.orchestrator.share.
    StageCache`) lets runs share the outputs of stages whose share keys are equal: an
    unfinished stage first looks there (``status="shared"`` when it was found), waits
    while another run computes it, and publishes what it computes itself. Without it
    (plain runs) nothing is looked up or published.

    Returns the per-round metrics (list under ``"rounds"``) as written to
    ``final/metrics.json``.
    """
    report = progress or (lambda e: None)
    mode = get_mode(cfg.mode)
    results = RunResults(layout, cfg)
    plan = planned_stages(layout, cfg)
    rnd = None
    if tracker is not None:
        tracker.start(cfg)
    try:
        for rnd in range(cfg.rounds + 1):
            specs = [s for r, s in plan if r == rnd]
            for spec in specs:
                ev = _run_stage(layout, mode, cfg, executor, rnd, spec, report, len(specs),
                                cache)
                if tracker is not None:
                    tracker.stage_done(rnd, spec, ev.metrics, ev.seconds)
            if tracker is not None:
                tracker.round_done(results, rnd)
        metrics = finalize(results)
        if tracker is not None:
            tracker.run_done(results, metrics)
    except BaseException as e:
        if tracker is not None:
            tracker.fail(e, rnd)
        raise
    return metrics


def _run_stage(layout: RunLayout, mode: Mode, cfg: Config, executor: Any, rnd: int,
               spec: StageSpec, report: Callable[[StageEvent], None],
               n_stages: int, cache: StageCache | None = None) -> StageEvent:
    """Run one stage unless its manifest says it is done; returns the done/skipped event
    (``"shared"`` when ``cache`` held its outputs).

    An expected failure (a :class:`~pseudocell.errors.PseudocellError`: bad input, store
    access) becomes a one-line :class:`StageError`; anything else is a bug, logged with
    its full traceback (the run's log file; the console with ``--log-level DEBUG``)."""
    stage = spec.name
    plan = stage_plan(layout, mode, rnd, spec, cfg=cfg)
    inputs_rec = {k: {"uri": layout.record(u), "manifest_sha256": manifest_hash(m)}
                  for k, (u, m) in sorted(plan.items())}
    mpath = layout.manifest(rnd, stage)
    old = read_manifest(mpath)
    unit = spec.progress_unit
    if _is_done(layout, old, cfg, inputs_rec):
        ev = StageEvent(rnd, stage, "skipped", old.get("seconds", 0.0), old.get("metrics"),
                        n_stages=n_stages, unit=unit)
        report(ev)
        return ev
    seed = stage_seed(cfg.seed, rnd, stage)
    key = None if cache is None else _share_key(layout, cfg, rnd, spec, plan, seed)
    if key is None:
        out, seconds = _compute(layout, cfg, executor, rnd, spec, plan, seed, report, n_stages)
        return _finish(layout, cfg, rnd, spec, seed, inputs_rec, out.uris, out.metrics,
                       seconds, report, n_stages)
    done: list[StageEvent] = []

    def use(entry_dir: Path, entry: dict) -> bool:
        t0 = time.perf_counter()
        uris = _link_shared(layout, rnd, stage, entry_dir, entry)
        if uris is None:
            return False
        done.append(_finish(layout, cfg, rnd, spec, seed, inputs_rec, uris,
                            entry.get("metrics") or {}, time.perf_counter() - t0, report,
                            n_stages, shared_from=key,
                            sums={k: r["sha256"] for k, r in entry["outputs"].items()}))
        return True

    def compute() -> tuple[str, dict] | None:
        out, seconds = _compute(layout, cfg, executor, rnd, spec, plan, seed, report,
                                n_stages)
        out_dir = layout.stage_dir(rnd, stage)
        done.append(_finish(layout, cfg, rnd, spec, seed, inputs_rec, out.uris,
                            out.metrics, seconds, report, n_stages))
        m = read_manifest(mpath)
        outputs = {}
        for k, u in out.uris.items():
            rel = os.path.relpath(u, out_dir)
            # an output outside the folder is one of the run's stores passed on (the scale
            # stage's images at scale 1): its record names the borrower's own copy
            where = {"run_path": m["outputs"][k]["uri"]} if rel.startswith("..") else \
                {"path": rel}
            outputs[k] = {**where, "sha256": m["outputs"][k]["sha256"]}
        return out_dir, {"stage": stage, "round": rnd, "seed": seed, "seconds": seconds,
                         "metrics": m["metrics"], "outputs": outputs}

    cache.get_or_run(key, use, compute)
    return done[-1]


def _share_key(layout: RunLayout, cfg: Config, rnd: int, spec: StageSpec,
               plan: dict[str, tuple[str, str]], seed: int) -> str | None:
    """The stage's :func:`~pseudocell.orchestrator.share.share_key`: its inputs by the
    checksum their producers recorded. None when an input has no recorded checksum."""
    content = {}
    for name, (uri, mpath) in plan.items():
        m = read_manifest(mpath) or {}
        sums = [r.get("sha256") for r in (m.get("outputs") or {}).values()
                if layout.uri(r.get("uri", "")) == uri]
        if not sums or sums[0] is None:
            return None
        content[name] = sums[0]
    return share_key(stage=spec.name, fn=f"{spec.fn.__module__}.{spec.fn.__qualname__}",
                     rnd=rnd, seed=seed, config=cfg.stage_hash_without(spec.ignores),
                     inputs=content)


def _link_shared(layout: RunLayout, rnd: int, stage: str, entry_dir: Path,
                 entry: dict) -> dict[str, str] | None:
    """Put a shared entry's files into this run's stage folder (hard links); the output
    URIs, or None (and the folder removed) when a file does not match its checksum.
    Outputs that are stores of the run passed on (``run_path``) name this run's own,
    which must have the same checksum."""
    out_dir = layout.stage_dir(rnd, stage)
    remove_tree(out_dir)
    try:
        link_tree(entry_dir / "files", out_dir)
        uris = {k: join(out_dir, r["path"]) if "path" in r else layout.uri(r["run_path"])
                for k, r in entry["outputs"].items()}
        ok = all(checksum(uris[k]) == r["sha256"] for k, r in entry["outputs"].items())
    except (OSError, KeyError, TypeError, PseudocellError):
        ok = False
    if not ok:
        remove_tree(out_dir)
        return None
    return uris


def _compute(layout: RunLayout, cfg: Config, executor: Any, rnd: int, spec: StageSpec,
             plan: dict[str, tuple[str, str]], seed: int,
             report: Callable[[StageEvent], None], n_stages: int) -> tuple[StageOutputs, float]:
    """Run the stage in a fresh folder; its outputs and seconds."""
    stage, unit = spec.name, spec.progress_unit
    out_dir = layout.stage_dir(rnd, stage)
    remove_tree(out_dir)  # partial outputs of an interrupted attempt
    fs.makedirs(out_dir)
    inp = StageInputs(out_dir=out_dir, round=rnd, seed=seed,
                      uris={k: u for k, (u, _) in plan.items()})
    report(StageEvent(rnd, stage, "start", n_stages=n_stages, unit=unit))

    def step(done: int, total: int, value: float) -> None:
        report(StageEvent(rnd, stage, "progress", done=done, total=total, value=value,
                          n_stages=n_stages, unit=unit))

    t0 = time.perf_counter()
    term_driver_if_asked(rnd, stage)
    try:
        out: StageOutputs = executor.run_stage(spec, inp, cfg, progress=step)
    except PseudocellError as e:
        raise StageError(f"round {rnd} stage {stage!r} failed: {e}") from e
    except Exception as e:
        logger.error("round %d stage %s failed with an unexpected %s", rnd, stage,
                     type(e).__name__, exc_info=True)
        raise StageError(f"round {rnd} stage {stage!r} failed with an unexpected "
                         f"{type(e).__name__}: {e} (a bug: the traceback is in the run's "
                         "pseudocell.log, and on the console with --log-level DEBUG)") from e
    return out, time.perf_counter() - t0


def _finish(layout: RunLayout, cfg: Config, rnd: int, spec: StageSpec, seed: int,
            inputs_rec: dict, uris: dict[str, str], metrics: dict, seconds: float,
            report: Callable[[StageEvent], None], n_stages: int, *,
            shared_from: str | None = None, sums: dict[str, str] | None = None) -> StageEvent:
    """Write the stage's manifest (last: it marks the stage finished) and report it.
    ``sums``: the outputs' checksums where they were just verified."""
    sums = sums or {}
    stage = spec.name
    manifest = {
        "stage": stage, "round": rnd, "seed": seed, "schema_version": SCHEMA_VERSION,
        "config_hash": cfg.stage_hash, "inputs": inputs_rec,
        "outputs": {k: {"uri": layout.record(u), "sha256": sums.get(k) or checksum(u)}
                    for k, u in uris.items()},
        "metrics": metrics, "seconds": seconds, "versions": _versions(),
    }
    if shared_from is not None:
        manifest["shared_from"] = shared_from
    write_manifest(layout.manifest(rnd, stage), manifest)
    logger.info("round=%d stage=%s seconds=%.1f%s", rnd, stage, seconds,
                f" shared_from={shared_from[:12]}" if shared_from else "")
    ev = StageEvent(rnd, stage, "shared" if shared_from else "done", seconds, metrics,
                    n_stages=n_stages, unit=spec.progress_unit)
    report(ev)
    return ev


def open_run(run_dir: str | Path) -> tuple[RunLayout, Config]:
    """Layout and config of an existing run directory."""
    layout = RunLayout(fs.resolve_root(run_dir))
    if not fs.exists(layout.config):
        raise RunDirectoryError(f"{str(run_dir)!r} is not a pseudocell run (no config.toml); "
                                "start one with `pseudocell run`")
    return layout, load_config(layout.config)


def resume(run_dir: str | Path, executor: Any, *,
           progress: Callable[[StageEvent], None] | None = None, tracker: Any = None) -> dict:
    """Finish a stopped run with the config it was started with (see :func:`run_loop`)."""
    layout, cfg = open_run(run_dir)
    return run_loop(layout, cfg, executor, progress=progress, tracker=tracker)
