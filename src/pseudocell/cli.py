"""The ``pseudocell`` command line (typer).

Domain errors (:class:`~pseudocell.errors.PseudocellError`) end with exit code 1 and a
one-line message; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from pseudocell import __version__
from pseudocell.errors import InvalidInputError, PseudocellError

__all__ = ["app", "main"]

logger = logging.getLogger("pseudocell")

app = typer.Typer(
    name="pseudocell",
    help="Cell detection from a few annotated points, grown by PU pseudo-labelling.\n\n"
         "Example: pseudocell run --images imgs/ --points clicks.csv --out runs/exp1",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state: dict[str, Any] = {"quiet": False, "level": logging.INFO, "console": None}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pseudocell {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    log_level: Annotated[str, typer.Option(help="Logging level: DEBUG, INFO, WARNING.")] = "INFO",
    quiet: Annotated[bool, typer.Option("--quiet", help="Only warnings and the result table.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Configure logging once, for every command."""
    from rich.console import Console
    from rich.logging import RichHandler

    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        raise typer.BadParameter(f"{log_level!r}: use DEBUG, INFO or WARNING",
                                 param_hint="--log-level")
    _state.update(quiet=quiet, level=level, console=Console(stderr=True))
    shown = logging.WARNING if quiet else level
    handler = RichHandler(console=_state["console"], show_path=False, rich_tracebacks=False)
    handler.setLevel(shown)
    root = logging.getLogger("pseudocell")
    root.handlers[:] = [handler]
    root.setLevel(min(level, logging.INFO))  # the run's log file always gets INFO
    # MLflow configures its own loggers when imported; keep its database set-up chatter
    # out of the console unless asked for
    if level > logging.DEBUG:
        import os

        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        for name in ("mlflow", "alembic"):  # in case they were imported already
            logging.getLogger(name).setLevel(logging.WARNING)


def _fail(e: PseudocellError) -> None:
    typer.secho(f"error: {e}", fg="red", err=True)
    raise typer.Exit(code=1)


def _console():
    from rich.console import Console

    return _state["console"] or Console(stderr=True)


def _load_config(config: Path | None, overrides: dict[str, Any]):
    """Config file (or defaults) with the CLI flags applied, validated once."""
    from pseudocell.config import Config, load_config

    if config is not None:
        return load_config(config, overrides)
    return Config.from_dict({k: v for k, v in overrides.items() if v is not None})


ExecutorOpt = Annotated[str, typer.Option(
    "--executor", help="local (in this process) or ray (stages as Ray actors).")]
AddressOpt = Annotated[str | None, typer.Option(
    help="Ray cluster to attach to with --executor ray: 'auto' (the cluster of this node) "
         "or 'ray://HOST:10001'. Default: start a local Ray.")]
PoolOpt = Annotated[int | None, typer.Option(
    help="Ray: predictor actors for predict/extract_patches (default: one per CPU/GPU).")]
TrainOpt = Annotated[str, typer.Option(
    help="Ray: 'ray_train' (TorchTrainer DDP), 'actor' (one actor) or 'auto' (Ray Train "
         "only with --train-workers > 1).")]
WorkersOpt = Annotated[int, typer.Option(help="Ray Train workers (data-parallel replicas).")]
WarmOpt = Annotated[bool, typer.Option(
    "--warm-up/--no-warm-up", help="Ray: start every actor at the first stage.")]
RayEnvOpt = Annotated[list[str] | None, typer.Option(
    "--ray-env", help="Ray: forward this environment variable of your shell to every "
                      "actor (repeat for more), e.g. --ray-env AWS_ENDPOINT_URL_S3 for a "
                      "MinIO store the nodes do not know.")]
GpuOpt = Annotated[bool | None, typer.Option(
    "--use-gpu/--no-gpu", help="Ray: request GPUs (default: when the cluster has any).")]
TrackingUriOpt = Annotated[str | None, typer.Option(
    "--tracking-uri", help="MLflow tracking URI, e.g. http://mlflow:5000 (default: the "
                           "run's own sqlite:///RUN/mlflow.db, or what the run used before).")]
ExperimentOpt = Annotated[str | None, typer.Option(
    help="MLflow experiment (default 'pseudocell', or what the run used before).")]
TrackOpt = Annotated[bool, typer.Option(
    "--track/--no-track", help="Record the run in MLflow (params, per-round metrics, "
                               "overlays, model).")]


def _execute(layout, cfg, executor, *, track: bool, tracking_uri: str | None,
             experiment: str | None) -> dict:
    """Run (or resume) the loop with the run's log file, MLflow tracking and progress
    bars; print the summary."""
    import time

    from pseudocell.cli_progress import RunProgress
    from pseudocell.orchestrator.run import run_loop
    from pseudocell.orchestrator.tracking import Tracker

    Path(layout.local_dir).mkdir(parents=True, exist_ok=True)
    log = logging.FileHandler(Path(layout.local_dir) / "pseudocell.log")
    log.setLevel(_state["level"] if _state["level"] < logging.INFO else logging.INFO)
    log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(log)
    t0 = time.perf_counter()
    try:
        tracker = Tracker(layout, tracking_uri=tracking_uri, experiment=experiment) \
            if track else None
        console = _console()
        bars = not _state["quiet"] and console.is_terminal
        with RunProgress(cfg.rounds, console, enabled=bars) as progress:
            metrics = run_loop(layout, cfg, executor, progress=progress, tracker=tracker)
            progress.finish()
    finally:
        logger.removeHandler(log)
        log.close()
    if metrics["rounds"]:
        _summary(layout, metrics, tracker, time.perf_counter() - t0)
    typer.echo(f"done: detections in {layout.final}/detections.csv")
    return metrics


def _summary(layout, metrics: dict, tracker, seconds: float) -> None:
    """Final table: rounds, labels, detections, time, where the record is."""
    from rich.console import Console
    from rich.table import Table

    from pseudocell.storage.manifest import read_manifest

    root = layout.root
    if any(len(r) > 3 for r in metrics["rounds"]):
        print_round_table(metrics)
    t = Table(title="run summary", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("run directory", str(root))
    last = metrics["rounds"][-1]
    t.add_row("rounds", f"{last['round']} pseudo-labelling + the final detector")
    if "labels_pos" in last:
        t.add_row("final detector trained on",
                  f"{last['labels_pos']} positive and {last['labels_neg']} negative points")
    pred = read_manifest(layout.manifest(last["round"], "predict")) or {}
    n = pred.get("metrics", {}).get("n_detections", "?")
    t.add_row("detections", f"{n} cells: {layout.final}/detections.csv (napari), "
                            "detections_geojson/ (QuPath)")
    t.add_row("wall time", f"{seconds / 60:.1f} min")
    if tracker is not None:
        where = f"{tracker.uri}\nexperiment {tracker.experiment!r}, run {tracker.run_id}"
        if tracker.pending():
            where += (f"\n{tracker.pending()} records NOT pushed: "
                      f"pseudocell sync {root}")
        t.add_row("MLflow", where)
        if tracker.uri.startswith("sqlite:"):
            t.add_row("look at it", f"pseudocell ui {root}")
    t.add_row("log", str(Path(layout.local_dir) / "pseudocell.log"))
    Console(width=max(Console().width, 100)).print(t)


def _forwarded_env(names: list[str] | None) -> dict[str, str]:
    """``--ray-env NAME``: the values of these variables in this shell."""
    missing = [n for n in names or [] if n not in os.environ]
    if missing:
        raise InvalidInputError(f"--ray-env {' '.join(missing)}: not set in this shell; "
                                "export it first or drop the option")
    return {n: os.environ[n] for n in names or []}


def _executor(executor: str, address: str | None, pool_size: int | None, train: str,
              train_workers: int, use_gpu: bool | None, warm_up: bool = True,
              ray_env: list[str] | None = None):
    """The executor named on the command line (a context manager)."""
    import contextlib

    from pseudocell.orchestrator.executors import LocalExecutor

    if executor == "local":
        for flag, value in (("--address", address), ("--ray-env", ray_env)):
            if value:
                raise InvalidInputError(f"{flag} needs --executor ray")
        return contextlib.nullcontext(LocalExecutor())
    if executor != "ray":
        raise InvalidInputError(f"--executor {executor!r}: use 'local' or 'ray'")
    try:
        from pseudocell.orchestrator.ray_executor import RayExecutor, RayOptions
    except ImportError as e:
        raise InvalidInputError("--executor ray needs Ray: pip install 'pseudocell[ray]' "
                                f"({e})") from e
    return RayExecutor(RayOptions(address=address, pool_size=pool_size, train=train,
                                  train_workers=train_workers, use_gpu=use_gpu,
                                  warm_up=warm_up, env_vars=_forwarded_env(ray_env)))


def print_round_table(metrics: dict) -> None:
    """The per-round table (like Table 2 of Fujii et al. 2021) on stdout."""
    from rich.console import Console

    from pseudocell.orchestrator.report import round_table

    Console(width=max(Console().width, 130)).print(round_table(metrics))


@app.command()
def run(
    images: Annotated[str, typer.Option(help="Folder of 2-D grayscale or RGB PNG/TIFF images "
                                             "(a path or e.g. s3://bucket/images).")],
    points: Annotated[str, typer.Option(help="Annotated cell centres: napari points CSV or "
                                              "'image,y,x' CSV.")],
    out: Annotated[str, typer.Option(help="Run directory (created): a path or an object-store "
                                          "URI such as s3://bucket/runs/exp1.")],
    config: Annotated[str | None, typer.Option(help="TOML config file.")] = None,
    gt: Annotated[str | None, typer.Option(help="Optional full ground truth of the training "
                                                 "images (CSV), for evaluation only.")] = None,
    eval_images: Annotated[str | None, typer.Option(help="Optional held-out images (evaluation "
                                                          "only; never used for training).")] = None,
    eval_gt: Annotated[str | None, typer.Option(help="Ground truth of --eval-images (CSV).")] = None,
    pattern: Annotated[str, typer.Option(help="Glob selecting images in --images.")] = "*",
    rounds: Annotated[int | None, typer.Option(help="Override config 'rounds'.")] = None,
    alpha: Annotated[float | None, typer.Option(help="Override config 'alpha'.")] = None,
    beta: Annotated[float | None, typer.Option(help="Override config 'beta'.")] = None,
    p: Annotated[float | None, typer.Option(help="Override config 'p'.")] = None,
    seed: Annotated[int | None, typer.Option(help="Override config 'seed'.")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda[:N].")] = None,
    force: Annotated[bool, typer.Option("--force", help="Delete an existing run directory "
                                                        "that has a different config.")] = False,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    pool_size: PoolOpt = None,
    train: TrainOpt = "auto",
    train_workers: WorkersOpt = 1,
    use_gpu: GpuOpt = None,
    ray_env: RayEnvOpt = None,
    tracking_uri: TrackingUriOpt = None,
    experiment: ExperimentOpt = None,
    track: TrackOpt = True,
) -> None:
    """Run the pseudo-label loop on your images and points.

    Example: pseudocell run --images imgs/ --points clicks.csv --out runs/exp1 --rounds 2

    On a Ray cluster: pseudocell run ... --executor ray --address auto
    """
    from pseudocell.orchestrator.run import RunInputs, prepare_run
    from pseudocell.validation import load_image_folder, load_points

    try:
        cfg = _load_config(config, {"rounds": rounds, "alpha": alpha, "beta": beta, "p": p,
                                    "seed": seed, "device": device})
        imgs = load_image_folder(images, pattern=pattern, name="--images")
        pts = load_points(points, imgs, name="--points")
        gt_t = load_points(gt, imgs, name="--gt") if gt is not None else None
        ev_imgs = ev_gt = None
        if eval_images is not None:
            ev_imgs = load_image_folder(eval_images, name="--eval-images")
            if eval_gt is not None:
                ev_gt = load_points(eval_gt, ev_imgs, name="--eval-gt")
        elif eval_gt is not None:
            raise InvalidInputError("--eval-gt needs --eval-images")
        # the executor (and Ray) starts before anything is written: a bad --executor
        # option leaves no run directory behind
        with _executor(executor, address, pool_size, train, train_workers, use_gpu,
                       ray_env=ray_env) as ex:
            layout = prepare_run(out, cfg, RunInputs(imgs, pts, gt_t, ev_imgs, ev_gt),
                                 force=force)
            _execute(layout, cfg, ex, track=track, tracking_uri=tracking_uri,
                     experiment=experiment)
    except PseudocellError as e:
        _fail(e)


@app.command()
def resume(
    run_dir: Annotated[str, typer.Argument(help="Run directory of a stopped run (path or "
                                                "s3:// URI).")],
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    pool_size: PoolOpt = None,
    train: TrainOpt = "auto",
    train_workers: WorkersOpt = 1,
    use_gpu: GpuOpt = None,
    warm_up: WarmOpt = True,
    ray_env: RayEnvOpt = None,
    tracking_uri: TrackingUriOpt = None,
    experiment: ExperimentOpt = None,
    track: TrackOpt = True,
) -> None:
    """Finish a stopped run from its last finished stage (same config, same result).

    The MLflow record continues in the same parent run.

    Example: pseudocell resume runs/exp1 [--executor ray --address auto]
    """
    from pseudocell.orchestrator.run import open_run

    try:
        layout, cfg = open_run(run_dir)
        with _executor(executor, address, pool_size, train, train_workers, use_gpu,
                       warm_up, ray_env) as ex:
            _execute(layout, cfg, ex, track=track, tracking_uri=tracking_uri,
                     experiment=experiment)
    except PseudocellError as e:
        _fail(e)


def _tracked_run(run_dir: str):
    from pseudocell.orchestrator.tracking import Tracker
    from pseudocell.storage.fs import resolve_root
    from pseudocell.storage.layout import RunLayout

    layout = RunLayout(resolve_root(run_dir))
    if not (Path(layout.local_dir) / "tracking" / "state.json").exists():
        raise InvalidInputError(f"{str(run_dir)!r} has no MLflow record (tracking/state.json);"
                                " was it run with --no-track, or is it not a run directory?")
    return Tracker(layout)


@app.command()
def ui(
    run_dir: Annotated[str, typer.Argument(help="Run directory (path or s3:// URI).")],
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
) -> None:
    """Open the MLflow UI of a run (its embedded sqlite store), bound to 127.0.0.1.

    Example: pseudocell ui runs/exp1 --port 5000   then browse http://127.0.0.1:5000
    """
    import os
    import subprocess
    import sys

    try:
        tr = _tracked_run(run_dir)
    except PseudocellError as e:
        _fail(e)
    if not tr.uri.startswith("sqlite:"):
        typer.echo(f"this run is tracked on the server {tr.uri}: open it there "
                   f"(experiment {tr.experiment!r}, run {tr.run_id})")
        return
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tr.uri,
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    typer.echo(f"MLflow UI of {run_dir} at http://127.0.0.1:{port} (Ctrl-C to stop)")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    try:
        raise typer.Exit(subprocess.call(cmd, env=env))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@app.command()
def sync(
    run_dir: Annotated[str, typer.Argument(help="Run directory (path or s3:// URI).")],
    tracking_uri: TrackingUriOpt = None,
    experiment: ExperimentOpt = None,
) -> None:
    """Push a run's MLflow records that could not be sent (server down, no MLflow).

    With --tracking-uri, copies the whole record of the run to that tracking store.

    Example: pseudocell sync runs/exp1 --tracking-uri http://mlflow:5000
    """
    from pseudocell.orchestrator.tracking import sync as _sync

    try:
        _tracked_run(run_dir)
        run_id, n = _sync(run_dir, tracking_uri, experiment)
    except PseudocellError as e:
        _fail(e)
    typer.echo(f"pushed {n} record(s); MLflow run {run_id}")


@app.command()
def export(
    run_dir: Annotated[str, typer.Argument(help="Run directory (path or s3:// URI).")],
    out: Annotated[Path, typer.Option(help="Output folder.")],
    fmt: Annotated[str, typer.Option("--format", help="napari | geojson (QuPath, one file "
                                                      "per image) | csv.")] = "napari",
    rnd: Annotated[int | None, typer.Option("--round", help="Round (default: the last).")] = None,
    what: Annotated[str, typer.Option(help="labels, detections or labels,detections.")] =
        "labels,detections",
) -> None:
    """Export a round's labels (annotated + pseudo-labels) and detections.

    Example: pseudocell export runs/exp1 --format geojson --round 1 --out qupath/
    """
    from pseudocell.orchestrator.export import export_round

    try:
        files = export_round(run_dir, out, rnd=rnd, fmt=fmt,
                             what=tuple(w.strip() for w in what.split(",") if w.strip()))
    except PseudocellError as e:
        _fail(e)
    typer.echo(f"wrote {len(files)} file(s) to {out}")


@app.command()
def tune(
    out: Annotated[Path | None, typer.Option(help="Sweep directory (created).")] = None,
    images: Annotated[Path | None, typer.Option(help="Training images (as for `run`).")] = None,
    points: Annotated[Path | None, typer.Option(help="Annotated points of the training "
                                                     "images.")] = None,
    val_images: Annotated[Path | None, typer.Option(help="Validation images: the objective "
                                                         "is their F1; never trained on.")] = None,
    val_gt: Annotated[Path | None, typer.Option(help="Full ground truth of --val-images.")] = None,
    test_images: Annotated[Path | None, typer.Option(help="Images kept for the final test: "
                                                          "refused if any is a validation "
                                                          "image.")] = None,
    config: Annotated[Path | None, typer.Option(help="Base config (TOML); the space's "
                                                     "parameters replace its values.")] = None,
    space: Annotated[str, typer.Option(help="default | wide | a TOML file of "
                                            "distributions.")] = "default",
    samples: Annotated[int, typer.Option(help="Number of trials.")] = 8,
    scheduler: Annotated[str, typer.Option(help="asha (stop poor trials after a round) or "
                                                "fifo.")] = "asha",
    trial_cpus: Annotated[float, typer.Option(help="CPUs per trial.")] = 1.0,
    trial_gpus: Annotated[float, typer.Option(help="GPU fraction per trial.")] = 0.0,
    max_concurrent: Annotated[int | None, typer.Option(help="Trials at once (default: as "
                                                            "resources allow).")] = None,
    search_seed: Annotated[int, typer.Option(help="Seed of the random search.")] = 0,
    pattern: Annotated[str, typer.Option(help="Glob selecting images.")] = "*",
    resume_dir: Annotated[Path | None, typer.Option(
        "--resume", help="Continue a killed sweep in this directory.")] = None,
    address: AddressOpt = None,
    tracking_uri: TrackingUriOpt = None,
    experiment: ExperimentOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Delete a non-empty --out.")] = False,
) -> None:
    """Search alpha, beta, p, lam (and more with --space wide) with Ray Tune.

    Every trial is a pseudocell run; its objective is the validation F1 after each round
    (ASHA stops poor trials early). Writes OUT/best.toml for `pseudocell run --config`.

    Example: pseudocell tune --images tr/ --points clicks.csv --val-images val/
    --val-gt val.csv --test-images test/ --out sweeps/s1 --samples 16

    Resume a killed sweep: pseudocell tune --resume sweeps/s1
    """
    from pseudocell.orchestrator.sweep import SweepOptions, prepare_sweep, run_sweep
    from pseudocell.tune_spaces import resolve

    try:
        if resume_dir is not None:
            sweep_dir = resume_dir
        else:
            missing = [n for n, v in (("--out", out), ("--images", images), ("--points", points),
                                      ("--val-images", val_images), ("--val-gt", val_gt))
                       if v is None]
            if missing:
                raise InvalidInputError(f"tune needs {', '.join(missing)} (or --resume DIR)")
            from pseudocell.orchestrator.run import RunInputs
            from pseudocell.validation import load_image_folder, load_points

            base = _load_config(config, {})
            options = SweepOptions(space=resolve(space), num_samples=samples,
                                   scheduler=scheduler, trial_cpus=trial_cpus,
                                   trial_gpus=trial_gpus, max_concurrent=max_concurrent,
                                   search_seed=search_seed, tracking_uri=tracking_uri,
                                   experiment=experiment)
            imgs = load_image_folder(images, pattern=pattern, name="--images")
            pts = load_points(points, imgs, name="--points")
            vimgs = load_image_folder(val_images, pattern=pattern, name="--val-images")
            vgt = load_points(val_gt, vimgs, name="--val-gt")
            timgs = load_image_folder(test_images, pattern=pattern, name="--test-images") \
                if test_images is not None else None
            sweep_dir = prepare_sweep(out, base, RunInputs(imgs, pts, None, vimgs, vgt),
                                      options, test_images=timgs, force=force)
        result = run_sweep(sweep_dir, resume=resume_dir is not None, address=address)
    except PseudocellError as e:
        _fail(e)
    _print_trials(result)
    if result["best"] is not None:
        typer.echo(f"best config: {Path(sweep_dir) / 'best.toml'}   "
                   f"(pseudocell run --config {Path(sweep_dir) / 'best.toml'} ...)")


def _print_trials(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = result["trials"]
    t = Table(title=f"trials, best first ({result['seconds'] / 60:.1f} min)")
    keys = [k for k in (rows[0] if rows else {}) if k not in ("val_precision", "val_recall")]
    for k in keys:
        t.add_column(k, justify="right")
    for r in rows:
        t.add_row(*["-" if r[k] is None else f"{r[k]:.4g}" if isinstance(r[k], float)
                    else str(r[k]) for k in keys])
    Console(width=max(Console().width, 120)).print(t)


@app.command()
def detect(
    model: Annotated[Path, typer.Option(help="model.pt of a run (e.g. RUN/final/model.pt) "
                                             "or a run directory.")],
    images: Annotated[Path, typer.Option(help="Folder of images to detect cells in.")],
    out: Annotated[Path, typer.Option(help="Output folder for detections and overlays.")],
    pattern: Annotated[str, typer.Option(help="Glob selecting images.")] = "*",
    threshold: Annotated[float | None, typer.Option(help="Peak threshold (default: the "
                                                         "run's 'peak_threshold').")] = None,
    overlays: Annotated[bool, typer.Option(help="Write overlay PNGs.")] = True,
) -> None:
    """Detect cells with a trained model; writes napari and plain CSVs.

    Example: pseudocell detect --model runs/exp1 --images new_imgs/ --out det/
    """
    from pseudocell.orchestrator.detect import detect_folder

    try:
        n = detect_folder(model, images, out, pattern=pattern, threshold=threshold,
                          overlays=overlays)
    except PseudocellError as e:
        _fail(e)
    typer.echo(f"{n} cells detected; see {out / 'detections.csv'}")


@app.command()
def evaluate(
    pred: Annotated[Path, typer.Option(help="Predicted points CSV ('image,y,x' or napari).")],
    gt: Annotated[Path, typer.Option(help="Ground-truth points CSV (same layout rules).")],
    radius: Annotated[float, typer.Option(help="Matching radius in px.")] = 15.0,
    images: Annotated[Path | None, typer.Option(help="Image folder; needed to map napari "
                                                     "frames to images and to check bounds.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the numbers here.")] = None,
) -> None:
    """Precision / recall / F1 with optimal one-to-one matching within --radius.

    Example: pseudocell evaluate --pred det/detections_table.csv --gt gt.csv --radius 15
    """
    from pseudocell.orchestrator.detect import evaluate_files

    try:
        res = evaluate_files(pred, gt, radius=radius, images=images)
    except PseudocellError as e:
        _fail(e)
    typer.echo(f"radius={radius:g}px  TP={res['tp']} FP={res['fp']} FN={res['fn']}  "
               f"P={res['precision']:.3f} R={res['recall']:.3f} F1={res['f1']:.3f}")
    if json_out is not None:
        json_out.write_text(json.dumps(res, indent=1))


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Run directory of the demo.")] = Path("runs/demo"),
    data_dir: Annotated[Path | None, typer.Option(help="Folder with NNNcells.png/NNNdots.png "
                                                       "(default: ../shared/data or the "
                                                       "download cache).")] = None,
    rounds: Annotated[int | None, typer.Option(help="Override 'rounds' (default 2).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Start again even if OUT holds a "
                                                        "run with another config.")] = False,
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    tracking_uri: TrackingUriOpt = None,
    experiment: ExperimentOpt = None,
    track: TrackOpt = True,
) -> None:
    """Run the loop on real bright-field images with 90 % of the points hidden.

    Images 001-040 train (10 % of their points kept, seed 0), 041-050 are held out.
    Prints the per-round table and writes OUT/metrics.json.

    Example: pseudocell demo --out runs/demo   (on Ray: add --executor ray)
    """
    from pseudocell.orchestrator.demo import DEMO_CONFIG, demo_inputs
    from pseudocell.orchestrator.run import prepare_run

    cfg = DEMO_CONFIG if rounds is None else DEMO_CONFIG.replace(rounds=rounds)
    try:
        inputs = demo_inputs(cfg, data_dir=data_dir)
        with _executor(executor, address, None, "auto", 1, None) as ex:
            layout = prepare_run(out, cfg, inputs, force=force)
            _execute(layout, cfg, ex, track=track, tracking_uri=tracking_uri,
                     experiment=experiment)
    except PseudocellError as e:
        _fail(e)
    typer.echo(f"metrics: {out / 'metrics.json'}   overlays: {out / 'final' / 'overlays'}")


@app.command()
def bench(
    out: Annotated[Path, typer.Option(help="Folder for the runs, the report and the JSON.")] = Path("runs/bench"),
    quick: Annotated[bool, typer.Option("--quick", help="1 seed, 10 training and 5 test images, "
                                                        "small budgets: a few minutes.")] = False,
    datasets: Annotated[Path | None, typer.Option(help="TOML file with \\[\\[dataset]] tables "
                                                       "(default: the shared bright-field set).")] = None,
    dataset: Annotated[list[str] | None, typer.Option(help="A dataset as key=value pairs, e.g. "
                                                           "name=x,images=DIR,gt=dots,gt_replace=cells:dots,radius=15 "
                                                           "(repeatable).")] = None,
    seeds: Annotated[int, typer.Option(help="Number of seeds (0..n-1).")] = 3,
    keep: Annotated[float, typer.Option(help="Fraction of training points kept.")] = 0.1,
    config: Annotated[Path | None, typer.Option(help="TOML config of the detector and loop.")] = None,
    perf: Annotated[bool, typer.Option(help="Also run the speed/memory benchmarks.")] = True,
) -> None:
    """Compare pseudocell with every baseline on held-out images; speed and memory too.

    Writes OUT/quality.json, OUT/quality.md (and OUT/perf.json).

    Example: pseudocell bench --quick
    """
    from pseudocell.bench.datasets import default_datasets, parse_dataset_arg, read_dataset_toml
    from pseudocell.bench.quality import QUICK_CONFIG, markdown_report, run_quality, write_result

    try:
        specs = []
        if datasets is not None:
            specs += read_dataset_toml(datasets)
        specs += [parse_dataset_arg(d) for d in dataset or []]
        specs = specs or default_datasets()
        if config is not None:
            cfg = _load_config(config, {})
        else:
            from pseudocell.config import Config

            cfg = QUICK_CONFIG if quick else Config()
        if not 0.0 < keep <= 1.0:
            raise InvalidInputError(f"--keep must be in (0, 1], got {keep}")
        result = run_quality(specs, cfg=cfg, seeds=range(1 if quick else seeds), keep=keep,
                             out_dir=out, max_train=10 if quick else None,
                             max_test=5 if quick else None)
    except PseudocellError as e:
        _fail(e)
    write_result(result, out / "quality.json")
    report = markdown_report(result)
    (out / "quality.md").write_text(report + "\n")
    typer.echo(report)
    if perf:
        from pseudocell.bench.perf_report import main as perf_main

        perf_main(["--out", str(out / "perf.json")] + (["--quick"] if quick else []))
    typer.echo(f"wrote {out / 'quality.json'}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
