"""The golden cases: the demo config on real crops, and how their outputs are digested.

Stage outputs are compared byte for byte against the record of the same platform (CPU
model, machine, torch's CPU kernels): floating-point reductions differ in their last bits
between CPU families, and one flipped bit changes every digest downstream. On a platform
without a record the run is compared with the recorded :func:`run_summary` instead
(counts and scores that such bits cannot move beyond the tolerances of the test).
"""
from __future__ import annotations

import platform
from pathlib import Path


def case_config(name: str):
    """``full``: the demo config (two rounds, default budgets). ``fast``: the demo config
    with small training budgets, so that both executors run it within the fast tier."""
    from pseudocell.demo import DEMO_CONFIG

    cfg = DEMO_CONFIG.replace(device="cpu", num_threads=1)
    if name == "full":
        return cfg
    return cfg.replace(detector_iters=40, detector_batch=4, detector_crop=64, pu_epochs=3,
                       pu_batch=128)


def platform_key() -> str:
    """The machine whose floating-point bits a record holds."""
    import torch

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor()
    return f"{platform.machine()}|{model}|{torch.backends.cpu.get_cpu_capability()}"


def run_case(run_dir: Path, cfg, crops, executor=None):
    """Run the loop on the crops (30 % of points kept, seed 0, the crops held out too);
    returns the layout and the final metrics."""
    import conftest
    from pseudocell.orchestrator.executors import LocalExecutor
    from pseudocell.orchestrator.run import prepare_run, run_loop

    layout = prepare_run(run_dir, cfg, conftest.crop_inputs(crops))
    metrics = run_loop(layout, cfg, executor or LocalExecutor())
    return layout, metrics


def digests_of(layout, cfg) -> dict[str, str]:
    """Every stage output's content sha256 and the final files'."""
    import hashlib

    import conftest

    out = conftest.output_digests(layout, cfg)
    for rel in ("final/detections.csv", "final/labels_table.csv", "final/model.pt"):
        out[rel] = hashlib.sha256((Path(layout.root) / rel).read_bytes()).hexdigest()
    return out


def run_digests(run_dir: Path, cfg, crops, executor=None) -> dict[str, str]:
    """:func:`run_case`, then :func:`digests_of`."""
    layout, _ = run_case(run_dir, cfg, crops, executor)
    return digests_of(layout, cfg)


def run_summary(metrics: dict) -> dict:
    """Per round: detections on the training images, labels by kind, held-out F1."""
    out = {}
    for r in metrics["rounds"]:
        out[str(r["round"])] = {k: r[k] for k in sorted(r)
                                if k in ("n_detections", "labels_pos", "labels_neg",
                                         "heldout@15/f1", "n_pseudo_pos", "n_pseudo_neg")}
    return out
