"""The actor that runs stages on Ray, and one named class per actor kind.

A stage spec names the actor kind that runs it (``StageSpec.actor``); :func:`actor_class`
gives that kind's class, a :class:`StageActor` subclass named after it (so ``ray status``
and the logs show ``DetectorTrainer``, ``Predictor`` ...). Each receives a stage spec,
store URIs and small metadata, calls the stage function, and returns URIs and metrics.

The classes import no Ray: :class:`pseudocell.orchestrator.ray_executor.RayExecutor`
makes them actors with ``ray.remote(cls).options(...)``.
"""
from __future__ import annotations

import functools
import logging
import os
import signal

import torch

from pseudocell.config import Config
from pseudocell.stages.base import StageInputs, StageOutputs, StageSpec
from pseudocell.storage import fs
from pseudocell.storage.layout import join

__all__ = ["StageActor", "actor_class"]

logger = logging.getLogger(__name__)


class StageActor:
    """Runs the stages whose spec names this actor's kind (its class name).

    Parameters
    ----------
    threads : int or None
        torch intra-op threads in this worker (Ray sets 1 thread per reserved CPU by
        default; the config's ``num_threads`` wins when set).
    device : str or None
        torch device override (e.g. ``"cuda"`` on a GPU actor); None keeps the config's.
    """

    def __init__(self, threads: int | None = None, device: str | None = None) -> None:
        self._threads = threads
        self._device = device
        self._progress: tuple[int, int, float] | None = None

    def _check(self, spec: StageSpec) -> None:
        if spec.actor != type(self).__name__:
            raise ValueError(f"{type(self).__name__} does not run stage {spec.name!r}; its "
                             f"spec names actor kind {spec.actor!r}")

    def _setup(self, cfg: Config) -> Config:
        n = cfg.num_threads or self._threads
        if n:
            torch.set_num_threads(int(n))
        return cfg.replace(device=self._device) if self._device else cfg

    def run(self, spec: StageSpec, inp: StageInputs, cfg: Config,
            die: bool = False) -> StageOutputs:
        """Run a whole stage. ``die`` (fault injection for tests) writes a stray file into
        the stage folder and kills this worker before it can return."""
        self._check(spec)
        cfg = self._setup(cfg)
        self._progress = None
        out = spec.call(inp, cfg, self._record)
        if die:
            _die(inp.out_dir)
        return out

    def _record(self, done: int, total: int, value: float) -> None:
        self._progress = (done, total, value)

    def progress(self) -> tuple[int, int, float] | None:
        """``(done, total, value)`` of the training stage running now (the driver polls
        it; actors that train run with ``max_concurrency=2``)."""
        return self._progress

    # -- the pieces of a sharded stage (an ActorPool of one kind shares them) -----------
    def plan(self, spec: StageSpec, inp: StageInputs, cfg: Config,
             n_shards: int) -> list[dict]:
        self._check(spec)
        return spec.shards.plan(inp, self._setup(cfg), n_shards)

    def shard(self, spec: StageSpec, inp: StageInputs, cfg: Config, item: dict,
              die: bool = False) -> dict:
        self._check(spec)
        res = spec.shards.shard(inp, self._setup(cfg), item)
        if die:
            _die(inp.out_dir)
        return res

    def merge(self, spec: StageSpec, inp: StageInputs, cfg: Config,
              results: list[dict]) -> StageOutputs:
        self._check(spec)
        return spec.shards.merge(inp, self._setup(cfg), results)

    def pid(self) -> int:
        return os.getpid()

    def node_id(self) -> str:
        """Id of the Ray node this actor lives on (Ray imported only when asked)."""
        import ray

        return ray.get_runtime_context().get_node_id()


def _die(out_dir: str) -> None:
    fs.write_bytes(join(out_dir, "partial-garbage.bin"), b"\0" * 1024)
    os.kill(os.getpid(), signal.SIGKILL)


@functools.cache
def actor_class(kind: str) -> type[StageActor]:
    """The :class:`StageActor` subclass of actor kind ``kind`` (one class per kind)."""
    if not kind.isidentifier():
        raise ValueError(f"actor kind {kind!r} must be a Python identifier")
    # not a module attribute: Ray (cloudpickle) sends the class by value to the workers
    return type(kind, (StageActor,), {"__module__": __name__,
                                      "__doc__": f"Runs the stages of actor kind {kind!r}."})
