"""``pseudocell export``, ``ui`` and ``sync``: look at and hand over a run's results."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pseudocell.cli.app import command
from pseudocell.cli.options import ExperimentOpt, TrackingUriOpt
from pseudocell.errors import InvalidInputError, ServiceError

__all__ = ["export", "ui", "sync"]


def _tracked_run(run_dir: str):
    from pseudocell.storage.fs import resolve_root
    from pseudocell.storage.layout import RunLayout
    from pseudocell.tracking import Tracker
    from pseudocell.validation import check_output_path

    check_output_path(run_dir, name="RUN_DIR", example="RUN_DIR runs/exp1")

    layout = RunLayout(resolve_root(run_dir))
    if not (Path(layout.local_dir) / "tracking" / "state.json").exists():
        raise InvalidInputError(f"{str(run_dir)!r} has no MLflow record (tracking/state.json);"
                                " was it run with --no-track, or is it not a run directory?")
    return Tracker(layout)


@command()
def ui(
    run_dir: Annotated[str, typer.Argument(help="Run directory (path or s3:// URI).")],
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
) -> None:
    """Open the MLflow UI of a run (its embedded sqlite store), bound to 127.0.0.1.

    Example: pseudocell ui runs/exp1 --port 5000   then browse http://127.0.0.1:5000
    """
    import os
    import sys

    from pseudocell.cli.processes import run_group
    from pseudocell.validation import check_port

    check_port(port)
    tr = _tracked_run(run_dir)
    if not tr.uri.startswith("sqlite:"):
        typer.echo(f"this run is tracked on the server {tr.uri}: open it there "
                   f"(experiment {tr.experiment!r}, run {tr.run_id})")
        return
    if tr.pending():  # e.g. a copied run: its record is pushed into its own store first
        tr.push()
    base = f"http://127.0.0.1:{port}"
    urls = tr.ui_pages(base)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tr.uri,
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    typer.echo(f"MLflow UI of {run_dir} at {base} (Ctrl-C to stop)")
    for what, url in urls.items():
        typer.echo(f"  {what}: {url}")
    # MLflow's GenAI job workers (eight processes, ~2.8 GB) serve nothing a run shows
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ,
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    rc = run_group(cmd, env=env)
    if rc != 0:
        raise ServiceError(f"the MLflow UI stopped with exit code {rc} (its messages are "
                           f"above); is port {port} in use? Try another --port")


@command()
def sync(
    run_dir: Annotated[str, typer.Argument(help="Run directory (path or s3:// URI).")],
    tracking_uri: TrackingUriOpt = None,
    experiment: ExperimentOpt = None,
) -> None:
    """Push a run's MLflow records that could not be sent (server down, no MLflow).

    With --tracking-uri, copies the whole record of the run to that tracking store.

    Example: pseudocell sync runs/exp1 --tracking-uri http://mlflow:5000
    """
    from pseudocell.tracking import sync as _sync

    _tracked_run(run_dir)
    run_id, n = _sync(run_dir, tracking_uri, experiment)
    typer.echo(f"pushed {n} record(s); MLflow run {run_id}")


@command()
def export(
    run_dir: Annotated[str, typer.Argument(help="Run directory (path or s3:// URI).")],
    out: Annotated[str, typer.Option(help="Output folder.")],
    fmt: Annotated[str, typer.Option("--format", help="napari | geojson (QuPath, one file "
                                                      "per image) | csv.")] = "napari",
    rnd: Annotated[int | None, typer.Option("--round", help="Round (default: the last).")] = None,
    what: Annotated[str, typer.Option(help="labels, detections or labels,detections.")] =
        "labels,detections",
) -> None:
    """Export a round's labels (annotated + pseudo-labels) and detections.

    Example: pseudocell export runs/exp1 --format geojson --round 1 --out qupath/
    """
    from pseudocell.results.export import export_round
    from pseudocell.validation import check_output_path

    check_output_path(run_dir, name="RUN_DIR", example="RUN_DIR runs/exp1")
    check_output_path(out, name="--out")
    files = export_round(run_dir, out, rnd=rnd, fmt=fmt,
                         what=tuple(w.strip() for w in what.split(",") if w.strip()))
    typer.echo(f"wrote {len(files)} file(s) to {out}")
