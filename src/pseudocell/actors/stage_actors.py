"""One actor class per stage kind. Each receives store URIs and small metadata, calls the
stage function of :mod:`pseudocell.stages.loop`, and returns URIs and metrics.

The classes import no Ray: :class:`pseudocell.orchestrator.ray_executor.RayExecutor`
makes them actors with ``ray.remote(cls).options(...)``.
"""
from __future__ import annotations

import logging
import os
import signal

import torch

from pseudocell.config import Config
from pseudocell.stages.base import StageInputs, StageOutputs
from pseudocell.stages.loop import SHARDED_STAGES, STAGE_FUNCTIONS, TRAINING_STAGES
from pseudocell.storage import fs
from pseudocell.storage.layout import join

__all__ = ["StageActor", "DetectorTrainer", "Predictor", "PUFeatureLearner", "PRanker",
           "LabelSelector", "ACTOR_OF_STAGE"]

logger = logging.getLogger(__name__)


class StageActor:
    """Base class: runs the stages named in ``STAGES``.

    Parameters
    ----------
    threads : int or None
        torch intra-op threads in this worker (Ray sets 1 thread per reserved CPU by
        default; the config's ``num_threads`` wins when set).
    device : str or None
        torch device override (e.g. ``"cuda"`` on a GPU actor); None keeps the config's.
    """

    STAGES: tuple[str, ...] = ()
    #: whether the executor gives this actor a GPU when the cluster has them
    USES_GPU = True

    def __init__(self, threads: int | None = None, device: str | None = None) -> None:
        self._threads = threads
        self._device = device
        self._progress: tuple[int, int, float] | None = None

    def _check(self, name: str) -> None:
        if name not in self.STAGES:
            raise ValueError(f"{type(self).__name__} does not run stage {name!r}; it runs "
                             f"{', '.join(self.STAGES)}")

    def _setup(self, cfg: Config) -> Config:
        n = cfg.num_threads or self._threads
        if n:
            torch.set_num_threads(int(n))
        return cfg.replace(device=self._device) if self._device else cfg

    def run(self, name: str, inp: StageInputs, cfg: Config, die: bool = False) -> StageOutputs:
        """Run a whole stage. ``die`` (fault injection for tests) writes a stray file into
        the stage folder and kills this worker before it can return."""
        self._check(name)
        cfg = self._setup(cfg)
        self._progress = None
        if name in TRAINING_STAGES:
            out = STAGE_FUNCTIONS[name](inp, cfg, progress=self._record)
        else:
            out = STAGE_FUNCTIONS[name](inp, cfg)
        if die:
            _die(inp.out_dir)
        return out

    def _record(self, done: int, total: int, value: float) -> None:
        self._progress = (done, total, value)

    def progress(self) -> tuple[int, int, float] | None:
        """``(done, total, value)`` of the training stage running now (the driver polls
        it; actors that train run with ``max_concurrency=2``)."""
        return self._progress

    def pid(self) -> int:
        return os.getpid()

    def node_id(self) -> str:
        """Id of the Ray node this actor lives on (Ray imported only when asked)."""
        import ray

        return ray.get_runtime_context().get_node_id()


def _die(out_dir: str) -> None:
    fs.write_bytes(join(out_dir, "partial-garbage.bin"), b"\0" * 1024)
    os.kill(os.getpid(), signal.SIGKILL)


class DetectorTrainer(StageActor):
    """Trains the heatmap detector in-process (the Ray Train path is in
    :mod:`pseudocell.actors.train`)."""

    STAGES = ("train_detector",)


class Predictor(StageActor):
    """Predicts heatmaps and crops patches; runs plan/shard/merge pieces so an
    ``ActorPool`` of predictors shares one stage."""

    STAGES = ("predict", "extract_patches")

    def plan(self, name: str, inp: StageInputs, cfg: Config, n_shards: int) -> list[dict]:
        self._check(name)
        return SHARDED_STAGES[name].plan(inp, self._setup(cfg), n_shards)

    def shard(self, name: str, inp: StageInputs, cfg: Config, item: dict,
              die: bool = False) -> dict:
        self._check(name)
        res = SHARDED_STAGES[name].shard(inp, self._setup(cfg), item)
        if die:
            _die(inp.out_dir)
        return res

    def merge(self, name: str, inp: StageInputs, cfg: Config,
              results: list[dict]) -> StageOutputs:
        self._check(name)
        return SHARDED_STAGES[name].merge(inp, self._setup(cfg), results)


class PUFeatureLearner(StageActor):
    """Trains the nnPU CNN and writes penultimate-layer features."""

    STAGES = ("train_pu",)


class PRanker(StageActor):
    """Fits the P-classification rankers and scores the unlabeled patches."""

    STAGES = ("rank",)
    USES_GPU = False


class LabelSelector(StageActor):
    """Selects pseudo-labels, updates the labels table, evaluates a round."""

    STAGES = ("select", "update_labels", "evaluate")
    USES_GPU = False


#: stage name → actor class that runs it.
ACTOR_OF_STAGE = {s: cls for cls in (DetectorTrainer, Predictor, PUFeatureLearner, PRanker,
                                     LabelSelector) for s in cls.STAGES}
