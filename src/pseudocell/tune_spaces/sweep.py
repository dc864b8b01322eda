"""Hyper-parameter sweeps with Ray Tune: every trial is a pseudocell run.

A sweep directory holds::

    sweep.json          what was asked (base config, space, samples, resources, tracking)
    inputs/             training images + points, validation images + full ground truth
    tune/               Ray Tune's experiment state (``Tuner.restore`` resumes from it)
    trials/<trial id>/  one run directory per trial (same stages and stores as `run`)
    shared/             stage outputs the trials share (round 0 of a selection sweep)
    mlflow.db           default tracking store: one parent run, one child run per trial
    best.toml           the best trial's config (``pseudocell run --config best.toml``)
    trials.csv          every trial, best first

The objective is the F1 (at the config's matching ``radius``) of each round's detector on
the validation images, reported after every round, so ASHA can stop a poor trial after
its first round (its second when every trial shares round 0: :func:`first_rung`).
Validation images feed only this objective, never a trial's labels;
images meant for the final test must not be among them (:func:`prepare_sweep` refuses).
A trial killed with the driver resumes from its last finished stage.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pseudocell.config import Config, dump_toml
from pseudocell.errors import InvalidInputError, RunDirectoryError
from pseudocell.orchestrator.run import inputs_fingerprint, write_inputs
from pseudocell.storage.layout import RunLayout
from pseudocell.tune_spaces.spaces import check_space
from pseudocell.validation import ImageSet, RunInputs, check_disjoint_images

__all__ = ["SweepOptions", "prepare_sweep", "run_sweep", "OBJECTIVE", "trial_table",
           "base_point", "first_rung", "round0_shared", "SHARED"]

logger = logging.getLogger(__name__)

#: Name of the metric Tune optimises (maximised).
OBJECTIVE = "val_f1"
#: The folder of a sweep where trials share stage outputs (``SweepOptions.share``).
SHARED = "shared"


@dataclass(frozen=True)
class SweepOptions:
    """How a sweep samples and runs trials.

    Parameters
    ----------
    space : dict
        Search-space description (see :mod:`pseudocell.tune_spaces`).
    num_samples : int, default=8
        Trials to sample.
    scheduler : {"asha", "fifo"}, default="asha"
        ASHA stops trials whose validation F1 trails at a round (grace period: one round).
    trial_cpus : float, default=1
        CPUs reserved per trial (also its torch threads, unless the config sets
        ``num_threads``).
    trial_gpus : float, default=0
        GPU fraction per trial (e.g. 0.5: two trials per GPU).
    max_concurrent : int or None
        Trials at once (default: as many as the resources allow).
    search_seed : int, default=0
        Seed of the random search (the trials' own seed is the config's ``seed``).
    tracking_uri, experiment : str or None
        MLflow store (default ``sqlite:///SWEEP/mlflow.db``) and experiment
        (default ``"pseudocell-tune"``).
    share : bool, default=True
        Trials share the stages whose inputs and read settings are equal (content
        addressed, under ``SWEEP/shared``; see :mod:`pseudocell.orchestrator.share`):
        with the selection settings searched, round 0's detector and PU learner are
        computed once. Results are the same bytes either way.
    """

    space: dict = field(default_factory=dict)
    num_samples: int = 8
    scheduler: str = "asha"
    trial_cpus: float = 1.0
    trial_gpus: float = 0.0
    max_concurrent: int | None = None
    search_seed: int = 0
    tracking_uri: str | None = None
    experiment: str | None = None
    share: bool = True

    def __post_init__(self) -> None:
        problems = []
        if self.num_samples < 1:
            problems.append(f"num_samples={self.num_samples} must be >= 1")
        if self.scheduler not in ("asha", "fifo"):
            problems.append(f"scheduler={self.scheduler!r}: use 'asha' or 'fifo'")
        if not self.trial_cpus > 0:
            problems.append(f"trial_cpus={self.trial_cpus} must be > 0")
        if self.trial_gpus < 0:
            problems.append(f"trial_gpus={self.trial_gpus} must be >= 0")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            problems.append(f"max_concurrent={self.max_concurrent} must be >= 1")
        if problems:
            raise InvalidInputError("sweep options: " + "; ".join(problems))
        check_space(self.space)


def _sweep_file(sweep_dir: Path) -> Path:
    return sweep_dir / "sweep.json"


def prepare_sweep(sweep_dir: str | Path, base: Config, inputs: RunInputs, options: SweepOptions,
                  *, test_images: ImageSet | None = None, force: bool = False) -> Path:
    """Validate and write a new sweep directory (inputs and ``sweep.json``).

    ``inputs.eval_images`` / ``inputs.eval_gt`` are the validation set (required).
    ``test_images`` (optional) are the images the tuned config will finally be judged
    on: any overlap with the validation images is refused.
    """
    sweep_dir = Path(sweep_dir).resolve()
    check_space(options.space, mode=base.mode)
    if inputs.eval_images is None or inputs.eval_gt is None:
        raise InvalidInputError("a sweep needs validation images with full ground truth "
                                "(--val-images and --val-gt): its objective is their F1")
    if test_images is not None:
        check_disjoint_images(inputs.eval_images, test_images, "--val-images", "--test-images")
    overlap = set(inputs.eval_images.paths) & set(inputs.images.paths)
    if overlap:
        logger.warning("%d validation image(s) are also training images (%s ...): the "
                       "objective then scores images the loop labels", len(overlap),
                       sorted(overlap)[0])
    if sweep_dir.exists() and any(sweep_dir.iterdir()):
        if not force:
            raise RunDirectoryError(f"sweep directory {str(sweep_dir)!r} is not empty: resume "
                                    "it with `pseudocell tune --resume DIR`, choose another "
                                    "--out, or pass --force to delete it")
        logger.warning("deleting sweep directory %s (--force)", sweep_dir)
        shutil.rmtree(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_inputs(RunLayout(str(sweep_dir)), inputs, inputs_fingerprint(inputs))
    spec = {"base_config": base.to_dict(), "options": asdict(options),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    _sweep_file(sweep_dir).write_text(json.dumps(spec, indent=1))
    return sweep_dir


def read_sweep(sweep_dir: str | Path) -> tuple[Config, SweepOptions]:
    path = _sweep_file(Path(sweep_dir))
    if not path.exists():
        raise RunDirectoryError(f"{str(sweep_dir)!r} is not a sweep directory (no sweep.json); "
                                "start one with `pseudocell tune`")
    spec = json.loads(path.read_text())
    return Config.from_dict(spec["base_config"]), SweepOptions(**spec["options"])


def trial_config(base: Config, params: dict[str, Any], trial_cpus: float) -> Config:
    """The config of one trial: the base with the sampled values (ints where the field
    is an int) and, unless set, one torch thread per reserved CPU."""
    cast = {k: int(v) if isinstance(getattr(base, k), int) and not isinstance(v, bool)
            else v for k, v in params.items()}
    if base.num_threads is None:
        cast["num_threads"] = max(1, int(trial_cpus))
    return base.replace(**cast)


def _trial(params: dict, *, sweep_dir: str, parent_run_id: str | None) -> None:
    """Tune function trainable: one pseudocell run, reporting validation F1 per round."""
    from ray import tune

    from pseudocell.orchestrator.executors import LocalExecutor
    from pseudocell.orchestrator.run import prepare_run_from, run_loop
    from pseudocell.orchestrator.share import StageCache
    from pseudocell.tracking import Tracker

    root = Path(sweep_dir)
    base, options = read_sweep(root)
    cfg = trial_config(base, params, options.trial_cpus)
    trial_id = tune.get_context().get_trial_id()
    layout = prepare_run_from(root / "trials" / trial_id, cfg, RunLayout(str(root)))
    ckpt = tune.get_checkpoint()
    reported = -1
    if ckpt is not None:
        with ckpt.as_directory() as d:
            reported = json.loads((Path(d) / "round.json").read_text())["round"]
    key = f"heldout@{cfg.radius:g}"

    final_row: dict | None = None  # the last round's row, reported after run_loop

    def report(rnd: int, row: dict) -> None:
        nonlocal reported
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "round.json").write_text(json.dumps({"round": rnd}))
            reported = rnd
            tune.report({OBJECTIVE: row[f"{key}/f1"],
                         "val_precision": row[f"{key}/precision"],
                         "val_recall": row[f"{key}/recall"], "round": rnd},
                        checkpoint=tune.Checkpoint.from_directory(d))

    class TuneTracker(Tracker):
        """Reports each round to Tune right after journalling it, so a trial the
        scheduler stops has its last reported round in MLflow too. The last round is
        reported only after ``final/`` is written and the MLflow run ended: the
        scheduler may stop a trial at any report (ASHA does at a rung on the last
        round), and a trial that reported every round must be a finished one."""

        def round_recorded(self, rnd: int) -> bool:  # journalled *and* reported
            return super().round_recorded(rnd) and rnd <= reported

        def round_done(self, results, rnd: int) -> None:
            nonlocal final_row
            super().round_done(results, rnd)
            row = results.round_row(rnd)
            if rnd == cfg.rounds:
                final_row = row
            elif rnd > reported:
                report(rnd, row)

    tracker = TuneTracker(layout, tracking_uri=_tracking_uri(root, options),
                          experiment=_experiment(options), nest_under=parent_run_id,
                          light=True)
    cache = StageCache.at(str(root / SHARED)) if options.share else None
    run_loop(layout, cfg, LocalExecutor(), tracker=tracker, cache=cache)
    if final_row is not None and cfg.rounds > reported:
        report(cfg.rounds, final_row)


def _tracking_uri(root: Path, options: SweepOptions) -> str:
    from pseudocell.tracking import default_tracking_uri

    return options.tracking_uri or default_tracking_uri(root)


def _experiment(options: SweepOptions) -> str:
    return options.experiment or "pseudocell-tune"


def run_sweep(sweep_dir: str | Path, *, resume: bool = False, address: str | None = None,
              num_cpus: int | None = None) -> dict:
    """Run (or, with ``resume``, continue) the sweep in ``sweep_dir``.

    Returns ``{"best": {...}, "trials": [...]}`` and writes ``best.toml`` and
    ``trials.csv``. Trials the scheduler stopped end KILLED in MLflow, finished ones
    FINISHED, failed ones FAILED.
    """
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    from pseudocell.orchestrator.ray_executor import init_ray
    from pseudocell.tracking import Tracker
    from pseudocell.tune_spaces import to_tune

    root = Path(sweep_dir).resolve()
    base, options = read_sweep(root)
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    # a checkpoint per round is a few bytes; Tune's warning about frequent snapshots is noise
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    tracker = Tracker(RunLayout(str(root)), tracking_uri=_tracking_uri(root, options),
                      experiment=_experiment(options))
    tracker.start(base)
    tracker.params("sweep", {"space": options.space, "num_samples": options.num_samples,
                             "scheduler": options.scheduler,
                             "search_seed": options.search_seed})
    tracker.push()  # creates the database, experiment and parent run before any trial
    owns = init_ray(address, num_cpus)
    t0 = time.perf_counter()
    try:
        trainable = tune.with_resources(
            tune.with_parameters(_trial, sweep_dir=str(root), parent_run_id=tracker.run_id),
            {"cpu": options.trial_cpus, "gpu": options.trial_gpus})
        path = root / "tune"
        if resume:
            if not tune.Tuner.can_restore(str(path)):
                raise RunDirectoryError(f"{str(root)!r} has no Tune state to resume (it was "
                                        "killed before the first trial started); start it "
                                        "again with --force")
            tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True,
                                       resume_errored=True)
        else:
            max_rounds = _max_rounds(base, options.space)
            # max_t beyond the last report: a trial that is not stopped early returns by
            # itself, after writing its final outputs (at max_t Tune would stop it first)
            scheduler = (ASHAScheduler(time_attr="training_iteration",
                                       grace_period=first_rung(base, options),
                                       max_t=max_rounds + 2, reduction_factor=2)
                         if options.scheduler == "asha" else FIFOScheduler())
            tuner = tune.Tuner(
                trainable, param_space=to_tune(options.space),
                tune_config=tune.TuneConfig(
                    metric=OBJECTIVE, mode="max", scheduler=scheduler,
                    num_samples=options.num_samples,
                    search_alg=BasicVariantGenerator(
                        random_state=options.search_seed,
                        max_concurrent=options.max_concurrent or 0,
                        points_to_evaluate=[p for p in [base_point(base, options.space)]
                                            if p is not None])),
                run_config=tune.RunConfig(
                    name="tune", storage_path=str(root), verbose=0,
                    failure_config=tune.FailureConfig(max_failures=1),
                    callbacks=_fault_callbacks(tune)))
        grid = tuner.fit()
    except BaseException as e:
        tracker.fail(e)
        raise
    finally:
        if owns:
            ray.shutdown()
    rows = trial_table(root, base, options, grid)
    _end_trials(root, rows, _tracking_uri(root, options), _experiment(options), tracker.run_id)
    result = _write_results(root, base, options, rows, time.perf_counter() - t0)
    tracker.metrics("result", {f"best_{OBJECTIVE}": result["best"].get(OBJECTIVE) if
                               result["best"] else None, "trials": len(rows)})
    tracker.finish([(str(root / "trials.csv"), "")] +
                   ([(str(root / "best.toml"), "")] if (root / "best.toml").exists() else []))
    return result


def _fault_callbacks(tune) -> list:
    """With ``PSEUDOCELL_FAULT=kill_sweep:trial/N``, a Tune callback that SIGKILLs this
    driver when the N-th trial starts (the resume tests' deterministic kill point)."""
    from pseudocell.orchestrator.faults import FAULT_ENV, fault_requested, kill_self

    if "kill_sweep:" not in os.environ.get(FAULT_ENV, ""):
        return []

    class KillAtTrialStart(tune.Callback):
        started = 0

        def on_trial_start(self, iteration, trials, trial, **info):
            self.started += 1
            if fault_requested("kill_sweep", f"trial/{self.started}"):
                kill_self(f"the sweep at the start of trial {self.started}")

    return [KillAtTrialStart()]


def base_point(base: Config, space: dict) -> dict | None:
    """The base config's values of the searched parameters, when the space contains
    them: the sweep evaluates it first, so its best is never worse on the validation
    images than the config it started from."""
    point = {}
    for key, spec in space.items():
        v = getattr(base, key)
        if v is None:  # chosen by the run (e.g. a calibrated peak_threshold): no point
            return None
        inside = (v in spec["values"] if spec["type"] == "choice" else
                  spec["low"] <= v < spec["high"] if spec["type"] == "randint" else
                  spec["low"] <= v <= spec["high"])
        if not inside:
            return None
        point[key] = v
    return point


def round0_shared(base: Config, space: dict) -> bool:
    """Whether every trial's round-0 objective is the same number: no searched setting
    (``rounds`` aside, which no stage reads) is read by round 0's held-out detections or
    by the stage that scores them, so the trials share that detector
    (:attr:`~pseudocell.stages.base.StageSpec.ignores`)."""
    from pseudocell.stages.base import Input
    from pseudocell.stages.modes import get_mode

    mode = get_mode(base.mode)
    searched = set(space) - {"rounds"}
    stages = mode.stages_of(0, max(base.rounds, 1))
    scoring = [s for s in stages
               if any(isinstance(r, Input) and r.store == "eval_gt" for r in s.inputs.values())]
    product = mode.products.get("heldout_detections")
    if product is None or not scoring:
        return False
    needed = _upstream(mode, stages, product.stage) + scoring
    return all(searched <= s.ignores for s in needed)


def _upstream(mode, stages, name: str) -> list:
    """Stage ``name`` of round 0 and every stage of round 0 (or before it) it reads."""
    from pseudocell.stages.base import Labels, Output, Prepared

    by_name = {s.name: s for s in stages}
    seen: dict[str, Any] = {}
    todo = [name]
    while todo:
        spec = by_name[todo.pop()]
        if spec.name in seen:
            continue
        seen[spec.name] = spec
        for ref in spec.inputs.values():
            if isinstance(ref, Labels):
                ref = mode.initial_labels
            if isinstance(ref, Prepared) or (isinstance(ref, Output) and ref.offset == 0):
                todo.append(ref.stage)
    return list(seen.values())


def first_rung(base: Config, options: SweepOptions) -> int:
    """ASHA's grace period, in reports (the report of round r is iteration r + 1).

    When the trials share round 0 (:func:`round0_shared`), its report is the same value
    for every trial and a rung there decides nothing (ties never stop a trial), so the
    first rung is at round 1 (iteration 2); otherwise at round 0 (iteration 1)."""
    return 2 if options.share and round0_shared(base, options.space) else 1


def _max_rounds(base: Config, space: dict) -> int:
    spec = space.get("rounds")
    if spec is None:
        return base.rounds
    if spec["type"] == "choice":
        return int(max(spec["values"]))
    return int(spec["high"]) - (1 if spec["type"] == "randint" else 0)


def trial_table(root: Path, base: Config, options: SweepOptions, grid) -> list[dict]:
    """One row per trial: id, sampled params, rounds reported, last validation P/R/F1,
    status (finished / stopped early / error), best first."""
    rows = []
    for res in grid:
        m = res.metrics or {}
        params = {k: res.config[k] for k in options.space if k in res.config}
        cfg = trial_config(base, params, options.trial_cpus)
        done = int(m.get("training_iteration", 0) or 0)
        # the last round is reported after final/ is written (see _trial)
        status = ("error" if res.error else
                  "finished" if done >= cfg.rounds + 1 else "stopped early")
        rows.append({"trial_id": m.get("trial_id") or Path(res.path).name.split("_")[-1],
                     **params, "rounds_reported": done, OBJECTIVE: m.get(OBJECTIVE),
                     "val_precision": m.get("val_precision"),
                     "val_recall": m.get("val_recall"), "status": status})
    rows.sort(key=lambda r: (r["status"] != "finished",
                             -(r[OBJECTIVE] if r[OBJECTIVE] is not None else -math.inf)))
    return rows


def _end_trials(root: Path, rows: list[dict], tracking_uri: str, experiment: str,
                parent_run_id: str | None) -> None:
    """Push what trials journalled and end runs the scheduler stopped (KILLED): a stopped
    trial's process is gone before it can end its own MLflow run. The store, experiment
    and parent are the sweep's as now (a trial's state names those of the directory it
    ran in, which is another one when the sweep was copied or moved)."""
    from pseudocell.tracking import Tracker

    for r in rows:
        tdir = root / "trials" / r["trial_id"]
        if not (tdir / "tracking" / "state.json").exists():
            continue
        tr = Tracker(RunLayout(str(tdir)), tracking_uri=tracking_uri, experiment=experiment,
                     nest_under=parent_run_id, light=True)
        if tr.last_status() == "RUNNING":
            tr.end("KILLED" if r["status"] == "stopped early" else "FAILED")
        else:
            tr.push()


def _write_results(root: Path, base: Config, options: SweepOptions, rows: list[dict],
                   seconds: float) -> dict:
    finished = [r for r in rows if r["status"] == "finished" and r[OBJECTIVE] is not None]
    best = finished[0] if finished else next((r for r in rows if r[OBJECTIVE] is not None), None)
    keys = ["trial_id", *options.space, "rounds_reported", OBJECTIVE, "val_precision",
            "val_recall", "status"]
    with open(root / "trials.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    if best is not None:
        cfg = trial_config(base, {k: best[k] for k in options.space}, options.trial_cpus)
        cfg = cfg.replace(num_threads=base.num_threads)  # where to run is the user's choice
        (root / "best.toml").write_text(
            f"# best of {len(rows)} trials of sweep {root} (trial {best['trial_id']}):\n"
            f"# validation F1 {best[OBJECTIVE]:.4f} at {cfg.radius:g} px\n" + dump_toml(cfg))
    logger.info("sweep: %d trials in %.1f min; best %s", len(rows), seconds / 60,
                best and f"{best['trial_id']} {OBJECTIVE}={best[OBJECTIVE]:.4f}")
    result = {"best": best, "trials": rows, "seconds": seconds}
    (root / "sweep_result.json").write_text(json.dumps(result, indent=1))
    return result
