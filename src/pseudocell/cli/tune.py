"""``pseudocell tune``: Ray Tune sweeps where every trial is a pseudocell run."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pseudocell.cli.app import command
from pseudocell.cli.options import ExperimentOpt, TrackingUriOpt
from pseudocell.errors import InvalidInputError

__all__ = ["tune"]


@command()
def tune(
    out: Annotated[str | None, typer.Option(help="Sweep directory (created).")] = None,
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
    share: Annotated[bool, typer.Option(
        "--share/--no-share", help="Trials reuse the stages whose inputs and read settings "
                                   "are equal (round 0 of a selection sweep); same "
                                   "results.")] = True,
    pattern: Annotated[str, typer.Option(help="Glob selecting images.")] = "*",
    resume_dir: Annotated[str | None, typer.Option(
        "--resume", help="Continue a killed sweep in this directory.")] = None,
    address: Annotated[str | None, typer.Option(
        help="Ray cluster the sweep runs on: 'auto' (the cluster of this node) or "
             "'ray://HOST:10001'. Default: start a local Ray.")] = None,
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
    from pseudocell.config import Config, load_config
    from pseudocell.tune_spaces import resolve
    from pseudocell.tune_spaces.sweep import SweepOptions, prepare_sweep, run_sweep
    from pseudocell.validation import (RunInputs, check_output_path, load_image_folder,
                                       load_points)

    check_output_path(out, name="--out", example="--out sweeps/s1")
    check_output_path(resume_dir, name="--resume", example="--resume sweeps/s1")
    if resume_dir is not None:
        sweep_dir = resume_dir
    else:
        missing = [n for n, v in (("--out", out), ("--images", images), ("--points", points),
                                  ("--val-images", val_images), ("--val-gt", val_gt))
                   if v is None]
        if missing:
            raise InvalidInputError(f"tune needs {', '.join(missing)} (or --resume DIR)")
        base = load_config(config) if config is not None else Config()
        options = SweepOptions(space=resolve(space), num_samples=samples,
                               scheduler=scheduler, trial_cpus=trial_cpus,
                               trial_gpus=trial_gpus, max_concurrent=max_concurrent,
                               search_seed=search_seed, tracking_uri=tracking_uri,
                               experiment=experiment, share=share)
        imgs = load_image_folder(images, pattern=pattern, name="--images")
        pts = load_points(points, imgs, name="--points")
        vimgs = load_image_folder(val_images, pattern=pattern, name="--val-images")
        vgt = load_points(val_gt, vimgs, name="--val-gt")
        timgs = load_image_folder(test_images, pattern=pattern, name="--test-images") \
            if test_images is not None else None
        sweep_dir = prepare_sweep(out, base, RunInputs(imgs, pts, None, vimgs, vgt),
                                  options, test_images=timgs, force=force)
    result = run_sweep(sweep_dir, resume=resume_dir is not None, address=address)
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
