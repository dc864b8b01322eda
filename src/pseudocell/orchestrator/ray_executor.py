"""Run a mode's stages on a Ray cluster: one actor per actor kind that the stage specs
name, an ``ActorPool`` of that kind for sharded stages, Ray Train for training stages when
asked.

Actors receive store URIs and small metadata and return URIs and metrics; pixels never
travel through Ray. A stage whose actor dies is re-run from its inputs after its folder
(partial outputs) is deleted; the orchestrator's manifests make the driver itself
restartable (``pseudocell resume``).
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pseudocell.actors.stage_actors import actor_class
from pseudocell.config import Config
from pseudocell.errors import InvalidInputError, PseudocellError, StageError, StoreError
from pseudocell.orchestrator.faults import fault_at, kill_driver_if_asked
from pseudocell.runtime import malloc_arena_env
from pseudocell.stages.base import SHARDED, TRAINING, ProgressFn, StageInputs, StageOutputs, StageSpec
from pseudocell.stages.modes import actor_kinds, get_mode
from pseudocell.storage import fs
from pseudocell.storage.manifest import remove_tree

__all__ = ["RayOptions", "RayExecutor", "init_ray", "ray_session", "LOCAL_RAY_INIT",
           "LOCAL_WORKER_NICENESS"]

logger = logging.getLogger(__name__)

#: ``ray.init`` settings of a local cluster (design.md: small nodes, no dashboard).
LOCAL_RAY_INIT = {"include_dashboard": False, "object_store_memory": 256 * 2**20,
                  "log_to_driver": False}

#: Niceness of the workers of a local cluster (Ray's default is 15; set
#: ``RAY_worker_niceness`` to override). Clusters started with ``ray start`` keep theirs.
LOCAL_WORKER_NICENESS = 0

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
        Actors of the pool that runs sharded stages (None: one per free CPU, or one per
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
        Custom Ray resources per actor kind, e.g. ``{"DetectorTrainer": {"gpu_node":
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
        kinds = set(actor_kinds())
        bad = sorted(set(self.actor_resources) - kinds)
        if bad:
            raise InvalidInputError(f"actor_resources: {bad} are not actor kinds; use "
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


def stage_error(cause: BaseException) -> BaseException:
    """The error a stage's exception in an actor becomes: pseudocell's own errors stay as
    they are, store-access errors become a :class:`StoreError` that says how to give the
    actors access, anything else (a bug) is returned unchanged so that the engine logs its
    traceback."""
    if isinstance(cause, PseudocellError):
        return cause
    if type(cause).__name__ in _STORE_ACCESS_ERRORS:
        return StoreError(f"{type(cause).__name__}: {cause}{_STORE_ACCESS_HINT}")
    return cause


def init_ray(address: str | None = None, num_cpus: int | None = None, **kwargs: Any) -> bool:
    """Attach to or start Ray unless already initialised. Returns True when this call
    started (or connected) Ray, i.e. when the caller should shut it down."""
    import ray

    if ray.is_initialized():
        return False
    # for the whole driver: Ray Data checks it at every dataset run (a detached usage
    # actor and a metrics poller otherwise)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None:
        # a local cluster's raylet reads this when it starts: Ray runs its workers at nice
        # 15, so on a machine doing anything else the stage actors (which do all of a run's
        # work) yield to it and a Ray run falls behind a local one of the same stages;
        # and its workers start with the malloc arena limit a CLI process restarts with
        # (a value the caller set is kept: malloc_arena_env leaves those out too)
        env = {k: v for k, v in {"RAY_worker_niceness": str(LOCAL_WORKER_NICENESS),
                                 **malloc_arena_env()}.items() if k not in os.environ}
        with _environment(env):
            ray.init(num_cpus=num_cpus or os.cpu_count(), **{**LOCAL_RAY_INIT, **kwargs})
    else:
        ray.init(address=address, log_to_driver=False, **kwargs)
    logger.info("ray resources: %s", ray.cluster_resources())
    return True


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in ``os.environ`` for a block, where the processes Ray starts inherit
    them; the caller's environment is restored after it."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None,
                **kwargs: Any) -> Iterator[None]:
    """:func:`init_ray` for a block: Ray is shut down at the end only if this call
    started (or connected) it."""
    owns = init_ray(address, num_cpus, **kwargs)
    try:
        yield
    finally:
        if owns:
            import ray

            ray.shutdown()


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
        self._singletons: dict[str, Any] = {}
        self._pool: list[Any] = []
        self._pool_kind: str | None = None

    # -- actors -------------------------------------------------------------------------
    def _threads(self) -> int:
        return max(1, min(os.cpu_count() or 1, self._cpus))

    def _actor_options(self, kind: str) -> dict:
        """Per-actor options: its custom resources and the forwarded environment (per
        actor too, since Ray may have been initialised by someone else)."""
        res = self.options.actor_resources.get(kind)
        opts = {"resources": dict(res)} if res else {}
        if self.options.env_vars:
            opts["runtime_env"] = {"env_vars": dict(self.options.env_vars)}
        return opts

    def _singleton(self, kind: str, gpu: bool) -> Any:
        """The one actor of ``kind``. Coordinating actors reserve no CPU (design.md: they
        must not starve Ray Train's workers); they use the node's cores through torch
        threads."""
        import ray

        if kind not in self._singletons:
            gpu = self.use_gpu and gpu
            # a second concurrent call lets the driver poll progress() during a stage
            opts = {"num_cpus": 0, "num_gpus": 1 if gpu else 0, "max_restarts": 2,
                    "max_concurrency": 2, **self._actor_options(kind)}
            self._singletons[kind] = ray.remote(actor_class(kind)).options(**opts).remote(
                threads=self._threads(), device="cuda" if gpu else None)
        return self._singletons[kind]

    def _pool_actors(self, kind: str, cfg: Config) -> list[Any]:
        """The pool of ``kind`` (sharded stages): one actor per GPU, or one per
        ``num_threads`` CPUs (each reserving the CPUs its torch threads use), unless
        ``pool_size`` says otherwise. One pool at a time: another kind replaces it."""
        import ray

        if self._pool and self._pool_kind != kind:
            for a in self._pool:
                ray.kill(a, no_restart=True)
            self._pool = []
        if not self._pool:
            threads = min(cfg.num_threads or 1, self._cpus)
            n = self.options.pool_size or (self._gpus if self.use_gpu
                                           else max(1, self._cpus // threads))
            opts = ({"num_cpus": 0, "num_gpus": 1} if self.use_gpu else {"num_cpus": threads})
            opts.update(self._actor_options(kind))
            cls = ray.remote(actor_class(kind))
            self._pool = [cls.options(max_restarts=2, **opts).remote(
                threads=threads, device="cuda" if self.use_gpu else None)
                for _ in range(max(1, n))]
            self._pool_kind = kind
        return self._pool

    def release(self) -> None:
        """Kill every actor of this executor (frees their CPUs/GPUs)."""
        import ray

        for a in [*self._singletons.values(), *self._pool]:
            ray.kill(a, no_restart=True)
        self._singletons.clear()
        self._pool = []

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
    def _use_ray_train(self, spec: StageSpec) -> bool:
        if spec.kind != TRAINING:
            return False
        mode = self.options.train
        return mode == "ray_train" or (mode == "auto" and self.options.train_workers > 1)

    def run_stage(self, spec: StageSpec, inp: StageInputs, cfg: Config,
                  progress: ProgressFn | None = None) -> StageOutputs:
        """Run one stage; re-run it (after deleting its partial outputs) when an actor
        dies, up to ``max_attempts`` times. ``progress(done, total, value)`` gets training
        steps/epochs (polled from the actor about once a second) and finished shards."""
        from ray.exceptions import (ActorDiedError, ActorUnavailableError, RayActorError,
                                    RayTaskError, WorkerCrashedError)

        lost = (RayActorError, ActorDiedError, ActorUnavailableError, WorkerCrashedError)
        name = spec.name
        for attempt in range(1, self.options.max_attempts + 1):
            die = attempt == 1 and fault_at("kill_actor", inp.round, name)
            try:
                return self._run_once(spec, inp, cfg, die, progress)
            except lost as e:
                logger.warning("round %d stage %s: actor lost on attempt %d/%d (%s); "
                               "discarding its partial outputs and re-running", inp.round,
                               name, attempt, self.options.max_attempts, type(e).__name__)
                self.release()
                remove_tree(inp.out_dir)
                fs.makedirs(inp.out_dir)
            except RayTaskError as e:
                cause = getattr(e, "cause", None)
                if cause is None:
                    raise
                raise stage_error(cause) from e  # e carries the actor's traceback
        raise StageError(f"round {inp.round} stage {name!r}: its actor died "
                         f"{self.options.max_attempts} times; see the Ray logs "
                         "(/tmp/ray/session_latest/logs) for why")

    def warm_up(self, cfg: Config) -> None:
        """Start every actor of the config's mode now (their processes import torch in
        the background while the first stage runs) instead of at each kind's first call.
        Skipped with GPUs, where actors are released after every stage."""
        if self.use_gpu:
            return
        stages = get_mode(cfg.mode).all_stages
        pools = [s.actor for s in stages if s.kind == SHARDED]
        for s in stages:
            if s.actor not in pools:
                self._singleton(s.actor, s.uses_gpu)
        if pools:
            self._pool_actors(pools[0], cfg)

    def _run_once(self, spec: StageSpec, inp: StageInputs, cfg: Config, die: bool,
                  progress: ProgressFn | None) -> StageOutputs:
        if (self.options.warm_up and not self._singletons and not self._pool
                and not self._use_ray_train(spec)):
            self.warm_up(cfg)
        try:
            return self._dispatch(spec, inp, cfg, die, progress)
        finally:
            if self.use_gpu:  # GPU actors hold whole GPUs: free them for the next stage
                self.release()

    def _dispatch(self, spec: StageSpec, inp: StageInputs, cfg: Config, die: bool,
                  progress: ProgressFn | None) -> StageOutputs:
        import ray

        if self._use_ray_train(spec):
            from pseudocell.actors.train import train_with_ray_train

            self.release()  # free CPUs/GPUs for the trainer's workers (design.md)
            kill_driver_if_asked(inp.round, spec.name)
            return train_with_ray_train(spec, inp, cfg, num_workers=self.options.train_workers,
                                        use_gpu=self.use_gpu,
                                        resources_per_worker=self.options.train_resources)
        if spec.kind == SHARDED:
            return self._run_sharded(spec, inp, cfg, die, progress)
        actor = self._singleton(spec.actor, spec.uses_gpu)
        ref = actor.run.remote(spec, inp, cfg, die)
        kill_driver_if_asked(inp.round, spec.name)
        if progress is not None and spec.kind == TRAINING:
            last = None
            while not ray.wait([ref], timeout=1.0)[0]:
                now = ray.get(actor.progress.remote())
                if now is not None and now != last:
                    progress(*now)
                    last = now
        return ray.get(ref)

    def _run_sharded(self, spec: StageSpec, inp: StageInputs, cfg: Config, die: bool,
                     progress: ProgressFn | None) -> StageOutputs:
        import ray
        from ray.util import ActorPool

        actors = self._pool_actors(spec.actor, cfg)
        items = ray.get(actors[0].plan.remote(spec, inp, cfg,
                                              len(actors) * self.options.shards_per_actor))
        pool = ActorPool(actors)
        for k, item in enumerate(items):
            pool.submit(lambda a, it, d=(die and k == 0): a.shard.remote(spec, inp, cfg, it, d),
                        item)
        kill_driver_if_asked(inp.round, spec.name)
        results = []
        while pool.has_next():
            results.append(pool.get_next_unordered())
            if progress is not None:
                progress(len(results), len(items), float("nan"))
        logger.debug("%s: %d shards on %d actors", spec.name, len(items), len(actors))
        return ray.get(actors[0].merge.remote(spec, inp, cfg, results))
