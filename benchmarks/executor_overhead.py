"""Overhead of the Ray executor against the local one: the demo's run on real data.

The parent prepares one run directory per executor (same images, points, config and
seed), then runs ``pseudocell resume RUN --executor {local,ray}`` as a child process and
samples the summed RSS of the child's whole process tree (for Ray: driver, GCS, raylet and
every worker) every 0.5 s (PSS every 5 s), and the CPU seconds of each kind of process
(the profile of the overhead). Both children run one after the other, never together.

    .venv/bin/python benchmarks/executor_overhead.py --out runs/bench_executor.json
    .venv/bin/python benchmarks/executor_overhead.py --rounds 1    # as before issue 19
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pseudocell.config import Config

__all__ = ["tree_rss_mb", "run_child", "executor_overhead", "main"]

logger = logging.getLogger(__name__)


def _children_map() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            out.setdefault(ppid, []).append(int(d.name))
    return out


def tree_pids(pid: int) -> set[int]:
    """``pid`` and all its live descendants."""
    kids = _children_map()
    seen, todo = {pid}, [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            if c not in seen:
                seen.add(c)
                todo.append(c)
    return seen


def _read_kb(path: str, keys: tuple[str, ...]) -> list[int]:
    out = [0] * len(keys)
    try:
        for line in Path(path).read_text().splitlines():
            for k, key in enumerate(keys):
                if line.startswith(key):
                    out[k] = int(line.split()[1])
    except OSError:
        pass
    return out


def tree_rss_mb(pid: int, *, pss: bool = False) -> tuple[float, float]:
    """(summed ``VmRSS``, summed ``Pss`` or 0) of ``pid`` and its descendants, in MiB.
    RSS counts shared pages (torch's libraries, Ray's object store) once per process and
    is an upper bound; PSS splits them among the processes sharing them but is costly to
    read (the kernel walks every mapping), so it is sampled less often."""
    rss = pss_kb = 0
    for p in tree_pids(pid):
        rss += _read_kb(f"/proc/{p}/status", ("VmRSS:",))[0]
        if pss:
            pss_kb += _read_kb(f"/proc/{p}/smaps_rollup", ("Pss:",))[0]
    return rss / 1024, pss_kb / 1024


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_and_name(pid: int) -> tuple[float, str] | None:
    """(user + system CPU seconds, a name) of a live process: Ray's workers carry their
    actor's name (``ray::DetectorTrainer``), other processes their program's."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICK
    words = [w.decode(errors="replace") for w in raw if w]
    return cpu, _process_name(words, stat.split("(", 1)[1].split(")", 1)[0])


def _process_name(words: list[str], comm: str) -> str:
    """``ray::Kind`` for Ray's workers, the program for native ones (raylet,
    gcs_server), the script or module for Python ones (``pseudocell``, ``ray idle
    worker`` for Ray's default_worker.py, ``log_monitor.py`` ...)."""
    if not words:
        return comm
    if words[0].startswith("ray::"):
        return words[0].split()[0].split(".")[0]
    if not Path(words[0]).name.startswith("python"):
        return Path(words[0]).name
    args = iter(words[1:])
    for w in args:
        if w == "-m":
            return next(args, "python -m")
        if not w.startswith("-"):
            return "ray idle worker" if w.endswith("default_worker.py") else Path(w).name
    return comm


def run_child(cmd: list[str], *, timeout: float = 3600) -> dict[str, Any]:
    """Run ``cmd``; wall time, the peak of its process tree's summed RSS, and the CPU
    seconds each kind of process in the tree used (sampled every 0.5 s: a process that
    lives less than that is missed, the last half second of each is not counted)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    peak = [0.0, 0.0]
    cpu: dict[int, tuple[float, str]] = {}
    stop = threading.Event()

    def sample() -> None:
        k = 0
        while not stop.is_set():
            rss, pss = tree_rss_mb(proc.pid, pss=k % 10 == 0)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
            for p in tree_pids(proc.pid):
                got = _cpu_and_name(p)
                if got is not None:
                    cpu[p] = got
            k += 1
            stop.wait(0.5)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        out = proc.communicate(timeout=timeout)[0].decode(errors="replace")
    finally:
        stop.set()
        th.join()
        pids = tree_pids(proc.pid) - {proc.pid}
        for p in pids:  # a local Ray the child started must not outlive it
            try:
                os.kill(p, 9)
            except ProcessLookupError:
                pass
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{out[-3000:]}")
    by_name: dict[str, float] = {}
    for c, name in cpu.values():
        by_name[name] = by_name.get(name, 0.0) + c
    return {"wall_s": wall, "peak_tree_rss_mb": peak[0], "peak_tree_pss_mb": peak[1],
            "cpu_s_by_process": dict(sorted(by_name.items(), key=lambda kv: -kv[1])),
            "cpu_s": sum(by_name.values()), "processes": len(cpu)}


def _manifests(run_dir: Path) -> list[dict]:
    """Every stage manifest of a finished run."""
    from pseudocell.storage.manifest import read_manifest

    return [read_manifest(str(m)) for m in sorted(run_dir.glob("round_*/*/_manifest.json"))]


def _stage_seconds(run_dir: Path) -> dict[str, float]:
    return {f"{m['round']}/{m['stage']}": m["seconds"] for m in _manifests(run_dir)}


def _digests(run_dir: Path) -> dict[str, str]:
    return {f"{m['round']}/{m['stage']}/{k}": v["sha256"]
            for m in _manifests(run_dir) for k, v in m["outputs"].items()}


def executor_overhead(out_dir: str | Path, *, cfg: Config, n_images: int = 40,
                      data_dir: str | Path | None = None, keep: float = 0.1,
                      ray_args: tuple[str, ...] = ()) -> dict[str, Any]:
    """A run of ``cfg.rounds`` rounds (the demo's 2 by default; ``--rounds 1``: the
    round-0 loop and the final detector) with each executor on the first ``n_images`` bright-field training images and 041-050 held out.

    ``cfg.num_threads`` unset is replaced by this machine's core count, so both executors
    use the same torch thread count in every stage (the condition for identical bytes).
    """
    from pseudocell.data.fetch import locate_brightfield
    from pseudocell.data.points import hide_points
    from pseudocell.demo import load_brightfield
    from pseudocell.orchestrator.run import prepare_run
    from pseudocell.validation import RunInputs

    cfg = cfg.replace(num_threads=cfg.num_threads or os.cpu_count())
    folder = Path(data_dir) if data_dir is not None else locate_brightfield()
    images, gt = load_brightfield(folder, range(1, n_images + 1))
    ev, ev_gt = load_brightfield(folder, range(41, 51))
    inputs = RunInputs(images, hide_points(gt, keep, seed=cfg.seed), gt, ev, ev_gt)
    out_dir = Path(out_dir)
    res: dict[str, Any] = {"config": cfg.to_dict(), "n_images": n_images,
                           "cpus": os.cpu_count()}
    for name, extra in (("local", []), ("ray", ["--executor", "ray", *ray_args])):
        run_dir = out_dir / name
        shutil.rmtree(run_dir, ignore_errors=True)  # a finished run would only be skipped
        prepare_run(run_dir, cfg, inputs)
        cmd = [sys.executable, "-m", "pseudocell", "--quiet", "resume", str(run_dir), *extra]
        logger.info("executor overhead: %s", " ".join(cmd))
        res[name] = run_child(cmd)
        res[name]["stage_seconds"] = _stage_seconds(run_dir)
    res["ratio_wall"] = res["ray"]["wall_s"] / res["local"]["wall_s"]
    res["ratio_stages"] = (sum(res["ray"]["stage_seconds"].values())
                           / sum(res["local"]["stage_seconds"].values()))
    res["identical_outputs"] = _digests(out_dir / "local") == _digests(out_dir / "ray")
    return res


def table(res: dict[str, Any]) -> str:
    """Markdown table of a result of :func:`executor_overhead`."""
    rows = ["| executor | wall s (process) | sum of stage s | peak RSS of process tree MB "
            "| peak PSS of process tree MB |", "|---|---:|---:|---:|---:|"]
    for name in ("local", "ray"):
        r = res[name]
        rows.append(f"| {name} | {r['wall_s']:.1f} | {sum(r['stage_seconds'].values()):.1f} | "
                    f"{r['peak_tree_rss_mb']:.0f} | {r['peak_tree_pss_mb']:.0f} |")
    rows.append(f"\nratio ray/local: wall {res['ratio_wall']:.3f}, stages "
                f"{res['ratio_stages']:.3f}; identical outputs: {res['identical_outputs']}")
    rows.append("\n| process | local CPU s | ray CPU s |\n|---|---:|---:|")
    names = dict.fromkeys([*res["ray"]["cpu_s_by_process"], *res["local"]["cpu_s_by_process"]])
    rows += [f"| {n} | {res['local']['cpu_s_by_process'].get(n, 0.0):.1f} | "
             f"{res['ray']['cpu_s_by_process'].get(n, 0.0):.1f} |" for n in names]
    rows.append(f"| all ({res['local']['processes']} / {res['ray']['processes']} processes) | "
                f"{res['local']['cpu_s']:.1f} | {res['ray']['cpu_s']:.1f} |")
    stages = sorted(res["local"]["stage_seconds"])
    rows.append("\n| stage | local s | ray s |\n|---|---:|---:|")
    rows += [f"| {s} | {res['local']['stage_seconds'][s]:.1f} | "
             f"{res['ray']['stage_seconds'].get(s, float('nan')):.1f} |" for s in stages]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench_executor.json"))
    ap.add_argument("--work", type=Path, default=Path("runs/bench_executor"))
    ap.add_argument("--n-images", type=int, default=40)
    ap.add_argument("--quick", action="store_true", help="8 images, 100 detector steps")
    ap.add_argument("--rounds", type=int, default=None,
                    help="rounds of the run (default: the demo's, 2; 1 before issue 19)")
    ap.add_argument("--ray-arg", action="append", default=[],
                    help="extra argument for the ray child, e.g. --ray-arg=--train=ray_train")
    ns = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from pseudocell.demo import DEMO_CONFIG

    cfg = DEMO_CONFIG
    n = ns.n_images
    if ns.quick:
        cfg, n = cfg.replace(detector_iters=100, pu_epochs=5), 8
    if ns.rounds is not None:
        cfg = cfg.replace(rounds=ns.rounds)
    res = executor_overhead(ns.work, cfg=cfg, n_images=n, ray_args=tuple(ns.ray_arg))
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(res, indent=1))
    sys.stdout.write(table(res) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
