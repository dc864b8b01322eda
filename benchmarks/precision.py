"""Prediction in bfloat16 against float32: held-out F1 and images/s (issue 19, GPU path).

1. Model: the loop's round-0 detector (``rounds=0``, the quality benchmark's budget:
   300 detector steps of 96 px crops) trained on bright-field images 001-040 with 10 %
   of their points (seed ``--seed``), under ``--work``; reused when it exists.
2. ``pseudocell detect`` (the library call, local engine, no overlays) on the held-out
   images 041-050 with ``precision`` float32 and bfloat16, on ``--device`` (default:
   auto, i.e. the GPU where there is one); ``--repeats`` passes each, the fastest kept.
3. Held-out F1 of each against the full ground truth (radius 15 px), and the agreement
   of the two detection sets (F1 of bfloat16's detections against float32's, 2 px).

Training stays in float32, so the two rows share one model and one peak threshold;
every difference is the arithmetic of the forward pass.

    .venv/bin/python benchmarks/precision.py --out runs/bench_precision.json

Prints a markdown table and writes every number to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

DEFAULT_WORK = Path("/tmp/pseudocell_precision")
PRECISIONS = ("float32", "bfloat16")


def train_model(run_dir: Path, *, data_dir: Path, seed: int) -> Path:
    """The round-0 detector of the loop on images 001-040 (10 % of their points)."""
    if (run_dir / "final" / "model.pt").exists():
        return run_dir
    from pseudocell.config import Config
    from pseudocell.demo import demo_inputs
    from pseudocell.orchestrator.executors import LocalExecutor
    from pseudocell.orchestrator.run import prepare_run, run_loop

    cfg = Config(rounds=0, detector_iters=300, detector_crop=96, seed=seed, device="cpu")
    layout = prepare_run(run_dir, cfg, demo_inputs(cfg, data_dir=data_dir), force=True)
    run_loop(layout, cfg, LocalExecutor())
    return run_dir


def heldout_folder(data_dir: Path, work: Path) -> tuple[Path, Path]:
    """Links to images 041-050 in ``work/heldout`` and their points as ``image,y,x``."""
    from pseudocell.data.points import write_points_csv
    from pseudocell.demo import load_brightfield

    folder = work / "heldout"
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(41, 51):
        link = folder / f"{n:03d}cells.png"
        if not link.exists():
            link.symlink_to((data_dir / link.name).resolve())
    gt_csv = work / "heldout_gt.csv"
    write_points_csv(gt_csv, load_brightfield(data_dir, range(41, 51))[1])
    return folder, gt_csv


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK,
                    help=f"folder for the model and outputs (default {DEFAULT_WORK})")
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="bright-field demo images (default: the shared data)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_precision.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch

    from pseudocell.data.fetch import locate_brightfield
    from pseudocell.inference import detect_folder, evaluate_files

    data_dir = args.data_dir or locate_brightfield()
    run = train_model(args.work / f"model_seed{args.seed}", data_dir=data_dir, seed=args.seed)
    images, gt = heldout_folder(data_dir, args.work)
    rows = []
    for precision in PRECISIONS:
        out = args.work / f"det_{precision}"
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            detect_folder(run, images, out, engine="local", overlays=False,
                          device=args.device, precision=precision)
            best = min(best, time.perf_counter() - t0)
        score = evaluate_files(out / "detections_table.csv", gt, radius=15.0, images=images)
        rows.append({"dtype": precision, "seconds": best, "images_per_s": 10 / best,
                     **{k: score[k] for k in ("tp", "fp", "fn", "precision", "recall", "f1")}})
    agree = evaluate_files(args.work / "det_bfloat16" / "detections_table.csv",
                           args.work / "det_float32" / "detections_table.csv", radius=2.0,
                           images=images)
    device = args.device if args.device != "auto" else (
        "cuda" if torch.cuda.is_available() else "cpu")
    result = {"model": str(run), "device": device, "rows": rows,
              "agreement_f1_2px": agree["f1"], "repeats": args.repeats,
              "versions": {"python": platform.python_version(), "torch": torch.__version__,
                           "cpu_count": os.cpu_count(), "platform": platform.platform(),
                           "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda")
                           else None}}
    lines = [f"device {device}; held-out bright-field images 041-050; radius 15 px", "",
             "| arithmetic | images/s | P | R | F1 |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['dtype']} | {r['images_per_s']:.2f} | {r['precision']:.3f} | "
              f"{r['recall']:.3f} | {r['f1']:.3f} |" for r in rows]
    lines.append(f"\nbfloat16's detections against float32's (2 px): F1 {agree['f1']:.3f}")
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
