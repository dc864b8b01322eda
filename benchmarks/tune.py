"""Default config vs the config a Tune sweep picks, judged on held-out test images.

    .venv/bin/python benchmarks/tune.py --out runs/bench_tune --samples 6
    .venv/bin/python benchmarks/tune.py --quick

Bright-field split (no image in two roles): images 001-030 train (10 % of their points
kept, seed 0), 031-040 validate (full ground truth: the sweep's objective), 041-050 test
(used only after the sweep, for both configs). Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from pseudocell.config import Config, load_config

__all__ = ["main", "run_benchmark"]

logger = logging.getLogger(__name__)


def run_benchmark(out: Path, *, samples: int, space: str, quick: bool,
                  reuse_sweep: bool = False) -> dict:
    """Run the sweep (or, with ``reuse_sweep``, read a finished one from ``out/sweep``),
    then the default and the tuned config on train → test."""
    from pseudocell.data.fetch import locate_brightfield
    from pseudocell.data.points import hide_points
    from pseudocell.demo import DEMO_CONFIG, load_brightfield
    from pseudocell.orchestrator.executors import LocalExecutor
    from pseudocell.validation import RunInputs, prepare_run, run_loop
    from pseudocell.tune_spaces.sweep import (OBJECTIVE, SweepOptions, base_point,
                                               prepare_sweep, run_sweep)
    from pseudocell.tune_spaces import resolve

    folder = locate_brightfield()
    splits = ((range(1, 11), range(31, 36), range(41, 46)) if quick else
              (range(1, 31), range(31, 41), range(41, 51)))
    base: Config = DEMO_CONFIG.replace(num_threads=2)
    if quick:
        base = base.replace(rounds=1, detector_iters=100, pu_epochs=5)
    (tr_img, tr_gt), (va_img, va_gt), (te_img, te_gt) = (load_brightfield(folder, r)
                                                         for r in splits)
    points = hide_points(tr_gt, 0.1, seed=base.seed)
    options = SweepOptions(space=resolve(space), num_samples=samples, trial_cpus=2,
                           max_concurrent=1)
    if reuse_sweep:
        sweep = out / "sweep"
        result = json.loads((sweep / "sweep_result.json").read_text())
        tune_s = result["seconds"]
    else:
        sweep = prepare_sweep(out / "sweep", base,
                              RunInputs(tr_img, points, None, va_img, va_gt), options,
                              test_images=te_img, force=True)
        t0 = time.perf_counter()
        result = run_sweep(sweep)
        tune_s = time.perf_counter() - t0
    tuned = load_config(sweep / "best.toml").replace(num_threads=2)
    # the default config's validation F1, to compare with the best: its own trial when
    # the sweep evaluated it (base point first), else one more run
    default_val = base_trial_f1(result["trials"], base_point(base, options.space))
    if default_val is None:
        layout = prepare_run(out / "default_on_validation", base,
                             RunInputs(tr_img, points, None, va_img, va_gt), force=True)
        default_val = run_loop(layout, base, LocalExecutor())["rounds"][-1]["heldout@15/f1"]
    finals = {}
    for name, cfg in (("default", base), ("tuned", tuned)):
        if name == "tuned" and cfg == base:  # the sweep kept the default: same run
            finals[name] = {**finals["default"], "same_as_default": True}
            continue
        t0 = time.perf_counter()
        layout = prepare_run(out / name, cfg, RunInputs(tr_img, points, tr_gt, te_img, te_gt),
                             force=True)
        m = run_loop(layout, cfg, LocalExecutor())
        last = m["rounds"][-1]
        finals[name] = {"config": {k: getattr(cfg, k) for k in options.space},
                        "test_f1": last["heldout@15/f1"],
                        "test_precision": last["heldout@15/precision"],
                        "test_recall": last["heldout@15/recall"],
                        "train_f1": last["train@15/f1"], "seconds": time.perf_counter() - t0}
    return {"split": {"train": [splits[0].start, splits[0].stop - 1],
                      "validation": [splits[1].start, splits[1].stop - 1],
                      "test": [splits[2].start, splits[2].stop - 1], "keep": 0.1},
            "space": options.space, "samples": samples,
            "trials": result["trials"], "best_trial": result["best"],
            "best_validation_f1": result["best"][OBJECTIVE] if result["best"] else None,
            "default_validation_f1": default_val,
            "tune_seconds": tune_s, "final": finals, "base_config": base.to_dict(),
            "quick": quick}


def base_trial_f1(trials: list[dict], point: dict | None) -> float | None:
    """Validation F1 of the finished trial that ran exactly ``point`` (the base config's
    values), or None."""
    from pseudocell.tune_spaces.sweep import OBJECTIVE

    for t in trials:
        if point is not None and t["status"] == "finished" and \
                all(t.get(k) == v for k, v in point.items()):
            return t[OBJECTIVE]
    return None


def table(res: dict) -> str:
    n = len(res["trials"])
    stopped = sum(r["status"] == "stopped early" for r in res["trials"])
    lines = [f"sweep: {n} trials ({stopped} stopped early by ASHA) in "
             f"{res['tune_seconds'] / 60:.1f} min; validation F1: best trial "
             f"{res['best_validation_f1']:.3f}, default config "
             f"{res['default_validation_f1']:.3f}", "",
             "| config | " + " | ".join(res["space"]) + " | test P | test R | test F1 | run min |",
             "|---|" + "---:|" * (len(res["space"]) + 4)]
    for name, f in res["final"].items():
        vals = " | ".join(f"{f['config'][k]:.4g}" for k in res["space"])
        label = f"{name} (= default)" if f.get("same_as_default") else name
        lines.append(f"| {label} | {vals} | {f['test_precision']:.3f} | {f['test_recall']:.3f} "
                     f"| {f['test_f1']:.3f} | {f['seconds'] / 60:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench_tune"))
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--space", default="default")
    ap.add_argument("--quick", action="store_true", help="10/5/5 images, 1 round, small "
                                                         "budgets (minutes)")
    ap.add_argument("--reuse-sweep", action="store_true", help="evaluate the finished sweep "
                                                               "in OUT/sweep again")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    res = run_benchmark(args.out, samples=args.samples, space=args.space, quick=args.quick,
                        reuse_sweep=args.reuse_sweep)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tune_bench.json").write_text(json.dumps(res, indent=1, default=str))
    print(table(res))
    print(f"wrote {args.out / 'tune_bench.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
