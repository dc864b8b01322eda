"""``pseudocell detect`` and ``evaluate``: use a trained model, score point files."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pseudocell.cli.app import command

__all__ = ["detect", "evaluate"]


@command()
def detect(
    model: Annotated[str, typer.Option(help="model.pt of a run (e.g. RUN/final/model.pt) "
                                             "or a run directory.")],
    images: Annotated[str, typer.Option(help="Folder of images to detect cells in.")],
    out: Annotated[str, typer.Option(help="Output folder for detections and overlays.")],
    pattern: Annotated[str, typer.Option(help="Glob selecting images.")] = "*",
    threshold: Annotated[float | None, typer.Option(help="Peak threshold (default: the one "
                                                         "the model's round calibrated).")] = None,
    cell_diameter: Annotated[float | None, typer.Option(
        help="Cell diameter (px) in these images, when it differs from the model's run "
             "(default: resize as that run did).")] = None,
    overlays: Annotated[bool, typer.Option(help="Write overlay PNGs.")] = True,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda[:N] (default: the "
                                                    "run's 'device').")] = None,
    precision: Annotated[str | None, typer.Option(
        help="float32 | bfloat16: the network's arithmetic; bfloat16 for GPUs with "
             "bfloat16 units, slower on most CPUs (default: the run's 'precision').")] = None,
    engine: Annotated[str, typer.Option(
        help="local: stream the images through this process; ray: through Ray Data "
             "actors (one per CPU, or per GPU where the cluster has GPUs); auto: ray from "
             "50 images on, local below (measured on 2 cores: a tie at 20 images, where "
             "Ray's start-up eats its gain, ray 2.1x faster at 100).")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Images per Ray Data call "
                                                 "(--engine ray).")] = 8,
    concurrency: Annotated[int | None, typer.Option(
        help="Ray Data detector actors (default: one per CPU, or per GPU).")] = None,
    ray_address: Annotated[str | None, typer.Option(
        "--address", help="Ray cluster to attach to for --engine ray (e.g. auto); default: "
                          "a local Ray started and stopped by this command.")] = None,
) -> None:
    """Detect cells with a trained model; writes napari and plain CSVs.

    Images are read one at a time; detections stream into Parquet shards (OUT/shards/)
    and are merged into OUT/detections.csv (napari) and OUT/detections_table.csv.

    Example: pseudocell detect --model runs/exp1 --images new_imgs/ --out det/
    """
    from pseudocell.cli.progress import count_bar
    from pseudocell.inference import detect_folder

    with count_bar("images") as bar:
        n = detect_folder(model, images, out, pattern=pattern, threshold=threshold,
                          overlays=overlays, device=device, precision=precision,
                          cell_diameter=cell_diameter,
                          engine=engine, batch_size=batch_size, concurrency=concurrency,
                          ray_address=ray_address, progress=bar)
    typer.echo(f"{n} cells detected; see {Path(out) / 'detections.csv'}")


@command()
def evaluate(
    pred: Annotated[Path, typer.Option(help="Predicted points CSV ('image,y,x' or napari).")],
    gt: Annotated[Path, typer.Option(help="Ground-truth points CSV (same layout rules).")],
    radius: Annotated[float, typer.Option(help="Matching radius in px.")] = 15.0,
    images: Annotated[Path | None, typer.Option(help="Image folder; needed to map napari "
                                                     "frames to images and to check bounds.")] = None,
    json_out: Annotated[str | None, typer.Option("--json", help="Also write the numbers to "
                                                                "this file.")] = None,
) -> None:
    """Precision / recall / F1 with optimal one-to-one matching within --radius.

    Example: pseudocell evaluate --pred det/detections_table.csv --gt gt.csv --radius 15
    """
    from pseudocell.inference import evaluate_files
    from pseudocell.validation import check_output_file

    check_output_file(json_out, name="--json")  # before the work, not after it
    res = evaluate_files(pred, gt, radius=radius, images=images)
    typer.echo(f"radius={radius:g}px  TP={res['tp']} FP={res['fp']} FN={res['fn']}  "
               f"P={res['precision']:.3f} R={res['recall']:.3f} F1={res['f1']:.3f}")
    if json_out is not None:
        Path(json_out).write_text(json.dumps(res, indent=1))
