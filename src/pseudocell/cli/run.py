"""``pseudocell run``, ``resume`` and ``demo``: run a mode's pipeline with progress bars,
the run's log file, MLflow tracking and a summary."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated

import typer

from pseudocell.cli.app import command, console, state, with_options
from pseudocell.cli.options import ExecutorOptions, TrackingOptions
from pseudocell.errors import InvalidConfigError

__all__ = ["run", "resume", "demo", "execute", "print_round_table"]

logger = logging.getLogger("pseudocell")


def execute(layout, cfg, executor, tracking: TrackingOptions) -> dict:
    """Run (or resume) the pipeline with the run's log file, MLflow tracking and progress
    bars; print the summary."""
    from pseudocell.cli.progress import RunProgress
    from pseudocell.orchestrator.run import run_loop

    st = state()
    Path(layout.local_dir).mkdir(parents=True, exist_ok=True)
    log = logging.FileHandler(Path(layout.local_dir) / "pseudocell.log")
    log.setLevel(min(st.level, logging.INFO))
    log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(log)
    t0 = time.perf_counter()
    try:
        tracker = tracking.build(layout)
        con = console()
        bars = not st.quiet and con.is_terminal
        with RunProgress(cfg.rounds, con, enabled=bars) as progress:
            metrics = run_loop(layout, cfg, executor, progress=progress, tracker=tracker)
            progress.finish()
    finally:
        logger.removeHandler(log)
        log.close()
    if metrics["rounds"]:
        _summary(layout, cfg, metrics, tracker, time.perf_counter() - t0)
    typer.echo(f"done: detections in {layout.final}/detections.csv")
    return metrics


def _summary(layout, cfg, metrics: dict, tracker, seconds: float) -> None:
    """Final table: rounds, labels, detections, time, where the record is."""
    from rich.console import Console
    from rich.table import Table

    from pseudocell.results.reader import RunResults

    root = layout.root
    if any(len(r) > 3 for r in metrics["rounds"]):
        print_round_table(metrics)
    t = Table(title="run summary", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("run directory", str(root))
    rounds = metrics["rounds"]
    final = rounds[metrics.get("final_round", -1)]
    t.add_row("rounds", f"{rounds[-1]['round']} pseudo-labelling + the final detector")
    if metrics.get("final_reason"):
        t.add_row("final detector", f"[yellow]round {final['round']}: "
                                    f"{metrics['final_reason']}[/yellow]")
    if rounds and rounds[0].get("cell_diameter") is not None:
        t.add_row("cell diameter", f"{rounds[0]['cell_diameter']:.1f} px (images resized by "
                                   f"{rounds[0].get('scale', 1.0):.3f})")
    for w in metrics.get("round_warnings") or []:
        t.add_row("warning", f"[yellow]{w}[/yellow]")
    if "labels_pos" in final:
        t.add_row("final detector trained on",
                  f"{final['labels_pos']} positive and {final['labels_neg']} negative points")
    det = RunResults(layout, cfg).detections(final["round"])
    n = "?" if det is None else len(det["y"])
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


def print_round_table(metrics: dict) -> None:
    """The per-round table (like Table 2 of Fujii et al. 2021) on stdout."""
    from rich.console import Console

    from pseudocell.results.report import round_table

    Console(width=max(Console().width, 130)).print(round_table(metrics))


def _config(config: str | None, overrides: dict):
    """Config file (or defaults) with the CLI flags applied, validated once."""
    from pseudocell.config import Config, load_config

    if config is not None:
        return load_config(config, overrides)
    return Config.from_dict({k: v for k, v in overrides.items() if v is not None})


def _diameter(text: str | None) -> float | str | None:
    """``--cell-diameter``: a number of pixels, or 'auto' (validated with the config)."""
    if text is None or text.strip().lower() == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise InvalidConfigError(f"--cell-diameter {text!r}: give a diameter in pixels "
                                 "(e.g. --cell-diameter 40) or 'auto'") from None


@command()
@with_options(ex=ExecutorOptions, tracking=TrackingOptions)
def run(
    images: Annotated[str, typer.Option(help="Folder of 2-D grayscale or RGB PNG/TIFF images "
                                             "(a path or e.g. s3://bucket/images).")],
    out: Annotated[str, typer.Option(help="Run directory (created): a path or an object-store "
                                          "URI such as s3://bucket/runs/exp1.")],
    ex: ExecutorOptions,
    tracking: TrackingOptions,
    points: Annotated[str | None, typer.Option(help="Annotated cell centres: napari points "
                                                     "CSV or 'image,y,x' CSV (the partial "
                                                     "mode needs them; label-free: "
                                                     "optional extra clicks).")] = None,
    config: Annotated[str | None, typer.Option(help="TOML config file.")] = None,
    gt: Annotated[str | None, typer.Option(help="Optional full ground truth of the training "
                                                 "images (CSV), for evaluation only.")] = None,
    eval_images: Annotated[str | None, typer.Option(help="Optional held-out images (evaluation "
                                                          "only; never used for training).")] = None,
    eval_gt: Annotated[str | None, typer.Option(help="Ground truth of --eval-images (CSV).")] = None,
    pattern: Annotated[str, typer.Option(help="Glob selecting images in --images (and "
                                              "--source-images).")] = "*",
    mode: Annotated[str | None, typer.Option(help="Override config 'mode': 'partial' (default; "
                                                  "the loop from your clicks), 'label-free' "
                                                  "(no clicks needed), 'adapt' or "
                                                  "'adapt-ranker' (--images are an unlabeled "
                                                  "target; needs --source-images and "
                                                  "--source-points).")] = None,
    source_images: Annotated[str | None, typer.Option(
        help="adapt: folder of the source images, every cell annotated; --images are then "
             "the unlabeled target images.")] = None,
    source_points: Annotated[str | None, typer.Option(
        help="adapt: every cell of --source-images (CSV: image,y,x or napari).")] = None,
    rounds: Annotated[int | None, typer.Option(help="Override config 'rounds'.")] = None,
    alpha: Annotated[float | None, typer.Option(help="Override config 'alpha'.")] = None,
    beta: Annotated[float | None, typer.Option(help="Override config 'beta'.")] = None,
    p: Annotated[float | None, typer.Option(help="Override config 'p'.")] = None,
    seed: Annotated[int | None, typer.Option(help="Override config 'seed'.")] = None,
    cell_diameter: Annotated[str | None, typer.Option(
        help="Cell diameter in px, or 'auto' (default: measured at your clicks).")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda[:N].")] = None,
    force: Annotated[bool, typer.Option("--force", help="Delete an existing run directory "
                                                        "that has a different config.")] = False,
) -> None:
    """Run the pseudo-label loop on your images and points.

    Example: pseudocell run --images imgs/ --points clicks.csv --out runs/exp1 --rounds 2

    No clicks at all: pseudocell run --mode label-free --images imgs/ --out runs/lf1

    Adapt a detector from annotated images to new ones: pseudocell run --mode adapt
    --source-images old/ --source-points old.csv --images new/ --rounds 5 --out runs/da1

    On a Ray cluster: pseudocell run ... --executor ray --address auto
    """
    from pseudocell.orchestrator.run import check_mode_inputs, prepare_run
    from pseudocell.stages.modes import get_mode
    from pseudocell.validation import check_device, check_output_path, load_run_inputs

    check_output_path(out, name="--out")
    cfg = _config(config, {"mode": mode, "rounds": rounds, "alpha": alpha, "beta": beta,
                           "p": p, "seed": seed, "device": device,
                           "cell_diameter": _diameter(cell_diameter)})
    check_device(cfg.device, name="--device" if device is not None else "config 'device'")
    inputs = load_run_inputs(images, points, gt=gt, eval_images=eval_images, eval_gt=eval_gt,
                             pattern=pattern, source_images=source_images,
                             source_points=source_points)
    check_mode_inputs(get_mode(cfg.mode), inputs, cfg)  # before Ray starts, too
    # the executor (and Ray) starts before anything is written: a bad --executor option
    # leaves no run directory behind
    with ex.build() as executor:
        layout = prepare_run(out, cfg, inputs, force=force)
        execute(layout, cfg, executor, tracking)


@command()
@with_options(ex=ExecutorOptions, tracking=TrackingOptions)
def resume(
    run_dir: Annotated[str, typer.Argument(help="Run directory of a stopped run (path or "
                                                "s3:// URI).")],
    ex: ExecutorOptions,
    tracking: TrackingOptions,
    rounds: Annotated[str | None, typer.Option(
        help="Continue to this many rounds ('+1': one more than the run has), e.g. after "
             "`pseudocell ingest`. Finished stages are kept.")] = None,
) -> None:
    """Finish a stopped run from its last finished stage (same config, same result), or
    extend a finished one by more rounds.

    The MLflow record continues in the same parent run.

    Example: pseudocell resume runs/exp1 [--executor ray --address auto]

    After a review (suggest → edit → ingest): pseudocell resume runs/exp1 --rounds +1
    """
    from pseudocell.config import dump_toml
    from pseudocell.orchestrator.run import open_run
    from pseudocell.storage import fs
    from pseudocell.validation import check_device, check_output_path, parse_rounds

    check_output_path(run_dir, name="RUN_DIR", example="pseudocell resume runs/exp1")
    layout, cfg = open_run(run_dir)
    if rounds is not None:
        new = parse_rounds(rounds, cfg.rounds)
        if new != cfg.rounds:
            logger.info("extending %s from %d to %d rounds", layout.root, cfg.rounds, new)
            cfg = cfg.replace(rounds=new)
            fs.write_bytes(layout.config, dump_toml(cfg).encode())
    check_device(cfg.device, name=f"the run's device (config.toml of {str(run_dir)!r})",
                 fix="resume it where that GPU is, or set device = \"auto\" in its "
                     "config.toml (the device is not part of the config hash)")
    with ex.build() as executor:
        execute(layout, cfg, executor, tracking)


@command()
@with_options(ex=ExecutorOptions, tracking=TrackingOptions)
def demo(
    ex: ExecutorOptions,
    tracking: TrackingOptions,
    out: Annotated[str, typer.Option(help="Run directory of the demo.")] = "runs/demo",
    data_dir: Annotated[Path | None, typer.Option(help="Folder with NNNcells.png/NNNdots.png "
                                                       "(default: ../shared/data or the "
                                                       "download cache).")] = None,
    rounds: Annotated[int | None, typer.Option(help="Override 'rounds' (default 2).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Start again even if OUT holds a "
                                                        "run with another config.")] = False,
) -> None:
    """Run the loop on real bright-field images with 90 % of the points hidden.

    Images 001-040 train (10 % of their points kept, seed 0), 041-050 are held out.
    Prints the per-round table and writes OUT/metrics.json.

    Example: pseudocell demo --out runs/demo   (on Ray: add --executor ray)
    """
    from pseudocell.demo import DEMO_CONFIG, demo_inputs
    from pseudocell.orchestrator.run import prepare_run
    from pseudocell.validation import check_device, check_output_path

    check_output_path(out, name="--out")
    cfg = DEMO_CONFIG if rounds is None else DEMO_CONFIG.replace(rounds=rounds)
    check_device(cfg.device, name="the demo config's device")
    inputs = demo_inputs(cfg, data_dir=data_dir)
    with ex.build() as executor:
        layout = prepare_run(out, cfg, inputs, force=force)
        execute(layout, cfg, executor, tracking)
    typer.echo(f"metrics: {Path(out) / 'metrics.json'}   overlays: "
               f"{Path(out) / 'final' / 'overlays'}")
