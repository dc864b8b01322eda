"""Speed and memory benchmarks of the detector and of one round of the loop.

Two measurements (driven by ``benchmarks/perf.py``):

* :func:`detector_throughput` — megapixels per second of
  :func:`~pseudocell.core.detector.predict_heatmap` (padding, tiling, host/device copies,
  numpy conversion) against a bare ``model(x)`` on exactly the same tiles, pre-built on the
  device. The ratio ours/bare is the share of the time that is real network work.
* :func:`round_memory` / :func:`memory_scaling` — peak resident memory and wall time of
  one round of the loop (``rounds=1``: round 0's stages, the final detector and
  ``final/``) as the image set is repeated 1×, 2×, 4×. Every measurement runs in a fresh
  child process (``python benchmarks/perf_lib.py --round-child ...``) so that each
  scale has its own peak.

Peak memory is read from ``VmHWM`` in ``/proc/self/status`` (the high-water mark of the
process's own address space). ``getrusage(RUSAGE_SELF).ru_maxrss`` is reported beside it
but not used: on Linux a child started by ``subprocess`` inherits the parent's resident
size at fork time into ``ru_maxrss`` (measured: a child of a 425 MB parent reports
425 MB while its ``VmHWM`` is 9 MB), so it overstates small children.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["peak_rss_mb", "repeat_images", "detector_throughput", "round_memory",
           "memory_scaling", "RESULT_MARKER"]

logger = logging.getLogger(__name__)

#: Prefix of the one stdout line on which a child process reports its JSON result.
RESULT_MARKER = "PSEUDOCELL_BENCH_RESULT "


# -- memory of this process -------------------------------------------------------------
def peak_rss_mb() -> dict[str, Any]:
    """Peak resident set size of the calling process, in MiB.

    Returns
    -------
    dict
        ``peak_rss_mb`` (float): ``VmHWM`` from ``/proc/self/status`` where it exists,
        else ``ru_maxrss``; ``rss_source`` (``"VmHWM"`` or ``"ru_maxrss"``);
        ``ru_maxrss_mb`` (float): ``getrusage(RUSAGE_SELF).ru_maxrss`` (KiB on Linux,
        bytes on macOS), which includes the parent's size at fork time on Linux.
    """
    import resource

    raw = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ru_mb = raw / 2**20 if sys.platform == "darwin" else raw / 1024
    out = {"peak_rss_mb": ru_mb, "rss_source": "ru_maxrss", "ru_maxrss_mb": ru_mb}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    out["peak_rss_mb"] = int(line.split()[1]) / 1024  # kB
                    out["rss_source"] = "VmHWM"
                    break
    except OSError:
        pass
    return out


# -- inputs ----------------------------------------------------------------------------
def repeat_images(ids: Sequence[str], images: Sequence[np.ndarray],
                  points: dict[str, np.ndarray], scale: int
                  ) -> tuple[list[str], list[np.ndarray], dict[str, np.ndarray]]:
    """Repeat an image set ``scale`` times under distinct ids, with its points.

    Copy 1 keeps the original ids; copy ``k >= 2`` of image ``001cells`` is
    ``001cells_r{k}`` and carries the same points.

    Parameters
    ----------
    ids : sequence of str
    images : sequence of ndarray (H_i, W_i)
        Not copied: every repeat refers to the same array.
    points : dict with ``image_id`` (object), ``y``, ``x`` (float64) columns
    scale : int >= 1

    Returns
    -------
    (ids, images, points) of the repeated set.

    >>> pts = {"image_id": np.array(["a"], object), "y": np.array([1.0]), "x": np.array([2.0])}
    >>> i, _, p = repeat_images(["a"], [np.zeros((8, 8))], pts, 2)
    >>> i, list(p["image_id"])
    (['a', 'a_r2'], ['a', 'a_r2'])
    """
    if int(scale) < 1:
        raise ValueError(f"scale must be >= 1, got {scale!r}")
    out_ids: list[str] = []
    out_imgs: list[np.ndarray] = []
    cols: dict[str, list[np.ndarray]] = {"image_id": [], "y": [], "x": []}
    pid = np.asarray(points["image_id"]).astype(str)
    for k in range(1, int(scale) + 1):
        new = {i: (i if k == 1 else f"{i}_r{k}") for i in ids}
        out_ids += [new[i] for i in ids]
        out_imgs += list(images)
        keep = np.isin(pid, list(ids))
        cols["image_id"].append(np.array([new[i] for i in pid[keep]], object))
        cols["y"].append(np.asarray(points["y"], np.float64)[keep])
        cols["x"].append(np.asarray(points["x"], np.float64)[keep])
    pts = {k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()}
    pts["image_id"] = pts["image_id"].astype(object)
    return out_ids, out_imgs, pts


# -- detector throughput ---------------------------------------------------------------
def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _timed(fn: Callable[[], None], dev) -> float:
    _sync(dev)
    t0 = time.perf_counter()
    fn()
    _sync(dev)
    return time.perf_counter() - t0


def detector_throughput(images: list[np.ndarray], *, widths: Sequence[int],
                        device: str = "auto", repeats: int = 3, seed: int = 0,
                        tile: int = 512, margin: int = 32,
                        num_threads: int | None = None) -> dict[str, Any]:
    """Megapixels per second of tiled prediction against a bare forward pass.

    A U-Net with random weights (``build_unet(widths, seed)``, eval mode; speed does not
    depend on the weights) predicts every image twice per repeat:

    * ours: :func:`~pseudocell.core.detector.predict_heatmap` on the numpy image
      (reflect padding, tiling, copy to the device, forward, copy back, stitching);
    * bare: ``model(x)`` under ``torch.no_grad`` on the very tensors ``predict_heatmap``
      fed the network (captured by a forward pre-hook during the warm-up pass and kept
      on the device), synchronising CUDA before the clock stops.

    Both are warmed up once. Then, image by image and ``repeats`` times, ours and bare are
    timed back to back (so that load from other processes hits both alike); each side's
    time per pass is the sum over images of its best time for that image. Megapixels count
    the images' own pixels (H·W), so both figures measure the same useful output and
    ``ratio = ours / bare = t_bare / t_ours``. ``ratio_median`` is the median over every
    back-to-back pair of ``t_bare / t_ours``, a second estimate that is robust to load.

    Parameters
    ----------
    images : list of ndarray (H_i, W_i), float32
        Normalised images (any sizes).
    widths : sequence of int
        U-Net widths, e.g. ``Config().unet_widths``.
    device : str, default="auto"
        ``auto`` (CUDA when present) | ``cpu`` | ``cuda[:N]``.
    repeats : int, default=3
    seed : int, default=0
        Seeds the random weights.
    tile, margin : int
        Passed to ``predict_heatmap`` (its defaults, as the ``predict`` stage uses).
    num_threads : int, optional
        torch intra-op threads during the measurement (restored afterwards); None keeps
        the current setting.

    Returns
    -------
    dict
        ``ours_mpx_s``, ``bare_mpx_s`` (megapixels/s), ``ratio`` (ours/bare, ≤ 1 when
        tiling/IO costs time), ``ratio_median``, ``overhead_pct`` (share of our time
        outside the bare forward), ``ours_s``, ``bare_s`` (per pass, sums of per-image
        bests), ``ours_all_s``, ``bare_all_s`` (per-pass totals of every repeat),
        ``n_images``, ``image_shape`` ([H, W], or None when the images differ),
        ``megapixels`` (per pass), ``n_tiles``, ``tile_shapes``,
        ``tile_megapixels`` (padded pixels the network computes per pass), ``device``,
        ``device_name``, ``torch_threads``, ``widths``, ``repeats``.

    Raises
    ------
    ValueError
        If ``images`` is empty, an image is not 2-D, or ``repeats < 1``.
    """
    import torch

    from pseudocell.core.detector import build_unet, predict_heatmap, resolve_device

    if not images:
        raise ValueError("detector_throughput needs at least one image, got none")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats!r}")
    imgs = [np.ascontiguousarray(im, dtype=np.float32) for im in images]
    for k, im in enumerate(imgs):
        if im.ndim != 2:
            raise ValueError(f"image {k} must be 2-D (H, W), got shape {im.shape}")
    dev = resolve_device(device)
    prev_threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(int(num_threads))
    try:
        model = build_unet(widths, seed).to(dev).eval()
        per_image: list[list[torch.Tensor]] = []

        def capture(_module, args):
            per_image[-1].append(args[0].detach().clone())

        handle = model.register_forward_pre_hook(capture)
        try:  # warm-up of ours, and the tiles it feeds the network
            for im in imgs:
                per_image.append([])
                predict_heatmap(model, im, tile=tile, margin=margin)
        finally:
            handle.remove()
        tiles = [x for group in per_image for x in group]

        def bare(group: list[torch.Tensor]) -> None:
            with torch.no_grad():
                for x in group:
                    model(x)

        for group in per_image:  # warm-up
            _timed(partial(bare, group), dev)
        t_ours = np.zeros((repeats, len(imgs)))
        t_bare = np.zeros((repeats, len(imgs)))
        for r in range(repeats):
            for k, (im, group) in enumerate(zip(imgs, per_image)):
                t_ours[r, k] = _timed(partial(predict_heatmap, model, im, tile=tile,
                                              margin=margin), dev)
                t_bare[r, k] = _timed(partial(bare, group), dev)
        threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(prev_threads)
    mpx = sum(im.size for im in imgs) / 1e6
    best_ours, best_bare = float(t_ours.min(0).sum()), float(t_bare.min(0).sum())
    shapes = {im.shape for im in imgs}
    tile_shapes = sorted({tuple(int(s) for s in x.shape[-2:]) for x in tiles})
    res = {
        "device": str(dev),
        "device_name": (torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"),
        "torch_threads": int(threads),
        "widths": [int(w) for w in widths],
        "n_images": len(imgs),
        "image_shape": list(next(iter(shapes))) if len(shapes) == 1 else None,
        "megapixels": mpx,
        "n_tiles": len(tiles),
        "tile_shapes": [list(s) for s in tile_shapes],
        "tile_megapixels": sum(x.shape[-2] * x.shape[-1] for x in tiles) / 1e6,
        "repeats": int(repeats),
        "ours_s": best_ours,
        "bare_s": best_bare,
        "ours_all_s": t_ours.sum(1).tolist(),
        "bare_all_s": t_bare.sum(1).tolist(),
        "ours_mpx_s": mpx / best_ours,
        "bare_mpx_s": mpx / best_bare,
        "ratio": best_bare / best_ours,
        "ratio_median": float(np.median(t_bare / t_ours)),
        "overhead_pct": 100.0 * (best_ours - best_bare) / best_ours,
    }
    logger.info("detector throughput on %s: ours %.2f MP/s, bare %.2f MP/s, ratio %.3f",
                res["device"], res["ours_mpx_s"], res["bare_mpx_s"], res["ratio"])
    return res


# -- memory of one round, per child process ----------------------------------------------
def _child_env() -> dict[str, str]:
    """Environment for a child: this package importable, no stray telemetry, the
    pseudocell command's malloc settings."""
    import pseudocell

    src = str(Path(pseudocell.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([src] + [p for p in env.get("PYTHONPATH", "").split(
        os.pathsep) if p])
    env.setdefault("PYTHONUNBUFFERED", "1")
    # the malloc settings the pseudocell command restarts with (PSEUDOCELL_MALLOC_ARENAS=0
    # in this environment measures glibc's defaults)
    from pseudocell.runtime import malloc_arena_env

    env.update(malloc_arena_env())
    return env


def _run_child(args: list[str], timeout: float | None) -> dict[str, Any]:
    """Run ``python benchmarks/perf_lib.py --round-child ...``; its JSON result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--round-child", *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_child_env(),
                          timeout=timeout, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child {' '.join(args[:1])} failed (exit "
                           f"{proc.returncode}): {proc.stderr[-3000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARKER)]
    if not lines:
        raise RuntimeError(f"benchmark child {' '.join(args[:1])} reported no result; "
                           f"stdout: {proc.stdout[-1000:]!r} stderr: {proc.stderr[-2000:]}")
    out = json.loads(lines[-1][len(RESULT_MARKER):])
    out["process_s"] = seconds  # interpreter start and imports included
    return out


def _dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def _one_round(cfg):
    """``cfg`` with ``rounds=1`` (one pseudo-labelling round plus the final detector)."""
    if cfg.rounds != 1:
        logger.info("memory benchmark: rounds=%d replaced by rounds=1", cfg.rounds)
        cfg = cfg.replace(rounds=1)
    return cfg


def round_memory(scale: int, out_dir: str | Path, cfg, data_dir: str | Path | None = None,
                 *, n_images: int = 4, images: Sequence[np.ndarray] | None = None,
                 points: dict[str, np.ndarray] | None = None, ids: Sequence[str] | None = None,
                 keep: float = 0.1, keep_run: bool = False, loop: bool = True,
                 timeout: float | None = None) -> dict[str, Any]:
    """Peak RSS and wall time of one round of the loop on an image set repeated ``scale``×.

    Two child processes, each measuring itself:

    1. ``prepare``: load the images (bright-field ``001cells`` .. from ``data_dir``, with
       a seeded ``keep`` fraction of their points as
       :func:`~pseudocell.data.points.hide_points` keeps them; or the ``images``
       override), repeat them (:func:`repeat_images`) and write the run directory with
       :func:`~pseudocell.orchestrator.run.prepare_run`. No ground truth and no held-out
       images, so there is no ``evaluate`` stage.
    2. ``loop``: :func:`~pseudocell.orchestrator.run.run_loop` with ``rounds=1`` on that
       directory and the :class:`~pseudocell.orchestrator.executors.LocalExecutor`:
       round 0's seven stages, the final detector (train + predict) and ``final/``.

    Parameters
    ----------
    scale : int >= 1
        How many times the image set is repeated.
    out_dir : path
        Scratch folder; ``<out_dir>/scale_<scale>/`` is (re)created.
    cfg : pseudocell.config.Config
        Used with ``rounds=1``.
    data_dir : path, optional
        Folder of ``NNNcells.png`` / ``NNNdots.png``; default
        :func:`~pseudocell.data.fetch.locate_brightfield`. Ignored when ``images`` is given.
    n_images : int, default=4
        Images ``001`` .. ``n_images`` of ``data_dir`` before repeating.
    images : sequence of ndarray (H_i, W_i) float32, optional
        Use these normalised images instead of the data folder; needs ``points``.
    points : dict with ``image_id``, ``y``, ``x``, optional
        Annotated points of ``images`` (all kept).
    ids : sequence of str, optional
        Ids of ``images``; default ``img000``, ``img001``, ...
    keep : float, default=0.1
        Fraction of ground-truth points kept per image (data-folder path).
    keep_run : bool, default=False
        Keep the run directory (else it is deleted after its size is recorded).
    loop : bool, default=True
        False runs only the ``prepare`` child (input loading and writing); the loop
        figures are then None.
    timeout : float, optional
        Seconds each child may run.

    Returns
    -------
    dict
        ``scale``, ``n_images``, ``peak_rss_mb`` and ``wall_s`` of the loop child,
        ``prepare_peak_rss_mb`` and ``prepare_wall_s`` of the prepare child,
        ``stage_seconds`` (``"<round>/<stage>"`` → s), ``peak_after_stage_mb`` (the
        loop child's peak RSS right after each stage: where it jumps is the stage that
        set it), ``run_dir_mb``, ``rss_source``,
        and the raw ``loop`` / ``prepare`` child reports.
    """
    from pseudocell.config import dump_toml

    cfg = _one_round(cfg)
    base = Path(out_dir) / f"scale_{int(scale)}"
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    cfg_path = base / "config.toml"
    cfg_path.write_text(dump_toml(cfg))
    run_dir = base / "run"
    args = ["prepare", "--run-dir", str(run_dir), "--config", str(cfg_path),
            "--scale", str(int(scale)), "--keep", repr(float(keep))]
    if images is not None:
        if points is None:
            raise ValueError("round_memory: `images` needs `points` (the annotated points "
                             "table with image_id, y, x)")
        ids = list(ids) if ids is not None else [f"img{k:03d}" for k in range(len(images))]
        if len(ids) != len(images):
            raise ValueError(f"round_memory: {len(ids)} ids for {len(images)} images")
        npz = base / "inputs.npz"
        arrays = {f"image_{k}": np.asarray(im, np.float32) for k, im in enumerate(images)}
        np.savez(npz, ids=np.array(ids, dtype=str),
                 points_image_id=np.asarray(points["image_id"]).astype(str),
                 points_y=np.asarray(points["y"], np.float64),
                 points_x=np.asarray(points["x"], np.float64), **arrays)
        args += ["--inputs", str(npz)]
    else:
        if data_dir is None:
            from pseudocell.data.fetch import locate_brightfield

            data_dir = locate_brightfield()
        args += ["--data-dir", str(data_dir), "--n-images", str(int(n_images))]
    prep = _run_child(args, timeout)
    child = (_run_child(["loop", "--run-dir", str(run_dir), "--config", str(cfg_path)],
                        timeout) if loop else {})
    size = _dir_mb(run_dir)
    if not keep_run:
        shutil.rmtree(base, ignore_errors=True)
    res = {"scale": int(scale), "n_images": prep["n_images"],
           "peak_rss_mb": child.get("peak_rss_mb"), "wall_s": child.get("wall_s"),
           "prepare_peak_rss_mb": prep["peak_rss_mb"], "prepare_wall_s": prep["wall_s"],
           "stage_seconds": child.get("stage_seconds", {}),
           "peak_after_stage_mb": child.get("peak_after_stage_mb", {}), "run_dir_mb": size,
           "rss_source": prep["rss_source"], "prepare": prep, "loop": child}
    if loop:
        logger.info("round memory scale=%d n_images=%d peak_rss=%.0f MB wall=%.1f s",
                    res["scale"], res["n_images"], res["peak_rss_mb"], res["wall_s"])
    return res


def memory_scaling(scales: Sequence[int] = (1, 2, 4), *, cfg, data_dir: str | Path | None = None,
                   n_images: int = 4, images: Sequence[np.ndarray] | None = None,
                   points: dict[str, np.ndarray] | None = None,
                   ids: Sequence[str] | None = None, out_dir: str | Path | None = None,
                   keep: float = 0.1, timeout: float | None = None) -> dict[str, Any]:
    """:func:`round_memory` at every scale, plus the import floor of a child process.

    Parameters
    ----------
    scales : sequence of int, default=(1, 2, 4)
    cfg, data_dir, n_images, images, points, ids, keep, timeout
        As in :func:`round_memory`.
    out_dir : path, optional
        Scratch folder; a temporary one (deleted afterwards) when None.

    Returns
    -------
    dict
        ``per_scale`` (list of :func:`round_memory` results without the raw child
        reports), ``baseline_rss_mb`` (peak of a child that only imports the loop's
        modules), ``peak_ratio`` (loop peak at the largest scale / at the smallest),
        ``prepare_peak_ratio``, ``mb_per_image`` (growth of the loop peak per added
        image between the smallest and largest scale), ``wall_ratio``, ``ratio_scales``
        ([smallest, largest]), ``config`` (the config used, ``rounds=1``).
    """
    if not scales:
        raise ValueError("memory_scaling needs at least one scale")
    cfg = _one_round(cfg)
    tmp = None
    if out_dir is None:
        tmp = tempfile.mkdtemp(prefix="pseudocell-bench-")
        out_dir = tmp
    try:
        baseline = _run_child(["baseline"], timeout)
        rows = []
        for s in scales:
            r = round_memory(s, out_dir, cfg, data_dir, n_images=n_images, images=images,
                             points=points, ids=ids, keep=keep, timeout=timeout)
            rows.append({k: v for k, v in r.items() if k not in ("prepare", "loop")})
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    lo = min(rows, key=lambda r: r["scale"])
    hi = max(rows, key=lambda r: r["scale"])
    dn = hi["n_images"] - lo["n_images"]
    return {
        "per_scale": rows,
        "baseline_rss_mb": baseline["peak_rss_mb"],
        "rss_source": baseline["rss_source"],
        "ratio_scales": [lo["scale"], hi["scale"]],
        "peak_ratio": hi["peak_rss_mb"] / lo["peak_rss_mb"],
        "prepare_peak_ratio": hi["prepare_peak_rss_mb"] / lo["prepare_peak_rss_mb"],
        "wall_ratio": hi["wall_s"] / lo["wall_s"] if lo["wall_s"] > 0 else math.nan,
        "mb_per_image": (hi["peak_rss_mb"] - lo["peak_rss_mb"]) / dn if dn else math.nan,
        "config": cfg.to_dict(),
    }


# -- child process entry point ------------------------------------------------------------
def _child_prepare(ns: argparse.Namespace) -> dict[str, Any]:
    from pseudocell.config import load_config
    from pseudocell.orchestrator.run import prepare_run
    from pseudocell.validation import ImageSet, RunInputs

    cfg = load_config(ns.config)
    t0 = time.perf_counter()
    if ns.inputs:
        with np.load(ns.inputs, allow_pickle=False) as z:
            ids = [str(i) for i in z["ids"]]
            imgs = [z[f"image_{k}"] for k in range(len(ids))]
            pts = {"image_id": z["points_image_id"].astype(object), "y": z["points_y"],
                   "x": z["points_x"]}
        paths = [f"{ns.inputs}#{i}" for i in ids]
    else:
        from pseudocell.data.points import hide_points
        from pseudocell.demo import load_brightfield

        images, gt = load_brightfield(ns.data_dir, range(1, ns.n_images + 1))
        ids, imgs, paths = images.ids, images.images, images.paths
        pts = hide_points(gt, ns.keep, seed=cfg.seed)
    rids, rimgs, rpts = repeat_images(ids, imgs, pts, ns.scale)
    rpaths = [paths[k % len(ids)] for k in range(len(rids))]  # copies are in blocks
    prepare_run(ns.run_dir, cfg, RunInputs(ImageSet(rids, rimgs, rpaths), rpts), force=True)
    return {"n_images": len(rids), "n_points": int(len(rpts["y"])),
            "wall_s": time.perf_counter() - t0}


def _child_loop(ns: argparse.Namespace) -> dict[str, Any]:
    from pseudocell.config import load_config
    from pseudocell.orchestrator.executors import LocalExecutor
    from pseudocell.orchestrator.run import run_loop
    from pseudocell.storage import arrays
    from pseudocell.storage.layout import RunLayout

    cfg = load_config(ns.config)
    layout = RunLayout(str(Path(ns.run_dir).resolve()))
    stage_seconds: dict[str, float] = {}
    stage_peak: dict[str, float] = {}

    def progress(ev) -> None:
        if ev.status == "done":
            stage_seconds[f"{ev.round}/{ev.stage}"] = ev.seconds
            stage_peak[f"{ev.round}/{ev.stage}"] = peak_rss_mb()["peak_rss_mb"]

    t0 = time.perf_counter()
    run_loop(layout, cfg, LocalExecutor(), progress=progress)
    return {"n_images": len(arrays.stack_ids(layout.images)), "stage_seconds": stage_seconds,
            "peak_after_stage_mb": stage_peak, "wall_s": time.perf_counter() - t0}


def _child_baseline(ns: argparse.Namespace) -> dict[str, Any]:
    """Import what the loop imports, nothing else: the floor under every peak."""
    t0 = time.perf_counter()
    import torch  # noqa: F401

    import pseudocell.orchestrator.executors  # noqa: F401
    import pseudocell.results.finalize  # noqa: F401
    import pseudocell.orchestrator.run  # noqa: F401

    return {"n_images": 0, "wall_s": time.perf_counter() - t0}


def _child_main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/perf_lib.py --round-child {prepare,loop,baseline} ...``.

    Logs go to stderr; the result is one stdout line ``RESULT_MARKER + json``.
    """
    ap = argparse.ArgumentParser(prog="python benchmarks/perf_lib.py",
                                 description="child process of the memory benchmark")
    ap.add_argument("--round-child", required=True, choices=("prepare", "loop", "baseline"))
    ap.add_argument("--run-dir", type=Path)
    ap.add_argument("--config", type=Path)
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--keep", type=float, default=0.1)
    ap.add_argument("--data-dir", type=Path)
    ap.add_argument("--n-images", type=int, default=4)
    ap.add_argument("--inputs", type=Path)
    ns = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    fn = {"prepare": _child_prepare, "loop": _child_loop, "baseline": _child_baseline}
    out = fn[ns.round_child](ns)
    out.update(peak_rss_mb())
    out["phase"] = ns.round_child
    sys.stdout.write(RESULT_MARKER + json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(_child_main())
