"""Speed and memory of pseudocell on the shared bright-field images.

1. Detector throughput (megapixels/s): our tiled ``predict_heatmap`` against a bare
   ``model(x)`` on the same tiles, on the CPU and, when present, on CUDA. The ratio
   ours/bare shows the cost of our padding, tiling and host/device copies.
2. Peak RSS and wall time of one round of the loop (``rounds=1``: round 0's stages, the
   final detector and ``final/``) as the training images are repeated 1x, 2x, 4x, each
   scale in fresh child processes. Memory runs on the CPU.

    .venv/bin/python benchmarks/perf.py --quick --out runs/bench_perf_quick.json
    .venv/bin/python benchmarks/perf.py --out runs/bench_perf.json     # all 40 images

Quick (~2 min on 2 cores): 5 images for throughput; memory on images 001-004 repeated
1x/2x/4x with widths 8-16-32-64, detector_iters 30, pu_epochs 2. Full: all 40 training
images for both, default config except detector_iters 100 and pu_epochs 5.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from perf_lib import detector_throughput, memory_scaling
from pseudocell.config import Config

QUICK = {"throughput_images": 5, "memory_images": 4, "scales": (1, 2, 4),
         "config": dict(rounds=1, unet_widths=(8, 16, 32, 64), detector_iters=30, pu_epochs=2),
         "note": "quick: images 001-005 for throughput; memory on 001-004 x1/x2/x4 with "
                 "rounds=1, unet_widths 8-16-32-64, detector_iters 30, pu_epochs 2"}
FULL = {"throughput_images": 40, "memory_images": 40, "scales": (1, 2, 4),
        "config": dict(rounds=1, detector_iters=100, pu_epochs=5),
        "note": "full: images 001-040 for throughput; memory on 001-040 x1/x2/x4 with the "
                "default config except rounds=1, detector_iters 100 (default 500), "
                "pu_epochs 5 (default 20)"}


def _versions() -> dict:
    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__,
           "numpy": np.__version__, "platform": platform.platform(),
           "machine": platform.machine(), "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads(),
           "cuda": torch.version.cuda if torch.cuda.is_available() else None}
    try:
        import zarr

        out["zarr"] = zarr.__version__
    except ImportError:  # the throughput benchmark needs no zarr
        out["zarr"] = None
    from pseudocell import __version__

    out["pseudocell"] = __version__
    return out


def _devices(arg: str) -> list[str]:
    """``auto``: the CPU, plus CUDA when present; otherwise just the named device."""
    import torch

    if arg == "auto":
        return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [arg]


def _throughput_table(rows: list[dict]) -> str:
    lines = ["| device | threads | widths | images | image H×W | tiles | ours MP/s | "
             "bare MP/s | ours/bare | ours/bare (median pair) | overhead |",
             "|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        shape = "×".join(map(str, r["image_shape"])) if r["image_shape"] else "mixed"
        dev = r["device"] if r["device"] == "cpu" else f"{r['device']} ({r['device_name']})"
        lines.append(f"| {dev} | {r['torch_threads']} | {'-'.join(map(str, r['widths']))} | "
                     f"{r['n_images']} | {shape} | {r['n_tiles']} | {r['ours_mpx_s']:.2f} | "
                     f"{r['bare_mpx_s']:.2f} | {r['ratio']:.3f} | {r['ratio_median']:.3f} | "
                     f"{r['overhead_pct']:.1f} % |")
    return "\n".join(lines)


def _peak_stage(r: dict) -> str:
    """First stage after which the loop child's high-water mark is within 2 % of its
    final peak ("final/" when only writing the final outputs got there)."""
    for stage, mb in r.get("peak_after_stage_mb", {}).items():
        if mb >= 0.98 * r["peak_rss_mb"]:
            return stage
    return "final/"


def _memory_table(m: dict) -> str:
    lines = ["| scale | images | prepare peak RSS (MB) | round peak RSS (MB) | round wall (s) | "
             "train_detector r0 (s) | predict r0 (s) | train_pu (s) | run dir (MB) | "
             "peak reached in |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in m["per_scale"]:
        st = r["stage_seconds"]
        lines.append(f"| {r['scale']}× | {r['n_images']} | {r['prepare_peak_rss_mb']:.0f} | "
                     f"{r['peak_rss_mb']:.0f} | {r['wall_s']:.1f} | "
                     f"{st.get('0/train_detector', float('nan')):.1f} | "
                     f"{st.get('0/predict', float('nan')):.1f} | "
                     f"{st.get('0/train_pu', float('nan')):.1f} | {r['run_dir_mb']:.1f} | "
                     f"{_peak_stage(r)} |")
    lo, hi = m["ratio_scales"]
    lines += ["",
              f"import floor of a child (torch + pseudocell loop modules): "
              f"{m['baseline_rss_mb']:.0f} MB ({m['rss_source']})",
              f"round peak RSS {hi}×/{lo}×: {m['peak_ratio']:.2f}; "
              f"growth {m['mb_per_image']:.2f} MB per added image; "
              f"prepare peak {hi}×/{lo}×: {m['prepare_peak_ratio']:.2f}; "
              f"wall {hi}×/{lo}×: {m['wall_ratio']:.2f}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmarks, print markdown tables, write the JSON; return every number."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="~2 minutes on 2 cores")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON file (default runs/bench_perf[_quick].json)")
    ap.add_argument("--device", default="auto",
                    help="throughput devices: auto = cpu (+ cuda when present), or one "
                         "device such as cpu or cuda:0")
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="folder of NNNcells.png/NNNdots.png (default: the shared data)")
    ap.add_argument("--only", choices=("all", "throughput", "memory"), default="all")
    ap.add_argument("--repeats", type=int, default=3, help="throughput repeats (best of)")
    ap.add_argument("--scales", type=lambda s: tuple(int(v) for v in s.split(",")),
                    default=None, help="memory: repeat the images this many times, e.g. "
                                       "1,4,16 (default 1,2,4)")
    ap.add_argument("--memory-images", type=int, default=None,
                    help="memory: number of distinct images repeated (default 4 quick, 40 "
                         "full)")
    ap.add_argument("--widths", type=lambda s: tuple(int(w) for w in s.split("-")),
                    default=None, help="U-Net widths for throughput, e.g. 8-16-32-64 "
                                       "(default: the benchmark config's)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    mode = QUICK if args.quick else FULL
    out = args.out or Path("runs/bench_perf_quick.json" if args.quick else "runs/bench_perf.json")
    cfg = Config(device="cpu", **mode["config"])
    folder = args.data_dir
    if folder is None:
        from pseudocell.data.fetch import locate_brightfield

        folder = locate_brightfield()
    result: dict = {"mode": "quick" if args.quick else "full", "note": mode["note"],
                    "data_dir": str(folder), "config": cfg.to_dict(), "versions": _versions()}
    print(f"# pseudocell perf ({mode['note']})\n")
    t_all = time.perf_counter()
    if args.only in ("all", "throughput"):
        from pseudocell.demo import load_brightfield

        images, _ = load_brightfield(folder, range(1, mode["throughput_images"] + 1))
        widths = args.widths or cfg.unet_widths
        rows = []
        for dev in _devices(args.device):
            rows.append(detector_throughput(images.images, widths=widths, device=dev,
                                            repeats=args.repeats, seed=cfg.seed))
        result["throughput"] = rows
        print("## Detector throughput (predict_heatmap vs bare forward on the same tiles)\n")
        print(_throughput_table(rows) + "\n")
    if args.only in ("all", "memory"):
        t0 = time.perf_counter()
        mem = memory_scaling(args.scales or mode["scales"], cfg=cfg, data_dir=folder,
                             n_images=args.memory_images or mode["memory_images"])
        mem["seconds"] = time.perf_counter() - t0
        result["memory"] = mem
        print("## One round (rounds=1) as the image set grows, one child process per "
              "phase, CPU\n")
        print(_memory_table(mem) + "\n")
    result["seconds"] = time.perf_counter() - t_all
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str))
    print(f"total {result['seconds']:.0f} s; wrote {out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
