"""Executors run one stage function; the orchestrator owns ordering, manifests and resume."""
from __future__ import annotations

import logging
from typing import Protocol

import torch

from pseudocell.config import Config
from pseudocell.stages.base import ProgressFn, StageInputs, StageOutputs
from pseudocell.stages.loop import STAGE_FUNCTIONS, TRAINING_STAGES

__all__ = ["Executor", "LocalExecutor"]

logger = logging.getLogger(__name__)


class Executor(Protocol):
    """Runs a named stage. Implementations: :class:`LocalExecutor` (in-process, the
    reference); a Ray executor plugs in with the same method."""

    def run_stage(self, name: str, inp: StageInputs, cfg: Config,
                  progress: ProgressFn | None = None) -> StageOutputs: ...


class LocalExecutor:
    """Runs every stage in this process, on the device the config names.

    ``num_threads`` of the config sets torch's intra-op threads for the call and
    restores the previous value afterwards. ``progress`` receives the training stages'
    ``(done, total, value)`` reports.
    """

    def run_stage(self, name: str, inp: StageInputs, cfg: Config,
                  progress: ProgressFn | None = None) -> StageOutputs:
        fn = STAGE_FUNCTIONS[name]
        prev = torch.get_num_threads()
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        try:
            if name in TRAINING_STAGES and progress is not None:
                return fn(inp, cfg, progress=progress)
            return fn(inp, cfg)
        finally:
            torch.set_num_threads(prev)
