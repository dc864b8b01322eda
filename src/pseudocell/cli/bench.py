"""``pseudocell bench``: the quality protocol on your own data (developer speed and memory
measurements live in the repository's ``benchmarks/``)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pseudocell.cli.app import command
from pseudocell.errors import InvalidInputError

__all__ = ["bench"]


@command()
def bench(
    out: Annotated[str, typer.Option(
        help="Folder for the runs, the report and the JSON.")] = "runs/bench",
    quick: Annotated[bool, typer.Option("--quick", help="1 seed, 10 training and 5 test images, "
                                                        "small budgets: a few minutes.")] = False,
    datasets: Annotated[Path | None, typer.Option(help="TOML file with \\[\\[dataset]] tables "
                                                       "(default: the shared bright-field set).")] = None,
    dataset: Annotated[list[str] | None, typer.Option(
        help="A dataset as comma-separated key=value pairs (repeatable); keys: name, "
             "images, gt, gt_replace, radius. Example: --dataset name=x,images=DIR,gt=dots")]
        = None,
    seeds: Annotated[int, typer.Option(help="Number of seeds (0..n-1).")] = 3,
    seed: Annotated[list[int] | None, typer.Option(
        help="Run only this seed (repeatable; instead of --seeds). Finished seeds in OUT "
             "are reused, so a long benchmark can be run a seed at a time: --seed 0, "
             "then --seed 1, then --seed 2; --seeds 3 then reports all three (each run's "
             "report covers its own seeds).")] = None,
    keep: Annotated[float, typer.Option(help="Fraction of training points kept.")] = 0.1,
    config: Annotated[Path | None, typer.Option(help="TOML config of the detector and loop.")] = None,
    protocol: Annotated[str, typer.Option(
        help="'partial': the loop from clicks against every baseline; 'label-free': no "
             "click (classical, PSM points, PSM + loop) against the loop from clicks and "
             "the fully supervised detector; 'adapt': source-trained detectors on another "
             "dataset (needs --pair); 'human': review cycles with a simulated annotator "
             "against random clicks (held-out F1 per click; --keep is the reference's "
             "share of clicked cells).")] = "partial",
    only: Annotated[list[str] | None, typer.Option(
        help="Run only these datasets of --datasets (repeatable).")] = None,
    steps: Annotated[int, typer.Option(help="human: review cycles per run.")] = 3,
    budget: Annotated[int, typer.Option(help="human: tiles per review.")] = 8,
    pair: Annotated[list[str] | None, typer.Option(
        help="adapt: SOURCE:TARGET dataset names (repeatable), optionally with a harder "
             "shift of the target: SOURCE:TARGET@half-magnification.")] = None,
    reference: Annotated[Path | None, typer.Option(
        help="label-free: folder of a 'partial' benchmark of the same datasets, config and "
             "seeds whose results are the reference rows (default: OUT/reference, computed "
             "when missing).")] = None,
) -> None:
    """Compare pseudocell with every baseline on held-out images.

    Writes OUT/quality.json and OUT/quality.md (label-free: OUT/label_free.json, .md).

    Example: pseudocell bench --quick

    Example: pseudocell bench --protocol label-free --datasets benchmarks/datasets.toml

    Example: pseudocell bench --protocol adapt --datasets benchmarks/datasets.toml
    --pair u2os:nih3t3 --pair nih3t3:u2os@half-magnification

    Example: pseudocell bench --protocol human --datasets benchmarks/datasets.toml
    --only brightfield --only u2os
    """
    from pseudocell.bench.datasets import default_datasets, parse_dataset_arg, read_dataset_toml
    from pseudocell.bench.quality import METHODS as QUALITY_METHODS
    from pseudocell.bench.quality import QUICK_CONFIG, markdown_report, run_quality
    from pseudocell.config import Config, load_config
    from pseudocell.validation import check_output_path

    check_output_path(out, name="--out", example="--out runs/bench")
    out = Path(out)
    specs = []
    if datasets is not None:
        specs += read_dataset_toml(datasets)
    specs += [parse_dataset_arg(d) for d in dataset or []]
    specs = specs or default_datasets()
    if only:
        unknown = sorted(set(only) - {s.name for s in specs})
        if unknown:
            raise InvalidInputError(f"--only {unknown}: not among the datasets "
                                    f"{sorted(s.name for s in specs)}")
        specs = [s for s in specs if s.name in only]
    if config is not None:
        cfg = load_config(config)
    else:
        cfg = QUICK_CONFIG if quick else Config()
    if not 0.0 < keep <= 1.0:
        raise InvalidInputError(f"--keep must be in (0, 1], got {keep}")
    if seeds < 1:
        raise InvalidInputError(f"--seeds must be at least 1, got {seeds}")
    if seed:
        bad = [x for x in seed if not 0 <= x < 2**32]
        if bad or len(set(seed)) != len(seed):
            raise InvalidInputError(f"--seed {seed}: give distinct seeds in 0..2**32-1, "
                                    "e.g. --seed 1 --seed 2")
        seed_list = list(seed)
    else:
        seed_list = list(range(1 if quick else seeds))
    if protocol not in ("partial", "label-free", "adapt", "human"):
        raise InvalidInputError(f"--protocol {protocol!r}: use 'partial', 'label-free', "
                                "'adapt' or 'human'")
    if pair and protocol != "adapt":
        raise InvalidInputError("--pair is for --protocol adapt")
    if protocol == "adapt":
        from pseudocell.bench import adapt

        if not pair:
            raise InvalidInputError("--protocol adapt needs at least one --pair SOURCE:TARGET "
                                    f"(datasets: {', '.join(s.name for s in specs)})")
        pairs = [adapt.parse_pair(t, [s.name for s in specs]) for t in pair]
        result = adapt.run_adapt(specs, pairs, cfg=cfg, seeds=seed_list,
                                 out_dir=out, max_train=10 if quick else None,
                                 max_test=5 if quick else None)
        _report(result, adapt.markdown_report(result), out / "adapt")
        return
    if protocol == "human":
        from pseudocell.bench import human

        result = human.run_human(specs, cfg=cfg, seeds=seed_list,
                                 out_dir=out, ref_keep=keep, steps=1 if quick else steps,
                                 budget=budget,
                                 max_train=10 if quick else None,
                                 max_test=5 if quick else None)
        _report(result, human.markdown_report(result), out / "human")
        return
    if protocol == "label-free":
        from pseudocell.bench import label_free

        ref = out / "reference" if reference is None else reference
        methods = ("full",) if reference is None else QUALITY_METHODS
        result = label_free.run_label_free(
            specs, cfg=cfg, seeds=seed_list, keep=keep, out_dir=out,
            reference_dir=ref, reference_methods=methods, max_train=10 if quick else None,
            max_test=5 if quick else None)
        _report(result, label_free.markdown_report(result), out / "label_free")
        return
    result = run_quality(specs, cfg=cfg, seeds=seed_list, keep=keep,
                         out_dir=out, max_train=10 if quick else None,
                         max_test=5 if quick else None)
    _report(result, markdown_report(result), out / "quality")


def _report(result: dict, report: str, stem: Path) -> None:
    """Write ``stem``.json (every number) and ``stem``.md (the report); print the report."""
    from pseudocell.bench.quality import write_result

    write_result(result, stem.with_suffix(".json"))
    stem.with_suffix(".md").write_text(report + "\n")
    typer.echo(report)
    typer.echo(f"wrote {stem.with_suffix('.json')}")
