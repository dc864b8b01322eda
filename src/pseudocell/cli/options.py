"""Option bundles shared by commands (see :func:`pseudocell.cli.app.with_options`) and the
objects they build: the executor and the MLflow tracker of a run."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from pseudocell.errors import InvalidInputError

__all__ = ["ExecutorOptions", "TrackingOptions", "AddressOpt", "TrackingUriOpt",
           "ExperimentOpt"]

AddressOpt = Annotated[str | None, typer.Option(
    help="Ray cluster to attach to with --executor ray: 'auto' (the cluster of this node) "
         "or 'ray://HOST:10001'. Default: start a local Ray.")]
TrackingUriOpt = Annotated[str | None, typer.Option(
    "--tracking-uri", help="MLflow tracking URI, e.g. http://mlflow:5000 (default: the "
                           "run's own sqlite:///RUN/mlflow.db, or what the run used before).")]
ExperimentOpt = Annotated[str | None, typer.Option(
    help="MLflow experiment (default 'pseudocell', or what the run used before).")]


@dataclass(frozen=True)
class ExecutorOptions:
    """Where the stages run: ``--executor local`` (this process) or ``ray``."""

    executor: Annotated[str, typer.Option(
        "--executor", help="local (in this process) or ray (stages as Ray actors).")] = "local"
    address: AddressOpt = None
    pool_size: Annotated[int | None, typer.Option(
        help="Ray: actors of the pool that runs sharded stages such as predict "
             "(default: one per CPU/GPU).")] = None
    train: Annotated[str, typer.Option(
        help="Ray: 'ray_train' (TorchTrainer DDP), 'actor' (one actor) or 'auto' (Ray "
             "Train only with --train-workers > 1).")] = "auto"
    train_workers: Annotated[int, typer.Option(
        help="Ray Train workers (data-parallel replicas).")] = 1
    use_gpu: Annotated[bool | None, typer.Option(
        "--use-gpu/--no-gpu", help="Ray: request GPUs (default: when the cluster has "
                                   "any).")] = None
    warm_up: Annotated[bool, typer.Option(
        "--warm-up/--no-warm-up", help="Ray: start every actor at the first stage.")] = True
    ray_env: Annotated[list[str] | None, typer.Option(
        "--ray-env", help="Ray: forward this environment variable of your shell to every "
                          "actor (repeat for more), e.g. --ray-env AWS_ENDPOINT_URL_S3 for "
                          "a MinIO store the nodes do not know.")] = None

    def build(self):
        """The executor (a context manager); checked before anything is written."""
        from pseudocell.orchestrator.executors import LocalExecutor

        if self.executor == "local":
            for flag, value in (("--address", self.address), ("--ray-env", self.ray_env)):
                if value:
                    raise InvalidInputError(f"{flag} needs --executor ray")
            return contextlib.nullcontext(LocalExecutor())
        if self.executor != "ray":
            raise InvalidInputError(f"--executor {self.executor!r}: use 'local' or 'ray'")
        try:
            from pseudocell.orchestrator.ray_executor import RayExecutor, RayOptions
        except ImportError as e:
            raise InvalidInputError("--executor ray needs Ray: pip install "
                                    f"'pseudocell[ray]' ({e})") from e
        return RayExecutor(RayOptions(address=self.address, pool_size=self.pool_size,
                                      train=self.train, train_workers=self.train_workers,
                                      use_gpu=self.use_gpu, warm_up=self.warm_up,
                                      env_vars=_forwarded_env(self.ray_env)))


def _forwarded_env(names: list[str] | None) -> dict[str, str]:
    """``--ray-env NAME``: the values of these variables in this shell."""
    missing = [n for n in names or [] if n not in os.environ]
    if missing:
        raise InvalidInputError(f"--ray-env {' '.join(missing)}: not set in this shell; "
                                "export it first or drop the option")
    return {n: os.environ[n] for n in names or []}


@dataclass(frozen=True)
class TrackingOptions:
    """Whether and where the run is recorded in MLflow."""

    tracking_uri: TrackingUriOpt = None
    experiment: ExperimentOpt = None
    track: Annotated[bool, typer.Option(
        "--track/--no-track", help="Record the run in MLflow (params, per-round metrics, "
                                   "overlays, model).")] = True

    def build(self, layout) -> Any:
        """The run's :class:`~pseudocell.tracking.Tracker`, or None with ``--no-track``."""
        if not self.track:
            return None
        from pseudocell.tracking import Tracker

        return Tracker(layout, tracking_uri=self.tracking_uri, experiment=self.experiment)
