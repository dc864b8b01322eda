"""``pseudocell suggest`` and ``ingest``: the human-in-the-loop exchange, as plain files."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pseudocell.cli.app import command, console

__all__ = ["suggest", "ingest"]


@command()
def suggest(
    run_dir: Annotated[str, typer.Argument(help="Run directory (path or s3:// URI).")],
    budget: Annotated[int, typer.Option(help="Number of tiles to review.")] = 10,
    tile: Annotated[int, typer.Option(help="Tile side in pixels of the original images.")] = 256,
    per_image: Annotated[int, typer.Option(help="At most this many tiles per image.")] = 2,
    audit: Annotated[float, typer.Option(help="Share of the tiles drawn at random (the audit "
                                              "set: an unbiased F1 estimate).")] = 0.1,
    ranker_weight: Annotated[float, typer.Option(
        help="Weight of the candidates the P-ranker left undecided, against the "
             "detector's disagreement under flips (one unsure peak = 1).")] = 0.1,
    round: Annotated[int | None, typer.Option(
        "--round", help="Whose detector proposes (default: the run's latest).")] = None,
    out: Annotated[str | None, typer.Option(
        help="Review folder (default RUN/review/round_NNN; required for an s3:// run).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing review "
                                                        "folder.")] = False,
) -> None:
    """Suggest the tiles where a few clicks help the detector most.

    Writes RUN/review/round_NNN/: manifest.csv (one row per tile), tiles/*.png, and the
    detections of each tile as points/<tile>.csv (napari, status column) and
    points/<tile>.geojson (QuPath). Edit the points (status confirmed / rejected /
    added), write 'yes' in manifest.csv's 'reviewed' column for every tile you checked
    completely, then `pseudocell ingest` and `pseudocell resume RUN --rounds +1`.

    Example: pseudocell suggest runs/exp1 --budget 10
    """
    from pseudocell.cli.progress import count_bar
    from pseudocell.human.suggest import SuggestOptions, suggest as do_suggest

    opts = SuggestOptions(budget=budget, tile=tile, per_image=per_image, audit=audit,
                          ranker_weight=ranker_weight, round=round)
    with count_bar("scoring images") as bar:
        folder, tiles = do_suggest(run_dir, opts, out=out, force=force, progress=bar)
    con = console()
    for t in tiles:
        con.print(f"{t.tile_id}  score {t.score:.2f}  {t.reason}")
    typer.echo(f"{len(tiles)} tiles to review in {folder}; edit points/*.csv (or *.geojson), "
               f"mark 'reviewed' in {Path(folder) / 'manifest.csv'}, then: pseudocell ingest "
               f"{run_dir} {folder}")


@command()
def ingest(
    run_dir: Annotated[str, typer.Argument(help="Run directory (path or s3:// URI).")],
    review: Annotated[Path, typer.Argument(help="Review folder written by `pseudocell "
                                                "suggest` (e.g. RUN/review/round_002).")],
    format: Annotated[str, typer.Option(
        "--format", help="auto (the edited files), napari (points/*.csv) or geojson "
                         "(points/*.geojson).")] = "auto",
) -> None:
    """Take a person's corrections back into the run (idempotent).

    Confirmed and added points become positive labels, rejected ones negative labels; a
    tile marked reviewed counts as fully labelled. Then continue the run with
    `pseudocell resume RUN --rounds +1`.

    Example: pseudocell ingest runs/exp1 runs/exp1/review/round_002
    """
    from pseudocell.human.ingest import ingest as do_ingest

    rep = do_ingest(run_dir, review, fmt=format)
    c = rep.counts
    typer.echo(f"round {rep.round}: {rep.n_reviewed}/{rep.n_tiles} tiles reviewed; "
               f"{c['human_added']} added, {c['human_confirmed']} confirmed, "
               f"{c['human_rejected']} rejected; audit tp/fp/fn {rep.audit['tp']}/"
               f"{rep.audit['fp']}/{rep.audit['fn']}. Next: pseudocell resume {run_dir} "
               "--rounds +1")
