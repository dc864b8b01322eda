"""The golden cases: the demo config on real crops, and how their outputs are digested."""
from __future__ import annotations

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


def run_digests(run_dir: Path, cfg, crops, executor=None) -> dict[str, str]:
    """Run the loop on the crops (30 % of points kept, seed 0, the crops held out too)
    and return every stage output's content sha256 and the final files'."""
    import hashlib

    import conftest
    from pseudocell.orchestrator.executors import LocalExecutor
    from pseudocell.orchestrator.run import prepare_run, run_loop

    layout = prepare_run(run_dir, cfg, conftest.crop_inputs(crops))
    run_loop(layout, cfg, executor or LocalExecutor())
    out = conftest.output_digests(layout, cfg)
    for rel in ("final/detections.csv", "final/labels_table.csv", "final/model.pt"):
        out[rel] = hashlib.sha256((Path(layout.root) / rel).read_bytes()).hexdigest()
    return out
