"""Executors run one stage; the engine owns ordering, manifests and resume."""
from __future__ import annotations

import logging
from typing import Protocol

import torch

from pseudocell.config import Config
from pseudocell.orchestrator.faults import kill_driver_if_asked
from pseudocell.stages.base import ProgressFn, StageInputs, StageOutputs, StageSpec

__all__ = ["Executor", "LocalExecutor"]

logger = logging.getLogger(__name__)


class Executor(Protocol):
    """Runs one stage. Implementations: :class:`LocalExecutor` (in-process, the
    reference) and :class:`~pseudocell.orchestrator.ray_executor.RayExecutor`."""

    def run_stage(self, spec: StageSpec, inp: StageInputs, cfg: Config,
                  progress: ProgressFn | None = None) -> StageOutputs: ...


class LocalExecutor:
    """Runs every stage in this process, on the device the config names.

    ``num_threads`` of the config sets torch's intra-op threads for the call and
    restores the previous value afterwards. ``progress`` receives the training stages'
    ``(done, total, value)`` reports.
    """

    def run_stage(self, spec: StageSpec, inp: StageInputs, cfg: Config,
                  progress: ProgressFn | None = None) -> StageOutputs:
        prev = torch.get_num_threads()
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        try:
            out = spec.call(inp, cfg, progress)
        finally:
            torch.set_num_threads(prev)
        kill_driver_if_asked(inp.round, spec.name)  # fault injection (tests); off by default
        return out
