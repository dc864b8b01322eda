"""Detector and PU training under Ray Train's ``TorchTrainer`` (DDP).

Every worker runs the same stage function with a :class:`~pseudocell.core.parallel.
DataParallel` setting (rank, world size, DDP wrapper, device); the main worker writes the
stage outputs and a small result file that the driver reads back and deletes. With one
worker the result is bit for bit that of the in-process trainer.
"""
from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict

from pseudocell.config import Config
from pseudocell.stages.base import TRAINING, StageInputs, StageOutputs, StageSpec
from pseudocell.storage import fs
from pseudocell.storage.layout import join

__all__ = ["train_with_ray_train", "RESULT_FILE"]

logger = logging.getLogger(__name__)

#: Written by the main worker into the stage folder, removed by the driver.
RESULT_FILE = "_train_result.json"


def _worker_loop(config: dict) -> None:
    import ray.train
    import ray.train.torch
    import torch
    from torch.nn.parallel import DistributedDataParallel

    from pseudocell.core.parallel import DataParallel

    spec, inp = config["spec"], StageInputs(**config["inp"])
    cfg = Config.from_dict(config["cfg"])
    ctx = ray.train.get_context()
    world, rank = ctx.get_world_size(), ctx.get_world_rank()
    device = ray.train.torch.get_device()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)

    def wrap(model: torch.nn.Module) -> torch.nn.Module:
        if world == 1:
            return model  # DDP over one process only adds a no-op all-reduce
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    par = DataParallel(rank=rank, world_size=world, wrap=wrap, device=str(device))
    out = spec.fn(inp, cfg, parallel=par)
    if par.is_main:
        fs.write_bytes(join(inp.out_dir, RESULT_FILE),
                       json.dumps({"uris": out.uris, "metrics": out.metrics}).encode())


def train_with_ray_train(spec: StageSpec, inp: StageInputs, cfg: Config, *, num_workers: int = 1,
                         use_gpu: bool = False, resources_per_worker: dict | None = None,
                         max_failures: int = 1) -> StageOutputs:
    """Run training stage ``spec`` with ``num_workers`` Ray Train workers.

    ``resources_per_worker`` defaults to one CPU (or one GPU with ``use_gpu``); on a
    2-CPU machine inside Tune use ``{"CPU": 0.5}`` (design.md).
    """
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if spec.kind != TRAINING:
        raise ValueError(f"stage {spec.name!r} is a {spec.kind} stage, not a training stage")
    with tempfile.TemporaryDirectory(prefix="pseudocell-train-") as storage:
        trainer = TorchTrainer(
            _worker_loop,
            train_loop_config={"spec": spec, "inp": asdict(inp), "cfg": cfg.to_dict()},
            scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                         resources_per_worker=resources_per_worker),
            torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
            run_config=RunConfig(storage_path=storage, name=f"{spec.name}-r{inp.round}",
                                 failure_config=FailureConfig(max_failures=max_failures)),
        )
        trainer.fit()
    res_uri = join(inp.out_dir, RESULT_FILE)
    res = json.loads(fs.read_bytes(res_uri))
    fs.remove(res_uri)
    return StageOutputs(res["uris"], res["metrics"])
