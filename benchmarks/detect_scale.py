"""``pseudocell detect`` at scale: images/s of both engines against the bare model, and
peak memory of the whole process tree as the image set grows (issue 19).

1. Images: N 512×512 grey PNGs synthesised from the bright-field demo images (a random
   flip/rotation of an image, reflect-padded to 512×512 at a random offset; seeded), in a
   folder outside the repository (``--work``, default ``/tmp/pseudocell_detect_scale``).
   The sets of different N share files (hard links), so N=1,000 is the first 1,000 of
   N=10,000.
2. Model: a real one, trained by the loop (``rounds=0``, U-Net widths ``--widths``,
   ``detector_iters`` 60) on bright-field images 001-004 with 10 % of their points, so
   that its peak counts are realistic. ``--model`` uses an existing ``model.pt`` / run.
3. Bare model: images/s of ``net(x)`` under ``torch.no_grad`` on the very tiles detect
   feeds the network (captured from ``predict_heatmap`` on the first images, preloaded),
   in the local engine's shape (one process, every core's torch threads) and in the Ray
   engine's (one one-thread process per core started together: all images over one
   shared window).
4. ``pseudocell detect --engine local`` and ``--engine ray`` on each N, each in a fresh
   child process (the real CLI, no overlays); images/s = N / wall of the child (start-up
   included, so small N shows the fixed costs), and the sum of resident (RSS) and
   proportional (PSS) memory of the child and every descendant (Ray's GCS, raylet,
   workers) sampled every 0.25 s; the peak of that sum is reported. PSS divides shared
   pages (Ray's object store, shared libraries) among the processes that map them, so
   its sum does not count them twice; RSS's sum does.

    .venv/bin/python benchmarks/detect_scale.py --sizes 100,1000 --out runs/bench_detect_scale.json
    .venv/bin/python benchmarks/detect_scale.py --sizes 1000,10000      # ~hours on 2 cores

Prints a markdown table and writes every number to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from executor_overhead import tree_pids
from perf_lib import _child_env

DEFAULT_WORK = Path("/tmp/pseudocell_detect_scale")
SIDE = 512


# -- inputs ----------------------------------------------------------------------------
def synthesise(folder: Path, n: int, *, data_dir: Path, seed: int = 0) -> list[Path]:
    """``folder/img_000000.png`` ... : ``n`` 512×512 uint8 grey images from the
    bright-field demo images (cells 001-100): a random one of the 8 flips/rotations,
    reflect-padded to 512×512 at a random offset. Existing files are kept (same seed,
    same files), so growing ``n`` only adds images."""
    from PIL import Image

    from pseudocell.data.images import read_raw, to_gray

    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(data_dir.glob("*cells.png"))
    grey = [np.clip(to_gray(read_raw(p)), 0, 255).astype(np.uint8) for p in sources]
    rng = np.random.default_rng(seed)
    paths = []
    for k in range(n):
        src, rot, flip = rng.integers(len(grey)), rng.integers(4), rng.integers(2)
        oy, ox = rng.random(2)
        p = folder / f"img_{k:06d}.png"
        paths.append(p)
        if p.exists():
            continue
        im = np.rot90(grey[src], rot)
        im = im[:, ::-1] if flip else im
        im = im[:SIDE, :SIDE]
        py, px = SIDE - im.shape[0], SIDE - im.shape[1]
        ty, tx = int(round(oy * py)), int(round(ox * px))
        im = np.pad(im, ((ty, py - ty), (tx, px - tx)), mode="reflect")
        tmp = p.with_name(p.name + ".part")  # a run stopped mid-write leaves no bad PNG
        Image.fromarray(np.ascontiguousarray(im)).save(tmp, format="PNG")
        os.replace(tmp, p)
    return paths


def subset(pool: list[Path], n: int, folder: Path) -> Path:
    """A folder with hard links to the first ``n`` images of ``pool`` (a link to an
    older copy of a pool file is replaced)."""
    folder.mkdir(parents=True, exist_ok=True)
    for p in pool[:n]:
        q = folder / p.name
        if q.exists() and os.path.samefile(p, q):
            continue
        q.unlink(missing_ok=True)
        os.link(p, q)
    return folder


def train_model(run_dir: Path, *, data_dir: Path, widths: tuple[int, ...]) -> Path:
    """A detector trained by the loop (rounds=0) on bright-field images 001-004 with
    10 % of their points; returns ``run_dir``. Reused when it exists."""
    if (run_dir / "final" / "model.pt").exists():
        return run_dir
    from pseudocell.config import Config
    from pseudocell.data.points import hide_points
    from pseudocell.demo import load_brightfield
    from pseudocell.orchestrator.executors import LocalExecutor
    from pseudocell.orchestrator.run import prepare_run, run_loop
    from pseudocell.validation import RunInputs

    cfg = Config(rounds=0, unet_widths=widths, detector_iters=60, device="cpu")
    images, gt = load_brightfield(data_dir, range(1, 5))
    layout = prepare_run(run_dir, cfg, RunInputs(images, hide_points(gt, 0.1, seed=0)),
                         force=True)
    run_loop(layout, cfg, LocalExecutor())
    return run_dir


# -- the bare model ----------------------------------------------------------------------
def _bare_tiles(model: Path, paths: list[Path], threads: int | None):
    """The loaded network and the tiles detect feeds it for ``paths`` (resized as the
    model's run; captured once), with ``threads`` torch threads (None: torch's default)."""
    import torch

    if threads:
        torch.set_num_threads(threads)

    from pseudocell.core.detector import load_unet, predict_heatmap
    from pseudocell.core.scale import resize_image
    from pseudocell.inference import resolve_model
    from pseudocell.validation import read_checked_image

    path, _, ck = resolve_model(model)
    net = load_unet(ck["state_dict"], ck["meta"]["widths"], "cpu")
    scale = float(ck["meta"].get("scale", 1.0))
    tiles: list[torch.Tensor] = []
    handle = net.register_forward_pre_hook(lambda _m, a: tiles.append(a[0].detach().clone()))
    try:
        for p in paths:
            predict_heatmap(net, resize_image(read_checked_image(p)[0], scale))
    finally:
        handle.remove()
    with torch.no_grad():
        for x in tiles[:2]:
            net(x)  # warm-up
    return net, tiles, {"model": str(path), "scale": scale}


def bare_throughput(model: Path, paths: list[Path], *, repeats: int = 3,
                    threads: int | None = None) -> dict:
    """Images/s of ``net(x)`` on the tiles detect feeds the network for ``paths``
    (preloaded), best of ``repeats``, with ``threads`` torch threads (None: torch's
    default, as the local engine)."""
    import torch

    net, tiles, meta = _bare_tiles(model, paths, threads)
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            t0 = time.perf_counter()
            for x in tiles:
                net(x)
            best = min(best, time.perf_counter() - t0)
    return {"images_per_s": len(paths) / best, "n_images": len(paths), "n_tiles": len(tiles),
            "tile_shape": list(tiles[0].shape[-2:]), "seconds": best,
            "torch_threads": torch.get_num_threads(), **meta}


def _bare_worker(model: Path, paths: list[Path], repeats: int, barrier, results) -> None:
    """One process of :func:`bare_parallel`: load and capture, wait for the others, then
    ``repeats`` passes over the tiles; reports (images, start, end) on the clock that
    all processes of the machine share."""
    import torch

    net, tiles, _ = _bare_tiles(model, paths, 1)
    barrier.wait()
    t0 = time.monotonic()
    with torch.no_grad():
        for _ in range(repeats):
            for x in tiles:
                net(x)
    results.put((len(paths) * repeats, t0, time.monotonic()))


def bare_parallel(model: Path, paths: list[Path], processes: int, *, repeats: int = 3) -> dict:
    """The machine's bare rate in the Ray engine's shape: ``processes`` processes, one
    torch thread each, starting together (a barrier after loading) and each making
    ``repeats`` passes over the tiles; images/s = all images / (last end - first start)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_bare_worker, args=(model, paths, repeats, barrier, results))
             for _ in range(processes)]
    for p in procs:
        p.start()
    done = [results.get(timeout=3600) for _ in procs]
    for p in procs:
        p.join()
    images = sum(d[0] for d in done)
    wall = max(d[2] for d in done) - min(d[1] for d in done)
    return {"images_per_s": images / wall, "processes": processes, "seconds": wall,
            "n_images": len(paths), "repeats": repeats, "torch_threads": 1}


# -- detect in a child, memory of its process tree -----------------------------------------
def _images_done(out: Path) -> int:
    """Images written to shards so far (the first index of the last shard; a lower
    bound, in steps of a shard)."""
    parts = sorted((out / "shards").glob("part-*.parquet")) if (out / "shards").exists() else []
    return int(parts[-1].stem.split("-")[1]) if parts else 0


def _kib(path: Path, key: str) -> float:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(key):
                return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def _tree_memory(pid: int) -> tuple[float, float, int]:
    """Sum of RSS (``VmRSS``) and of PSS (``smaps_rollup``), MiB, over ``pid`` and its
    descendants, and their count."""
    pids = tree_pids(pid)
    rss = sum(_kib(Path(f"/proc/{p}/status"), "VmRSS:") for p in pids)
    pss = sum(_kib(Path(f"/proc/{p}/smaps_rollup"), "Pss:") for p in pids)
    return rss / 1024, pss / 1024, len(pids)


def run_detect(model: Path, images: Path, out: Path, *, engine: str, n: int,
               extra: list[str] | None = None, interval: float = 0.25,
               timeout: float | None = None) -> dict:
    """``python -m pseudocell detect`` in a child; wall time and the peak memory of its
    process tree."""
    cmd = [sys.executable, "-m", "pseudocell", "--quiet", "detect", "--model", str(model),
           "--images", str(images), "--out", str(out), "--engine", engine, "--no-overlays",
           *(extra or [])]
    env = _child_env()
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    peak = {"rss_mb": 0.0, "pss_mb": 0.0, "processes": 0}
    series: list[tuple[float, float, int]] = []  # (s, tree PSS MB, images done) every ~5 s
    stop = threading.Event()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)

    def sample() -> None:
        while not stop.is_set():
            rss, pss, k = _tree_memory(proc.pid)
            peak["rss_mb"] = max(peak["rss_mb"], rss)
            peak["pss_mb"] = max(peak["pss_mb"], pss)
            peak["processes"] = max(peak["processes"], k)
            now = time.perf_counter() - t0
            if not series or now - series[-1][0] >= 5.0:
                series.append((round(now, 1), round(pss, 1), _images_done(out)))
            stop.wait(interval)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        stop.set()
        th.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"detect --engine {engine} on {n} images failed "
                           f"(exit {proc.returncode}): {stderr[-3000:]}")
    n_det = sum(1 for _ in open(out / "detections_table.csv")) - 1
    tenths = pss_by_tenth(series, n)
    return {"engine": engine, "n_images": n, "wall_s": wall, "images_per_s": n / wall,
            "detections": n_det, "peak_tree_rss_mb": peak["rss_mb"],
            "peak_tree_pss_mb": peak["pss_mb"], "max_processes": peak["processes"],
            "pss_series": series, "peak_pss_by_tenth_mb": tenths,
            "cmd": " ".join(cmd[1:])}


def pss_by_tenth(series: list[tuple[float, float, int]], n: int) -> list[float | None]:
    """Peak tree PSS (MB) while the k-th tenth of the ``n`` images was being written
    (k = 0..9, from the ``(s, PSS MB, images done)`` samples; None where no sample fell,
    e.g. when one shard holds more than a tenth of the images; samples after the last
    shard, while the run shuts down, count in the last tenth): flat memory means the
    last nine tenths stay at the first tenth's level."""
    peaks: list[float | None] = [None] * 10
    for _s, pss, done in series:
        k = min(9, int(10 * done / max(n, 1)))
        peaks[k] = pss if peaks[k] is None else max(peaks[k], pss)
    return peaks


def _compare(a: Path, b: Path) -> dict:
    """Do two detect outputs agree? ``identical``: both CSVs byte for byte;
    ``same_points``: every image has as many detections in both and each of ``a``'s has
    one of ``b``'s within 0.1 px; ``max_position_diff`` (px, nearest partner) and
    ``max_value_diff`` (rows in the same order only). Engines whose detectors run with
    different torch thread counts (local: one process with every core; ray: one thread
    per actor) sum in another order: heatmap values differ in float32's last digits, a
    sub-pixel position can round to the neighbouring 0.01 px, and nearly tied peaks of
    an image can swap places in the list."""
    import csv
    from collections import defaultdict

    from scipy.spatial import cKDTree

    tables = []
    for d in (a, b):
        by: dict[str, list] = defaultdict(list)
        with open(d / "detections_table.csv") as f:
            for r in list(csv.reader(f))[1:]:
                by[r[0]].append([float(v) for v in r[1:4]])
        tables.append({k: np.array(v) for k, v in by.items()})
    ta, tb = tables
    same = ta.keys() == tb.keys() and all(len(ta[k]) == len(tb[k]) for k in ta)
    pos = val = None
    if same and ta:
        pos = max(float(cKDTree(tb[k][:, :2]).query(ta[k][:, :2])[0].max()) for k in ta)
        val = max(float(np.abs(ta[k][:, 2] - tb[k][:, 2]).max()) for k in ta)
        same = pos <= 0.1
    identical = all((a / f).read_bytes() == (b / f).read_bytes()
                    for f in ("detections.csv", "detections_table.csv"))
    return {"identical": identical, "same_points": same, "max_position_diff": pos,
            "max_value_diff": val}


def _marginal(rows: list[dict]) -> None:
    """Add ``marginal_images_per_s``: (N2 - N1) / (wall2 - wall1) against the engine's
    previous size, i.e. the steady rate once start-up (imports, Ray, model) is paid."""
    last: dict[str, dict] = {}
    for r in rows:
        prev = last.get(r["engine"])
        if prev is not None and r["wall_s"] > prev["wall_s"]:
            r["marginal_images_per_s"] = ((r["n_images"] - prev["n_images"])
                                          / (r["wall_s"] - prev["wall_s"]))
        last[r["engine"]] = r


def _vs(c: dict | None) -> str:
    if c is None:
        return ""
    if c["identical"]:
        return "identical files"
    if c["same_points"]:
        return (f"same points (Δ ≤ {c['max_position_diff']:.2f} px), "
                f"value Δ ≤ {c['max_value_diff']:.1e}")
    return "DIFFERENT points"


def _table(bare: dict, bare_par: dict, rows: list[dict]) -> str:
    """Each engine against the bare model in its own shape: local against one process
    with every core's threads, ray against one one-thread process per core."""
    lines = [f"bare model: {bare['images_per_s']:.2f} images/s in one process "
             f"({bare['torch_threads']} torch threads; {bare['n_images']} images, "
             f"{bare['n_tiles']} tiles of {'×'.join(map(str, bare['tile_shape']))}); "
             f"{bare_par['images_per_s']:.2f} images/s in {bare_par['processes']} "
             "one-thread processes at once", "",
             "| engine | images | wall (s) | images/s | × bare | marginal images/s | "
             "× bare | detections | peak tree PSS (MB) | peak tree RSS (MB) | processes | "
             "vs local |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        ref = (bare if r["engine"] == "local" else bare_par)["images_per_s"]
        m = r.get("marginal_images_per_s")
        marg = f"{m:.2f} | {m / ref:.2f}" if m else "– | –"
        lines.append(f"| {r['engine']} | {r['n_images']} | {r['wall_s']:.1f} | "
                     f"{r['images_per_s']:.2f} | {r['images_per_s'] / ref:.2f} | "
                     f"{marg} | "
                     f"{r['detections']} | {r['peak_tree_pss_mb']:.0f} | "
                     f"{r['peak_tree_rss_mb']:.0f} | {r['max_processes']} | "
                     f"{_vs(r.get('vs_local'))} |")
    return "\n".join(lines)


def _write(out: Path, result: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100,1000",
                    help="comma-separated numbers of images (default 100,1000)")
    ap.add_argument("--engines", default="local,ray")
    ap.add_argument("--model", type=Path, default=None,
                    help="model.pt or run directory (default: train one under --work)")
    ap.add_argument("--widths", default="8-16-32-64",
                    help="U-Net widths of the trained model (default 8-16-32-64)")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK,
                    help=f"folder for images, model and outputs (default {DEFAULT_WORK})")
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="bright-field demo images (default: the shared data)")
    ap.add_argument("--bare-images", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8, help="--batch-size of --engine ray")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_detect_scale.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch

    from pseudocell.data.fetch import locate_brightfield

    sizes = [int(s) for s in args.sizes.split(",")]
    engines = args.engines.split(",")
    data_dir = args.data_dir or locate_brightfield()
    t_all = time.perf_counter()
    model = args.model or train_model(args.work / f"model_run_{args.widths}",
                                      data_dir=data_dir,
                                      widths=tuple(int(w) for w in args.widths.split("-")))
    t0 = time.perf_counter()
    pool = synthesise(args.work / "pool", max(sizes), data_dir=data_dir)
    synth_s = time.perf_counter() - t0
    # the Ray engine's shape: one process with one torch thread per core, all at once
    bare1 = bare_parallel(model, pool[:args.bare_images], os.cpu_count() or 1)
    torch.set_num_threads(os.cpu_count() or 1)
    bare = bare_throughput(model, pool[:args.bare_images])
    result = {"sizes": sizes, "engines": engines, "model": str(model), "bare": bare,
              "bare_parallel": bare1,
              "synthesis_s": synth_s, "batch_size": args.batch_size,
              "versions": {"python": platform.python_version(), "torch": torch.__version__,
                           "cpu_count": os.cpu_count(), "platform": platform.platform()},
              "runs": []}
    print(f"# pseudocell detect at scale ({os.cpu_count()} CPUs)\n")
    print(f"  bare model: {bare['images_per_s']:.2f} images/s (one process, "
          f"{bare['torch_threads']} threads); {bare1['processes']} one-thread processes: "
          f"{bare1['images_per_s']:.2f} images/s", flush=True)
    for n in sizes:
        folder = subset(pool, n, args.work / f"images_{n}")
        for engine in engines:
            out = args.work / f"det_{engine}_{n}"
            extra = ["--batch-size", str(args.batch_size)] if engine == "ray" else []
            r = run_detect(model, folder, out, engine=engine, n=n, extra=extra)
            local = args.work / f"det_local_{n}"
            if engine != "local" and (local / "detections.csv").exists():
                r["vs_local"] = _compare(out, local)
            result["runs"].append(r)
            _write(args.out, result)  # after every run: a long benchmark stopped early keeps its numbers
            print(f"  {engine} n={n}: {r['images_per_s']:.2f} images/s, peak tree PSS "
                  f"{r['peak_tree_pss_mb']:.0f} MB", flush=True)
    _marginal(result["runs"])
    result["seconds"] = time.perf_counter() - t_all
    print("\n" + _table(bare, bare1, result["runs"]))
    print(f"bare model in {bare1['processes']} one-thread processes at once: "
          f"{bare1['images_per_s']:.2f} images/s (the Ray engine's shape)\n")
    _write(args.out, result)
    print(f"total {result['seconds']:.0f} s; wrote {args.out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
