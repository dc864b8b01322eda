"""A Tune sweep with and without trials sharing work: wall time and identical results.

    .venv/bin/python benchmarks/tune_share.py --quick      # or --tiny on a loaded machine
    .venv/bin/python benchmarks/tune_share.py --out runs/bench_tune_share --samples 6

The same sweep (bright-field split of ``benchmarks/tune.py``, the same sampled trials:
same search seed) runs twice on the same inputs: ``share=False`` (every trial computes
every stage) and ``share=True`` (trials reuse the stages whose inputs and read settings
are equal: round 0 up to the PU learner when the selection settings are searched).
Every trial's per-round validation P/R/F1 and every stage output checksum must be the
same in both; prints a table and writes JSON. The wall time is Tune's (``run_sweep``,
Ray's start excluded); "compute" sums the seconds of the stages each sweep computed,
which is less sensitive to other load on the machine.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

__all__ = ["main", "run_benchmark", "trial_rounds", "compare"]

logger = logging.getLogger(__name__)


#: The sizes: (training images, validation images, config changes).
SIZES = {
    "full": (range(1, 31), range(31, 41), {}),
    "quick": (range(1, 11), range(31, 36), {"rounds": 1, "detector_iters": 100,
                                            "pu_epochs": 5}),
    # for a loaded 2-core machine: smaller crops and batches, a few images
    "tiny": (range(1, 5), range(31, 34), {"rounds": 1, "detector_iters": 60,
                                          "detector_batch": 4, "detector_crop": 64,
                                          "pu_epochs": 3}),
}


def _inputs(size: str):
    from pseudocell.data.fetch import locate_brightfield
    from pseudocell.data.points import hide_points
    from pseudocell.demo import DEMO_CONFIG, load_brightfield
    from pseudocell.validation import RunInputs

    folder = locate_brightfield()
    *splits, changes = SIZES[size]
    base = DEMO_CONFIG.replace(num_threads=2, **changes)
    (tr_img, tr_gt), (va_img, va_gt) = (load_brightfield(folder, r) for r in splits)
    points = hide_points(tr_gt, 0.1, seed=base.seed)
    split = {"train": [splits[0].start, splits[0].stop - 1],
             "validation": [splits[1].start, splits[1].stop - 1], "keep": 0.1}
    return base, RunInputs(tr_img, points, None, va_img, va_gt), split


def trial_rounds(sweep: Path, trial_id: str, radius: float = 15.0) -> dict:
    """One trial's per-round validation P/R/F1 at ``radius`` (from its evaluate
    manifests) and the checksum of every stage output it holds (``round/stage/output``)."""
    from pseudocell.storage.manifest import read_manifest

    tdir = sweep / "trials" / trial_id
    rounds, digests, shared = {}, {}, []
    n_computed, stage_seconds = 0, 0.0
    for rdir in sorted(tdir.glob("round_*")):
        rnd = int(rdir.name.split("_")[1])
        for mpath in sorted(rdir.glob("*/_manifest.json")):
            m = read_manifest(str(mpath))
            stage = mpath.parent.name
            digests.update({f"{rnd}/{stage}/{k}": r["sha256"] for k, r in m["outputs"].items()})
            if "shared_from" in m:
                shared.append(f"{rnd}/{stage}")
            else:
                n_computed += 1
                stage_seconds += m.get("seconds", 0.0)
            held = (m.get("metrics") or {}).get(f"heldout@{radius:g}")
            if stage == "evaluate" and held is not None:
                rounds[rnd] = {k: held[k] for k in ("precision", "recall", "f1")}
    return {"rounds": rounds, "digests": digests, "shared_stages": shared,
            "n_computed": n_computed, "stage_seconds": stage_seconds}


def _params_key(row: dict, space: dict) -> tuple:
    return tuple(round(float(row[k]), 12) for k in space)


def compare(off: dict, on: dict) -> dict:
    """Per trial (matched by its sampled values): whether the rounds both sweeps ran
    have equal P/R/F1, and the stage outputs both hold equal checksums."""
    out = {"identical": True, "trials": []}
    for key, a in off.items():
        b = on.get(key)
        if b is None:
            out["identical"] = False
            out["trials"].append({"params": key, "missing": True})
            continue
        common = sorted(set(a["rounds"]) & set(b["rounds"]))
        same_f1 = all(a["rounds"][r] == b["rounds"][r] for r in common)
        both = set(a["digests"]) & set(b["digests"])
        diff = sorted(k for k in both if a["digests"][k] != b["digests"][k])
        out["trials"].append({"params": key, "rounds_compared": common,
                              "same_metrics": same_f1, "outputs_compared": len(both),
                              "outputs_differing": diff})
        out["identical"] &= same_f1 and not diff and bool(common)
    return out


def run_benchmark(out: Path, *, samples: int, space: str, size: str = "full",
                  scheduler: str = "asha", reuse: bool = False) -> dict:
    """Run both sweeps (or, with ``reuse``, read the finished ones under ``out``) and
    compare them."""
    from pseudocell.tune_spaces import resolve
    from pseudocell.tune_spaces.sweep import (SweepOptions, first_rung, prepare_sweep,
                                               read_sweep, run_sweep)

    base, inputs, split = _inputs(size)
    legs = {}
    for name, share in (("off", False), ("on", True)):
        sweep = out / f"sweep_share_{name}"
        if reuse:
            base, options = read_sweep(sweep)
            result = json.loads((sweep / "sweep_result.json").read_text())
        else:
            options = SweepOptions(space=resolve(space), num_samples=samples, trial_cpus=2,
                                   max_concurrent=1, scheduler=scheduler, share=share)
            sweep = prepare_sweep(sweep, base, inputs, options, force=True)
            result = run_sweep(sweep)
        trials = {}
        for row in result["trials"]:
            trials[_params_key(row, options.space)] = {
                "trial_id": row["trial_id"], "status": row["status"],
                "params": {k: row[k] for k in options.space},
                **trial_rounds(sweep, row["trial_id"], base.radius)}
        legs[name] = {"seconds": result["seconds"],
                      "first_rung_iteration": first_rung(base, options)
                      if options.scheduler == "asha" else None,
                      "stopped_early": sum(r["status"] == "stopped early"
                                           for r in result["trials"]),
                      "stages_computed": sum(t["n_computed"] for t in trials.values()),
                      "stage_seconds": sum(t["stage_seconds"] for t in trials.values()),
                      "trials": trials}
    check = compare(legs["off"]["trials"], legs["on"]["trials"])
    for leg in legs.values():  # checksums were compared; keep the JSON readable
        for t in leg["trials"].values():
            t["n_outputs"] = len(t.pop("digests"))
        leg["trials"] = list(leg["trials"].values())
    return {"split": split, "space": options.space, "samples": len(legs["on"]["trials"]),
            "size": size, "scheduler": options.scheduler, "base_config": base.to_dict(),
            "seconds_off": legs["off"]["seconds"], "seconds_on": legs["on"]["seconds"],
            "speedup": legs["off"]["seconds"] / legs["on"]["seconds"],
            "identical": check["identical"], "comparison": check, "legs": legs}


def table(res: dict) -> str:
    lines = [f"Tune sweep of {res['samples']} trials ({res['scheduler']}, space "
             f"{', '.join(res['space'])}; size {res['size']}):", "",
             "| sharing | wall min | stages computed | stages shared | compute min (sum of "
             "stages) | trials stopped early | first ASHA rung |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name in ("off", "on"):
        leg = res["legs"][name]
        n_shared = sum(len(t["shared_stages"]) for t in leg["trials"])
        rung = leg["first_rung_iteration"]
        lines.append(f"| {name} | {leg['seconds'] / 60:.1f} | {leg['stages_computed']} | "
                     f"{n_shared} | {leg['stage_seconds'] / 60:.1f} | {leg['stopped_early']} "
                     f"| {'-' if rung is None else f'round {rung - 1}'} |")
    lines += ["", "| trial | " + " | ".join(res["space"]) + " | round | F1 off | F1 on |",
              "|---|" + "---:|" * (len(res["space"]) + 3)]
    on = {tuple(sorted(t["params"].items())): t for t in res["legs"]["on"]["trials"]}
    for t in res["legs"]["off"]["trials"]:
        u = on.get(tuple(sorted(t["params"].items())), {"rounds": {}})
        for rnd, m in sorted(t["rounds"].items()):
            f_on = u["rounds"].get(rnd, {}).get("f1")
            vals = " | ".join(f"{t['params'][k]:.4g}" for k in res["space"])
            lines.append(f"| {t['trial_id']} | {vals} | {rnd} | {m['f1']:.4f} | "
                         f"{'-' if f_on is None else f'{f_on:.4f}'} |")
    lines += ["", f"wall time {res['seconds_off'] / 60:.1f} -> {res['seconds_on'] / 60:.1f} "
              f"min ({res['speedup']:.2f}x); every trial's per-round P/R/F1 and stage "
              f"outputs identical: {res['identical']}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench_tune_share"))
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--space", default="default")
    ap.add_argument("--scheduler", default="asha", choices=("asha", "fifo"))
    ap.add_argument("--quick", action="store_true", help="10/5 images, 1 round, small "
                                                         "budgets")
    ap.add_argument("--tiny", action="store_true", help="4/3 images, 1 round, small crops "
                                                        "(a loaded 2-core machine)")
    ap.add_argument("--reuse", action="store_true", help="compare the finished sweeps in "
                                                         "OUT again")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    size = "tiny" if args.tiny else "quick" if args.quick else "full"
    res = run_benchmark(args.out, samples=args.samples, space=args.space, size=size,
                        scheduler=args.scheduler, reuse=args.reuse)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tune_share_bench.json").write_text(json.dumps(res, indent=1, default=str))
    print(table(res))
    print(f"wrote {args.out / 'tune_share_bench.json'}")
    return 0 if res["identical"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
