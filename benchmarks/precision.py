"""Prediction in bfloat16 against float32: held-out F1 and images/s (issue 19, GPU path).

1. Model: the loop's round-0 detector (``rounds=0``, the quality benchmark's budget:
   300 detector steps of 96 px crops) trained on bright-field images 001-040 with 10 %
   of their points (seed ``--seed``), under ``--work``; reused when it exists.
2. ``pseudocell detect`` (the library call, local engine, no overlays) on the held-out
   images 041-050 with ``precision`` float32 and bfloat16, on ``--device`` (default:
   auto, i.e. the GPU where there is one): held-out F1 of each against the full ground
   truth (radius 15 px), and the agreement of the two detection sets (F1 of bfloat16's
   detections against float32's, 2 px); detect's wall is its second pass (the first warms
   up).
3. Speed of the network alone: images/s of ``predict_heatmap`` in each precision on the
   same images, preloaded and resized, after a warm-up pass; ``--repeats`` passes, the
   fastest kept (detect's wall also counts reading, peak finding and writing).

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
        link.unlink(missing_ok=True)  # a link into a moved data folder is replaced
        link.symlink_to((data_dir / link.name).resolve())
    gt_csv = work / "heldout_gt.csv"
    write_points_csv(gt_csv, load_brightfield(data_dir, range(41, 51))[1])
    return folder, gt_csv


def _network_inputs(run: Path, images: Path, device: str):
    """The run's network on ``device`` and the held-out images as detect feeds them
    (read, normalised, resized by the run's scale)."""
    from pseudocell.core.detector import load_unet
    from pseudocell.core.scale import resize_image
    from pseudocell.inference import resolve_model
    from pseudocell.validation import load_image_folder

    _, _, ck = resolve_model(run)
    net = load_unet(ck["state_dict"], ck["meta"]["widths"], device)
    scale = float(ck["meta"].get("scale", 1.0))
    return net, [resize_image(im, scale) for im in load_image_folder(images).images]


def _network_seconds(net, inputs: list, precision: str, repeats: int) -> float:
    """Fastest of ``repeats`` passes of ``predict_heatmap`` over ``inputs`` (after one
    warm-up pass; the device synchronised by the heatmaps' copy back to the host)."""
    from pseudocell.core.detector import predict_heatmap

    for im in inputs:
        predict_heatmap(net, im, precision=precision)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for im in inputs:
            predict_heatmap(net, im, precision=precision)
        best = min(best, time.perf_counter() - t0)
    return best


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
    net, inputs = _network_inputs(run, images, args.device)
    for precision in PRECISIONS:
        out = args.work / f"det_{precision}"
        detect_s = []
        for _ in range(2):  # the first pass warms up (the process's first forward pass)
            t0 = time.perf_counter()
            detect_folder(run, images, out, engine="local", overlays=False,
                          device=args.device, precision=precision)
            detect_s.append(time.perf_counter() - t0)
        detect_s = detect_s[-1]
        score = evaluate_files(out / "detections_table.csv", gt, radius=15.0, images=images)
        net_s = _network_seconds(net, inputs, precision, args.repeats)
        rows.append({"dtype": precision, "detect_s": detect_s, "network_s": net_s,
                     "images_per_s": len(inputs) / net_s,
                     **{k: score[k] for k in ("tp", "fp", "fn", "precision", "recall", "f1")}})
    agree = evaluate_files(args.work / "det_bfloat16" / "detections_table.csv",
                           args.work / "det_float32" / "detections_table.csv", radius=2.0,
                           images=images)
    device = str(next(net.parameters()).device)
    result = {"model": str(run), "device": device, "rows": rows,
              "agreement_f1_2px": agree["f1"], "repeats": args.repeats,
              "versions": {"python": platform.python_version(), "torch": torch.__version__,
                           "cpu_count": os.cpu_count(), "platform": platform.platform(),
                           "gpu": torch.cuda.get_device_name(torch.device(device))
                           if device.startswith("cuda") else None}}
    lines = [f"device {device}; held-out bright-field images 041-050; radius 15 px", "",
             "| arithmetic | network images/s | detect wall s | P | R | F1 |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['dtype']} | {r['images_per_s']:.2f} | {r['detect_s']:.1f} | "
              f"{r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} |" for r in rows]
    lines.append(f"\nbfloat16's detections against float32's (2 px): F1 {agree['f1']:.3f}")
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
