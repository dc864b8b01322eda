"""Run the loop's stages on a Ray cluster: one actor per stage kind, an ``ActorPool`` of
predictors for the data-parallel stages, Ray Train for training when asked.

Actors receive store URIs and small metadata and return URIs and metrics; pixels never
travel through Ray. A stage whose actor dies is re-run from its inputs after its folder
(partial outputs) is deleted; the orchestrator's manifests make the driver itself
restartable (``pseudocell resume``).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from pseudocell.actors.stage_actors import ACTOR_OF_STAGE, Predictor, StageActor
from pseudocell.config import Config
from pseudocell.errors import InvalidInputError, StageError
from pseudocell.orchestrator.faults import fault_at, kill_driver_if_asked
from pseudocell.stages.base import ProgressFn, StageInputs, StageOutputs
from pseudocell.stages.loop import SHARDED_STAGES, TRAINING_STAGES
from pseudocell.storage import fs
from pseudocell.storage.manifest import remove_tree

__all__ = ["RayOptions", "RayExecutor", "init_ray", "LOCAL_RAY_INIT"]

logger = logging.getLogger(__name__)

#: ``ray.init`` settings of a local cluster (design.md: small nodes, no dashboard).
LOCAL_RAY_INIT = {"include_dashboard": False, "object_store_memory": 256 * 2**20,
                  "log_to_driver": False}

TRAIN_MODES = ("auto", "ray_train", "actor")


@dataclass(frozen=True)
class RayOptions:
    """How the Ray executor uses the cluster.

    Attributes
    ----------
    address : str or None
        None starts a local cluster; ``"auto"`` attaches to the cluster of this node;
        ``"ray://host:10001"`` attaches through Ray Client.
    num_cpus : int or None
        CPUs of a local cluster (None: all of this machine's).
    pool_size : int or None
        Predictor actors of the data-parallel stages (None: one per free CPU, or one per
        GPU when ``use_gpu``).
    shards_per_actor : int
        Work items per pool actor (more items balance uneven images better).
    train : {"auto", "ray_train", "actor"}
        ``ray_train`` trains under ``TorchTrainer`` (DDP); ``actor`` trains inside one
        actor with the in-process trainer; ``auto`` uses Ray Train only when it can help
        (``train_workers > 1``), since one DDP worker costs a ``fit()`` start-up of tens
        of seconds and gives the same result as one actor.
    train_workers : int
        Ray Train workers (data-parallel replicas).
    train_resources : dict or None
        ``resources_per_worker`` of Ray Train (default one CPU, or one GPU).
    use_gpu : bool or None
        Request GPUs for training and prediction; None: when the cluster has any.
    max_attempts : int
        Attempts of a stage whose actor dies.
    warm_up : bool
        Start every actor at the first stage (their imports overlap with it) instead of
        at each kind's first use; off when a driver runs only a stage or two.
    actor_resources : dict
        Custom Ray resources per actor class, e.g. ``{"DetectorTrainer": {"gpu_node":
        0.5}, "Predictor": {"cpu_node": 0.5}}``: the actors go only to nodes started
        with those resources (``ray start --resources '{"gpu_node": 1}'``).
    env_vars : dict
        Environment variables set in every actor (Ray ``runtime_env``), for what the
        nodes lack, e.g. ``AWS_ENDPOINT_URL_S3`` of a MinIO store. When this executor
        starts or attaches Ray itself they are the job's, so Ray Train's workers get
        them too.
    """

    address: str | None = None
    num_cpus: int | None = None
    pool_size: int | None = None
    shards_per_actor: int = 2
    train: str = "auto"
    train_workers: int = 1
    train_resources: dict | None = None
    use_gpu: bool | None = None
    max_attempts: int = 3
    warm_up: bool = True
    init_kwargs: dict = field(default_factory=dict)
    actor_resources: dict = field(default_factory=dict)
    env_vars: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = sorted(repr(k) for k, v in self.env_vars.items()
                     if not (isinstance(k, str) and k and isinstance(v, str)))
        if bad:
            raise InvalidInputError(f"env_vars: {', '.join(bad)} must map a name to a "
                                    "string value")
        kinds = {c.__name__ for c in ACTOR_OF_STAGE.values()}
        bad = sorted(set(self.actor_resources) - kinds)
        if bad:
            raise InvalidInputError(f"actor_resources: {bad} are not actor classes; use "
                                    f"{sorted(kinds)}")
        if self.train not in TRAIN_MODES:
            raise InvalidInputError(f"train={self.train!r} is not one of {TRAIN_MODES}")
        for name in ("shards_per_actor", "train_workers", "max_attempts"):
            if int(getattr(self, name)) < 1:
                raise InvalidInputError(f"{name}={getattr(self, name)!r} must be >= 1")
        if self.pool_size is not None and self.pool_size < 1:
            raise InvalidInputError(f"pool_size={self.pool_size!r} must be >= 1 or None")


# botocore's errors when a node has no credentials or cannot reach the endpoint
_STORE_ACCESS_ERRORS = {"NoCredentialsError", "EndpointConnectionError",
                        "PartialCredentialsError"}
_STORE_ACCESS_HINT = ("; an actor could not reach the object store: give the Ray nodes "
                      "the credentials and endpoint (environment or instance role), or "
                      "forward them from this shell with --ray-env NAME")


def stage_error(cause: BaseException) -> StageError:
    """The error a stage's exception in an actor becomes; store-access errors say how to
    give the actors access."""
    hint = _STORE_ACCESS_HINT if type(cause).__name__ in _STORE_ACCESS_ERRORS else ""
    return StageError(f"{type(cause).__name__}: {cause}{hint}")


def init_ray(address: str | None = None, num_cpus: int | None = None, **kwargs: Any) -> bool:
    """Attach to or start Ray unless already initialised. Returns True when this call
    started (or connected) Ray, i.e. when the caller should shut it down."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None:
        ray.init(num_cpus=num_cpus or os.cpu_count(), **{**LOCAL_RAY_INIT, **kwargs})
    else:
        ray.init(address=address, log_to_driver=False, **kwargs)
    logger.info("ray resources: %s", ray.cluster_resources())
    return True


class RayExecutor:
    """Executor running every stage in Ray actors (see module docstring).

    Use as a context manager, or call :meth:`close`, to release the actors (and Ray, if
    this executor started it).
    """

    def __init__(self, options: RayOptions | None = None) -> None:
        import ray

        self.options = options or RayOptions()
        kwargs = dict(self.options.init_kwargs)
        if self.options.env_vars:  # added to a runtime_env given in init_kwargs
            rt = dict(kwargs.get("runtime_env") or {})
            rt["env_vars"] = {**rt.get("env_vars", {}), **self.options.env_vars}
            kwargs["runtime_env"] = rt
        self._owns_ray = init_ray(self.options.address, self.options.num_cpus, **kwargs)
        res = ray.cluster_resources()
        self._gpus = int(res.get("GPU", 0))
        self._cpus = max(1, int(res.get("CPU", 1)))
        self.use_gpu = self._gpus > 0 if self.options.use_gpu is None else self.options.use_gpu
        if self.use_gpu and self._gpus == 0:
            raise InvalidInputError("use_gpu=True but the Ray cluster has no GPU; drop "
                                    "--use-gpu or attach to a cluster with GPU nodes")
        self._singletons: dict[type, Any] = {}
        self._pool: list[Any] = []

    # -- actors -------------------------------------------------------------------------
    def _threads(self) -> int:
        return max(1, min(os.cpu_count() or 1, self._cpus))

    def _actor_options(self, cls: type) -> dict:
        """Per-actor options: its custom resources and the forwarded environment (per
        actor too, since Ray may have been initialised by someone else)."""
        res = self.options.actor_resources.get(cls.__name__)
        opts = {"resources": dict(res)} if res else {}
        if self.options.env_vars:
            opts["runtime_env"] = {"env_vars": dict(self.options.env_vars)}
        return opts

    def _singleton(self, cls: type[StageActor]) -> Any:
        """Coordinating actors reserve no CPU (design.md: they must not starve Ray
        Train's workers); they use the node's cores through torch threads."""
        import ray

        if cls not in self._singletons:
            gpu = self.use_gpu and cls.USES_GPU
            # a second concurrent call lets the driver poll progress() during a stage
            opts = {"num_cpus": 0, "num_gpus": 1 if gpu else 0, "max_restarts": 2,
                    "max_concurrency": 2, **self._actor_options(cls)}
            self._singletons[cls] = ray.remote(cls).options(**opts).remote(
                threads=self._threads(), device="cuda" if gpu else None)
        return self._singletons[cls]

    def _pool_actors(self, cfg: Config) -> list[Any]:
        """Predictor actors: one per GPU, or one per ``num_threads`` CPUs (each reserving
        the CPUs its torch threads use), unless ``pool_size`` says otherwise."""
        import ray

        if not self._pool:
            threads = min(cfg.num_threads or 1, self._cpus)
            n = self.options.pool_size or (self._gpus if self.use_gpu
                                           else max(1, self._cpus // threads))
            opts = ({"num_cpus": 0, "num_gpus": 1} if self.use_gpu else {"num_cpus": threads})
            opts.update(self._actor_options(Predictor))
            self._pool = [ray.remote(Predictor).options(max_restarts=2, **opts).remote(
                threads=threads, device="cuda" if self.use_gpu else None)
                for _ in range(max(1, n))]
        return self._pool

    def release(self) -> None:
        """Kill every actor of this executor (frees their CPUs/GPUs)."""
        import ray

        for a in [*self._singletons.values(), *self._pool]:
            ray.kill(a, no_restart=True)
        self._singletons.clear()
        self._pool.clear()

    def close(self) -> None:
        """Release the actors; shut Ray down if this executor started it."""
        import ray

        if not ray.is_initialized():
            return
        self.release()
        if self._owns_ray:
            ray.shutdown()

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- stages -------------------------------------------------------------------------
    def _use_ray_train(self, name: str) -> bool:
        if name not in TRAINING_STAGES:
            return False
        mode = self.options.train
        return mode == "ray_train" or (mode == "auto" and self.options.train_workers > 1)

    def run_stage(self, name: str, inp: StageInputs, cfg: Config,
                  progress: ProgressFn | None = None) -> StageOutputs:
        """Run one stage; re-run it (after deleting its partial outputs) when an actor
        dies, up to ``max_attempts`` times. ``progress(done, total, value)`` gets training
        steps/epochs (polled from the actor about once a second) and finished shards."""
        from ray.exceptions import (ActorDiedError, ActorUnavailableError, RayActorError,
                                    RayTaskError, WorkerCrashedError)

        lost = (RayActorError, ActorDiedError, ActorUnavailableError, WorkerCrashedError)
        for attempt in range(1, self.options.max_attempts + 1):
            die = attempt == 1 and fault_at("kill_actor", inp.round, name)
            try:
                return self._run_once(name, inp, cfg, die, progress)
            except lost as e:
                logger.warning("round %d stage %s: actor lost on attempt %d/%d (%s); "
                               "discarding its partial outputs and re-running", inp.round,
                               name, attempt, self.options.max_attempts, type(e).__name__)
                self.release()
                remove_tree(inp.out_dir)
                fs.makedirs(inp.out_dir)
            except RayTaskError as e:
                cause = e.cause if getattr(e, "cause", None) is not None else e
                raise stage_error(cause) from cause
        raise StageError(f"round {inp.round} stage {name!r}: its actor died "
                         f"{self.options.max_attempts} times; see the Ray logs "
                         "(/tmp/ray/session_latest/logs) for why")

    def warm_up(self, cfg: Config) -> None:
        """Start every actor now (their processes import torch in the background while
        the first stage runs) instead of at each stage kind's first call. Skipped with
        GPUs, where actors are released after every stage."""
        if self.use_gpu:
            return
        for cls in dict.fromkeys(ACTOR_OF_STAGE.values()):
            if cls is not Predictor:
                self._singleton(cls)
        self._pool_actors(cfg)

    def _run_once(self, name: str, inp: StageInputs, cfg: Config, die: bool,
                  progress: ProgressFn | None) -> StageOutputs:
        if (self.options.warm_up and not self._singletons and not self._pool
                and not self._use_ray_train(name)):
            self.warm_up(cfg)
        try:
            return self._dispatch(name, inp, cfg, die, progress)
        finally:
            if self.use_gpu:  # GPU actors hold whole GPUs: free them for the next stage
                self.release()

    def _dispatch(self, name: str, inp: StageInputs, cfg: Config, die: bool,
                  progress: ProgressFn | None) -> StageOutputs:
        import ray

        if self._use_ray_train(name):
            from pseudocell.actors.train import train_with_ray_train

            self.release()  # free CPUs/GPUs for the trainer's workers (design.md)
            kill_driver_if_asked(inp.round, name)
            return train_with_ray_train(name, inp, cfg, num_workers=self.options.train_workers,
                                        use_gpu=self.use_gpu,
                                        resources_per_worker=self.options.train_resources)
        if name in SHARDED_STAGES:
            return self._run_sharded(name, inp, cfg, die, progress)
        actor = self._singleton(ACTOR_OF_STAGE[name])
        ref = actor.run.remote(name, inp, cfg, die)
        kill_driver_if_asked(inp.round, name)
        if progress is not None and name in TRAINING_STAGES:
            last = None
            while not ray.wait([ref], timeout=1.0)[0]:
                now = ray.get(actor.progress.remote())
                if now is not None and now != last:
                    progress(*now)
                    last = now
        return ray.get(ref)

    def _run_sharded(self, name: str, inp: StageInputs, cfg: Config, die: bool,
                     progress: ProgressFn | None) -> StageOutputs:
        import ray
        from ray.util import ActorPool

        actors = self._pool_actors(cfg)
        items = ray.get(actors[0].plan.remote(name, inp, cfg,
                                              len(actors) * self.options.shards_per_actor))
        pool = ActorPool(actors)
        for k, item in enumerate(items):
            pool.submit(lambda a, it, d=(die and k == 0): a.shard.remote(name, inp, cfg, it, d),
                        item)
        kill_driver_if_asked(inp.round, name)
        results = []
        while pool.has_next():
            results.append(pool.get_next_unordered())
            if progress is not None:
                progress(len(results), len(items), float("nan"))
        logger.debug("%s: %d shards on %d actors", name, len(items), len(actors))
        return ray.get(actors[0].merge.remote(name, inp, cfg, results))
